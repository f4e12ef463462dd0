"""No PHI leaves the object store: one real night, then a search for the patients' identities.

The nightly DAG runs once (``airflow dags test`` in its own process, SeaweedFS, PostgreSQL) on two
synthetic studies, and ``bloodnet validate --json`` runs once. The identifiers are read back from the
source DICOM files themselves (PatientName and its components, PatientID, AccessionNumber,
PatientBirthDate) and searched, case-insensitively, in:

- every log line: the run's stdout and stderr (``dags test`` logs every task there through
  structlog), task log files under ``AIRFLOW_HOME/logs`` if any, Python log records of the test
  process, and the CLI's stdout and stderr;
- the Airflow metadata of the run: XCom values, task ids and map indexes, rendered template
  fields, the run's conf, and the audit log;
- every row of every table of the results database (as JSON text);
- the dashboard pages rendered from that database.

The results database must hold the patient and accession only as keyed pseudonyms.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from airflow_env import DAGS, set_connections
from screening_fixtures import (
    query,
    upload_studies,
)

NIGHT = datetime(2026, 5, 1, 1, 0, tzinfo=UTC)
DASH_TOKEN = "phi-test-dashboard-token-0123456789"


@pytest.fixture(scope="module")
def phi_night(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bloodnet_ops.synth import generate_dataset

    out = tmp_path_factory.mktemp("phi_night")
    generate_dataset(out, studies=2, sites=2, seed=29, matrix=128)
    return out


def identities(folder: Path) -> set[str]:
    """The patient identities written into the DICOM files under ``folder`` (every file is read:
    a leak of any one of them counts)."""
    import pydicom

    found: set[str] = set()
    for path in folder.rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True,
                             specific_tags=["PatientName", "PatientID", "AccessionNumber",
                                            "PatientBirthDate"])
        name = str(ds.get("PatientName", "") or "")
        found.update({name, *name.split("^")})
        found.update(str(ds.get(k, "") or "") for k in ("PatientID", "AccessionNumber",
                                                        "PatientBirthDate"))
    # components too short to be identifying (e.g. a one-letter initial) would only add noise
    return {v.strip() for v in found if len(v.strip()) >= 6}


def leaks(text: str, secrets: set[str]) -> list[str]:
    low = text.lower()
    return sorted(s for s in secrets if s.lower() in low)


def _airflow_rows(db: Path, run_id: str) -> dict[str, list[str]]:
    """Text of the metadata rows that belong to one DAG run (parameterised queries)."""
    con = sqlite3.connect(db)
    con.text_factory = lambda b: b.decode("utf-8", "replace")
    try:
        def rows(sql: str, *args: object) -> list[str]:
            return [repr(tuple(r)) for r in con.execute(sql, args).fetchall()]

        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        out = {
            "xcom": rows("SELECT task_id, map_index, key, value FROM xcom WHERE run_id = ?",
                         run_id),
            "task_instance": rows("SELECT task_id, map_index, state, try_number, hostname"
                                  " FROM task_instance WHERE run_id = ?", run_id),
            "dag_run": rows("SELECT run_id, conf FROM dag_run WHERE run_id = ?", run_id),
        }
        if "rendered_task_instance_fields" in tables:
            out["rendered"] = rows("SELECT task_id, map_index, rendered_fields FROM"
                                   " rendered_task_instance_fields WHERE run_id = ?", run_id)
        if "log" in tables:
            out["log"] = rows("SELECT * FROM log WHERE run_id = ?", run_id)
        return out
    finally:
        con.close()


def _run_id(db: Path, logical: datetime) -> str:
    """The run id of the screening DAG's run at ``logical`` (the newest, if run again)."""
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT run_id, logical_date FROM dag_run WHERE dag_id = ?"
                           " ORDER BY id DESC", ("bloodnet_nightly_screening",)).fetchall()
    finally:
        con.close()
    day = logical.strftime("%Y-%m-%d")
    matching = [r for r, when in rows if when and str(when).startswith(day)]
    assert matching, rows[:5]
    return matching[0]


def _results_db_text(db_url: str) -> dict[str, str]:
    """Every table of the results database as JSON text, one string per table."""
    from sqlalchemy import text

    from bloodnet_ops.db.session import make_engine

    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            names = conn.execute(text(
                "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name)"
                " FROM information_schema.tables WHERE table_type = 'BASE TABLE'"
                " AND table_schema NOT IN ('pg_catalog', 'information_schema')")).scalars().all()
            # names come from the catalogue, already quoted by PostgreSQL
            return {n: "\n".join(conn.execute(text(f"SELECT row_to_json(t)::text FROM {n} t"))
                                 .scalars().all()) for n in names}
    finally:
        engine.dispose()


