"""Shared pieces of the BloodNet DAGs: the findings Asset and the connections as plain values.

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

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from airflow.sdk import Asset

from bloodnet_ops.storage import S3Config

#: Updated whenever a screening run has persisted findings; the audit and drift DAGs are
#: scheduled on it. Name and URI are a contract: change them only together with those DAGs.
FINDINGS_ASSET = Asset(name="bloodnet_findings", uri="bloodnet://findings")

def retry_delays() -> tuple[timedelta, timedelta]:
    """(first, longest) retry delay of the tasks: ``BLOODNET_RETRY_DELAY_S`` and
    ``BLOODNET_MAX_RETRY_DELAY_S`` (bloodnet_ops.settings)."""
    from bloodnet_ops.settings import current

    s = current()
    return timedelta(seconds=s.retry_delay_s), timedelta(seconds=s.max_retry_delay_s)


S3_CONN_ID = "bloodnet_s3"
DB_CONN_ID = "bloodnet_db"


@dataclass(frozen=True)
class BloodnetConfig:
    """What a task needs from the connections, as plain values."""

    db_url: str  #: SQLAlchemy URL with the psycopg2 driver
    source_uri: str | None  #: the scanned source (``bloodnet_s3`` extra ``source_uri``)
    output_uri: str | None  #: where SEG/SR go (extra ``output_uri``)
    s3: S3Config  #: endpoint and credentials of ``bloodnet_s3``, passed to every S3 call


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


def s3_config_from_connection(conn) -> S3Config:
    """The store's endpoint and credentials from an ``aws`` connection."""
    extra = conn.extra_dejson
    return S3Config(
        endpoint=str(extra["endpoint_url"]) if extra.get("endpoint_url") else None,
        access_key=conn.login or None,
        secret_key=conn.password or None,
        region=str(extra.get("region_name") or "us-east-1"),
    )


@contextmanager
def bloodnet_env(
    s3_conn_id: str = S3_CONN_ID, db_conn_id: str = DB_CONN_ID
) -> Iterator[BloodnetConfig]:
    """Read both connections into plain values (the S3 credentials travel in ``cfg.s3``;
    nothing is put in ``os.environ``, which every thread of the worker shares).

    Call it only inside a task body: reading a connection while parsing would hit the secrets
    backends on every parse.
    """
    from airflow.sdk import Connection

    s3 = Connection.get(s3_conn_id)
    db = Connection.get(db_conn_id)
    extra = s3.extra_dejson
    yield BloodnetConfig(
        db_url=db_url_from_connection(db),
        source_uri=extra.get("source_uri"),
        output_uri=extra.get("output_uri"),
        s3=s3_config_from_connection(s3),
    )
