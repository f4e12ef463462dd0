"""The audit and drift DAGs: parsed by Airflow's DagBag, scheduled on the screening Asset, and run
end to end with ``dag.test()`` against PostgreSQL (reads file on SeaweedFS)."""

from __future__ import annotations

import itertools
import json
import random
import sys
from pathlib import Path

import pytest
from airflow_env import DAGS, set_connections
from analytics_helpers import fresh_database, site_specs, write_studies
from sqlalchemy import text

from bloodnet_ops.db.session import make_engine

AUDIT_ID = "bloodnet_retrospective_audit"
DRIFT_ID = "bloodnet_drift_monitor"


@pytest.fixture(scope="module")
def dagbag(airflow_home: Path):
    from airflow.dag_processing.dagbag import DagBag

    if str(DAGS) not in sys.path:  # what Airflow's bundle loader does for the DAG folder
        sys.path.append(str(DAGS))
    return DagBag(dag_folder=str(DAGS))


@pytest.mark.parametrize("name", ["retrospective_audit.py", "drift_monitor.py"])
def test_dag_files_import_without_errors(dagbag, name: str) -> None:
    path = str(DAGS / name)
    assert path not in dagbag.import_errors, dagbag.import_errors.get(path)
    assert path not in dagbag.captured_warnings


@pytest.mark.parametrize(("dag_id", "tasks"), [
    (AUDIT_ID, ["import_reads", "audit", "report"]),
    (DRIFT_ID, ["drift", "report"]),
])
def test_dags_are_scheduled_on_the_findings_asset(dagbag, dag_id: str, tasks: list[str]) -> None:
    dag = dagbag.get_dag(dag_id)
    assert dag is not None, dagbag.dag_ids
    screening = dagbag.get_dag("bloodnet_nightly_screening")
    produced = {a.uri for a in screening.get_task("publish").outlets}
    assert {a.uri for a in dag.timetable.asset_condition.objects} == produced
    assert set(dag.task_ids) == set(tasks)
    for up, down in itertools.pairwise(tasks):
        assert down in dag.get_task(up).downstream_task_ids
    assert "bloodnet" in dag.tags and dag.catchup is False
    assert all(t.retries >= 2 for t in dag.tasks)


@pytest.fixture
def dag_db(pg_server_url: str):
    rng = random.Random(3)
    specs = site_specs(rng, "site-a") + site_specs(rng, "site-d", kernel_change=True)
    for url in fresh_database(pg_server_url, "bloodnet_dags"):
        write_studies(url, specs)
        yield url, specs


def test_audit_and_drift_dags_run_end_to_end(
    dagbag, dag_db, airflow_home: Path, s3_server, s3_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bloodnet_ops.storage import s3_client

    url, specs = dag_db
    set_connections(monkeypatch, db_url=url, s3_env=s3_server.env(), bucket=s3_bucket)
    monkeypatch.setenv("BLOODNET_ALERT_WEBHOOK", "")
    scored = [s for s in specs if s.probability is not None]
    rows = ["study_uid,accession_number,site,read_date,reader,ich,subtypes,report"]
    rows += [f"{s.uid},,{s.site},2026-02-01,Dr X,{int(s.probability >= 0.6)},," for s in scored]
    rows.append("9.9.9,,site-a,2026-02-01,Dr X,1,SAH,")  # never screened
    s3_client().put_object(Bucket=s3_bucket, Key="reads/reads.csv",
                           Body=("\n".join(rows) + "\n").encode())

    audit = dagbag.get_dag(AUDIT_ID)
    dr = audit.test(run_conf={"reads_uri": f"s3://{s3_bucket}/reads/reads.csv",
                              "reread_rate": 0.1})
    states = {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}
    assert str(dr.state) == "success", states
    engine = make_engine(url)
    with engine.connect() as conn:
        run = conn.execute(text("SELECT id, run_key, counts FROM audit_runs")).one()
        n_reads = conn.execute(text("SELECT count(*) FROM radiology_reads")).scalar_one()
        kinds = dict(conn.execute(text(
            "SELECT kind, count(*) FROM audit_items GROUP BY kind")).all())
    assert run.run_key == dr.run_id  # keyed on the Airflow run: a retry replaces it
    assert n_reads == len(scored) + 1 and run.counts["unmatched_reads"] == 1
    # reads call 0.5-0.6 negative, the model positive: those are the reader-miss candidates
    expected_fp = sum(0.5 <= s.probability < 0.6 for s in scored)
    assert kinds.get("missed_by_reader", 0) == expected_fp > 0
    assert kinds["reread_sample"] >= 2

    drift = dagbag.get_dag(DRIFT_ID)
    dr2 = drift.test(run_conf={"reference_nights": 14, "recent_nights": 7})
    states2 = {ti.task_id: str(ti.state) for ti in dr2.get_task_instances()}
    assert str(dr2.state) == "success", states2
    with engine.connect() as conn:
        alerts = conn.execute(text(
            "SELECT DISTINCT site, feature FROM drift_alerts a JOIN drift_runs r"
            " ON r.id = a.drift_run_id WHERE r.run_key = :k"), {"k": dr2.run_id}).all()
        params = conn.execute(text("SELECT params FROM drift_runs WHERE run_key = :k"),
                              {"k": dr2.run_id}).scalar_one()
    engine.dispose()
    assert ("site-d", "kernel") in alerts and {a.site for a in alerts} == {"site-d"}
    assert json.loads(json.dumps(params))["recent_nights"] == 7
