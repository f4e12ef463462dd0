"""Airflow for real in the tests: a temporary ``AIRFLOW_HOME`` with a migrated SQLite metadata DB,
this checkout's ``dags/`` as the DAG folder, and the BloodNet connections as ``AIRFLOW_CONN_*``.

Airflow reads its configuration once, when ``airflow`` is first imported. So this module sets the
variables when it is imported (test collection, before any test imports Airflow) and the
``airflow_home`` fixture checks that the running configuration really is this one.

Use from a test module::

    def test_x(airflow_home, airflow_conns): ...  # conftest.py loads this module as a plugin
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bloodnet_ops.demo import airflow_binary, airflow_environment

REPO = Path(__file__).resolve().parents[1]
DAGS = REPO / "dags"
#: Retry delays of the DAG's tasks in tests (seconds); production uses minutes.
RETRY_DELAY_S = 0.5

_HOME = Path(os.environ.get("BLOODNET_TEST_AIRFLOW_HOME") or
             tempfile.mkdtemp(prefix="bloodnet-airflow-"))

BASE_ENV = {
    "AIRFLOW_HOME": str(_HOME),
    "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_HOME / 'airflow.db'}",
    "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    "BLOODNET_RETRY_DELAY_S": str(RETRY_DELAY_S),
    "BLOODNET_MAX_RETRY_DELAY_S": "2",
}

if "airflow" not in sys.modules:
    os.environ.update(BASE_ENV)


def connection_env(*, db_url: str, s3_env: dict[str, str], source_uri: str,
                   output_uri: str | None = None) -> dict[str, str]:
    """The ``AIRFLOW_CONN_*`` pair for a results DB and an S3 source (plus boto3's variables)."""
    env = airflow_environment(_HOME, db_url=db_url, s3_env=s3_env, source_uri=source_uri,
                              output_uri=output_uri, dags_folder=DAGS)
    return {k: v for k, v in env.items() if k.startswith("AIRFLOW_CONN_")}


@pytest.fixture(scope="session")
def airflow_home() -> Path:
    """A migrated Airflow metadata DB for the session (``airflow db migrate`` runs once)."""
    for key, value in BASE_ENV.items():
        if os.environ.get(key) != value:
            raise RuntimeError(
                f"{key} is {os.environ.get(key)!r}, expected {value!r}: Airflow was configured "
                "before tests/airflow_env.py was imported; import it before anything imports "
                "airflow"
            )
    if "airflow" in sys.modules:
        from airflow.configuration import conf

        folder = conf.get("core", "dags_folder")
        if Path(folder).resolve() != DAGS:
            raise RuntimeError(f"Airflow's dags_folder is {folder}, expected {DAGS}")
    res = subprocess.run([airflow_binary(), "db", "migrate"], env=os.environ.copy(), check=False,
                         capture_output=True, text=True, timeout=300)
    if res.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}")
    return _HOME


def set_connections(monkeypatch: pytest.MonkeyPatch, *, db_url: str, s3_env: dict[str, str],
                    bucket: str) -> dict[str, str]:
    """Point ``bloodnet_s3`` at ``s3://<bucket>/incoming`` (outputs under ``derived``) and
    ``bloodnet_db`` at ``db_url`` for one test; returns the locations."""
    source = f"s3://{bucket}/incoming"
    output = f"s3://{bucket}/derived"
    for key, value in connection_env(db_url=db_url, s3_env=s3_env, source_uri=source,
                                     output_uri=output).items():
        monkeypatch.setenv(key, value)
    return {"source_uri": source, "output_uri": output, "bucket": bucket, "db_url": db_url}


@pytest.fixture
def airflow_conns(
    airflow_home: Path, database_url: str, s3_server, s3_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[dict[str, str]]:
    """The connections for one test: the session's database and a fresh bucket."""
    yield set_connections(monkeypatch, db_url=database_url, s3_env=s3_server.env(),
                          bucket=s3_bucket)