def test_a_night_leaves_no_phi_in_logs_xcom_task_names_tables_or_pages(
    phi_night: Path, fresh_db: str, tiny_model: Path, airflow_home: Path,
    s3_server, s3_bucket: str, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    from bloodnet_ops.demo import airflow_binary
    from bloodnet_ops.pseudonym import pseudonymise

    secrets = identities(phi_night)
    assert any(re.fullmatch(r"[A-Z]+\d+", s) for s in secrets)  # IDs and accessions were read
    assert len(secrets) >= 6

    upload_studies(phi_night, s3_bucket, "incoming")
    conns = set_connections(monkeypatch, db_url=fresh_db, s3_env=s3_server.env(),
                            bucket=s3_bucket)
    if str(DAGS) not in sys.path:
        sys.path.append(str(DAGS))
    dag = DagBag(dag_folder=str(DAGS / "nightly_screening.py")).get_dag(
        "bloodnet_nightly_screening")
    caplog.set_level(logging.DEBUG)  # anything this process logs, at every level
    # the whole night in its own process, as an operator would run it: every log line it
    # writes is captured here, whatever Airflow's logging configuration does with handlers
    conf = {"batch_size": 1, "model_path": str(tiny_model)}
    run = subprocess.run(
        [airflow_binary(), "dags", "test", "bloodnet_nightly_screening", NIGHT.isoformat(),
         "-c", json.dumps(conf)],
        capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "TQDM_DISABLE": "1"})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    run_id = _run_id(airflow_home / "airflow.db", NIGHT)
    found: dict[str, list[str]] = {}

    # logs
    found["python logging"] = leaks("\n".join(r.getMessage() for r in caplog.records), secrets)
    found["stdout/stderr"] = leaks(run.stdout + run.stderr, secrets)
    log_files = [p for p in (airflow_home / "logs").rglob("*") if p.is_file()
                 and run_id in str(p)] if (airflow_home / "logs").is_dir() else []
    for path in log_files:
        found[f"log file {path.name}"] = leaks(path.read_text(errors="replace"), secrets)
    # the run logged every task (through structlog, to stdout): the scan is not vacuous
    out = run.stdout + run.stderr
    assert "bloodnet_ops.nightly" in out and out.count("\n") > 50

    # Airflow metadata of this run, and the task ids
    meta = _airflow_rows(airflow_home / "airflow.db", run_id)
    assert meta["xcom"] and len(meta["task_instance"]) >= 6
    for name, rows in meta.items():
        found[f"airflow {name}"] = leaks("\n".join(rows), secrets)
    found["task ids"] = leaks(" ".join(dag.task_ids), secrets)

    # results database: every row of every table; pseudonyms instead of identifiers
    tables = _results_db_text(fresh_db)
    assert sum(bool(t) for t in tables.values()) >= 8
    for name, body in tables.items():
        found[f"table {name}"] = leaks(body, secrets)
    keys = {r.patient_key for r in query(fresh_db, "SELECT patient_key FROM studies")}
    ids = {s for s in secrets if s.startswith("SYN")}
    assert keys and keys <= {pseudonymise(i) for i in ids}  # keyed, and of these patients

    # dashboard pages over the same database
    found.update(_dashboard_leaks(fresh_db, secrets))

    # the CLI: JSON on stdout, logs on stderr
    cli = subprocess.run(
        [str(Path(sys.executable).with_name("bloodnet")), "validate", conns["source_uri"],
         "--json"], capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, **s3_server.env(), "TQDM_DISABLE": "1"})
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert len(json.loads(cli.stdout)) >= 2
    found["cli stdout/stderr"] = leaks(cli.stdout + cli.stderr, secrets)

    assert {k: v for k, v in found.items() if v} == {}

    # control: the scan does find identities where they belong. The derived DICOM SR carries the
    # patient module (it must, to file with the study) and stays in the object store.
    from bloodnet_ops.storage import s3_client

    client = s3_client()
    listing = client.list_objects_v2(Bucket=s3_bucket, Prefix="derived/")
    sr_key = next(o["Key"] for o in listing["Contents"] if o["Key"].endswith("/sr.dcm"))
    sr = client.get_object(Bucket=s3_bucket, Key=sr_key)["Body"].read()
    assert leaks(sr.decode("latin-1"), secrets)


def _dashboard_leaks(db_url: str, secrets: set[str]) -> dict[str, list[str]]:
    from fastapi.testclient import TestClient

    from bloodnet_ops.dashboard.app import create_app
    from bloodnet_ops.db.views import apply_views

    apply_views(db_url)
    ((night,),) = query(db_url, "SELECT min(started_at)::date FROM inference_runs")
    out: dict[str, list[str]] = {}
    headers = {"Authorization": f"Bearer {DASH_TOKEN}"}
    with TestClient(create_app(db_url, token=DASH_TOKEN)) as client:
        for path in ("/overview", "/quality", f"/rejects?night={night}", "/audit", "/drift",
                     "/models"):
            page = client.get(path, headers=headers)
            assert page.status_code == 200, (path, page.text[:300])
            out[f"page {path}"] = leaks(page.text, secrets)
    return out
