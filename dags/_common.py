"""Shared pieces of the BloodNet DAGs: the findings Asset and connection → environment mapping.

This module defines no DAG; the DAG files import it because Airflow puts the DAG bundle's folder
on ``sys.path``. (No ``.airflowignore``: Airflow 3.3's ignore-file parser emits a deprecation
warning, and parsing this module is cheap.)

Connections (set as ``AIRFLOW_CONN_*`` variables in tests and the demo):

- ``bloodnet_s3`` (type ``aws``): login/password are the access key and secret; extras
  ``endpoint_url`` (S3-compatible store), ``region_name``, ``source_uri`` (what the nightly job
  scans, e.g. ``s3://incoming/ct``) and ``output_uri`` (where DICOM SEG/SR go).
- ``bloodnet_db`` (type ``postgres``): the results database.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from airflow.sdk import Asset

#: Updated whenever a screening run has persisted findings; the audit and drift DAGs are
#: scheduled on it. Name and URI are a contract: change them only together with those DAGs.
FINDINGS_ASSET = Asset(name="bloodnet_findings", uri="bloodnet://findings")

S3_CONN_ID = "bloodnet_s3"
DB_CONN_ID = "bloodnet_db"


@dataclass(frozen=True)
class BloodnetConfig:
    """What a task needs from the connections, as plain values."""

    db_url: str  #: SQLAlchemy URL with the psycopg2 driver
    source_uri: str | None  #: the scanned source (``bloodnet_s3`` extra ``source_uri``)
    output_uri: str | None  #: where SEG/SR go (extra ``output_uri``)


def db_url_from_connection(conn) -> str:
    """A SQLAlchemy URL (``postgresql+psycopg2://``) from a ``postgres`` connection."""
    from sqlalchemy import URL

    extra = conn.extra_dejson
    url = URL.create(
        "postgresql+psycopg2",
        username=conn.login or None,
        password=conn.password or None,
        host=conn.host or None,
        port=int(conn.port) if conn.port else None,
        database=conn.schema or None,
        query={k: str(v) for k, v in extra.items() if k in ("sslmode", "options")},
    )
    return url.render_as_string(hide_password=False)


def s3_env_from_connection(conn) -> dict[str, str]:
    """boto3's standard variables plus ``BLOODNET_S3_ENDPOINT`` from an ``aws`` connection."""
    extra = conn.extra_dejson
    env = {"AWS_DEFAULT_REGION": str(extra.get("region_name") or "us-east-1")}
    if conn.login:
        env["AWS_ACCESS_KEY_ID"] = conn.login
    if conn.password:
        env["AWS_SECRET_ACCESS_KEY"] = conn.password
    if extra.get("endpoint_url"):
        env["BLOODNET_S3_ENDPOINT"] = str(extra["endpoint_url"])
    return env


@contextmanager
def bloodnet_env(
    s3_conn_id: str = S3_CONN_ID, db_conn_id: str = DB_CONN_ID
) -> Iterator[BloodnetConfig]:
    """Read both connections, export the S3 settings for boto3 while the block runs.

    Call it only inside a task body: reading a connection while parsing would hit the secrets
    backends on every parse.
    """
    from airflow.sdk import Connection

    s3 = Connection.get(s3_conn_id)
    db = Connection.get(db_conn_id)
    env = s3_env_from_connection(s3)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        extra = s3.extra_dejson
        yield BloodnetConfig(
            db_url=db_url_from_connection(db),
            source_uri=extra.get("source_uri"),
            output_uri=extra.get("output_uri"),
        )
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
