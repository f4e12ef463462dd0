"""The nightly screening DAG, for real: parsed by Airflow's DagBag and run with ``dag.test()``
against SeaweedFS and PostgreSQL (a migrated SQLite metadata DB, the DAG file in the DAG folder).
"""

from __future__ import annotations

import itertools
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from airflow_env import DAGS, set_connections
from screening_fixtures import (
    STABLE_TABLES,
    counts,
    labels,
    query,
    upload_studies,
)

DAG_ID = "bloodnet_nightly_screening"
NIGHT = datetime(2026, 3, 1, 1, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def dagbag(airflow_home: Path):
    from airflow.dag_processing.dagbag import DagBag

    if str(DAGS) not in sys.path:  # what Airflow's bundle loader does for the DAG folder
        sys.path.append(str(DAGS))
    return DagBag(dag_folder=str(DAGS))


@pytest.fixture
def conns(airflow_home: Path, fresh_db: str, s3_server, s3_bucket: str,
          monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """This test's own database (row counts mean something) and bucket."""
    return set_connections(monkeypatch, db_url=fresh_db, s3_env=s3_server.env(),
                           bucket=s3_bucket)


def _dag(dagbag):
    dag = dagbag.get_dag(DAG_ID)
    assert dag is not None, f"{DAG_ID} not in {dagbag.dag_ids}"
    return dag


def _run(dag, *, logical_date: datetime = NIGHT, **conf):
    """One ``dag.test()`` run; returns the DagRun and the state of every task instance."""
    dr = dag.test(logical_date=logical_date, run_conf={"batch_size": 2, **conf})
    states = {(ti.task_id, ti.map_index): str(ti.state) for ti in dr.get_task_instances()}
    return dr, states


def test_dag_folder_imports_without_errors_or_warnings(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert dagbag.captured_warnings == {}
    assert _dag(dagbag).fileloc == str(DAGS / "nightly_screening.py")


def test_screening_dag_shape(dagbag) -> None:
    dag = _dag(dagbag)
    assert dag.catchup is False
    assert dag.timetable.expression == "0 1 * * *"  # nightly, 01:00 UTC
    assert set(dag.params) >= {"site", "prefix", "date_from", "date_to", "batch_size",
                                "model_path", "rescan"}
    order = ["discover", "validate", "plan", "infer", "finalise", "publish"]
    assert set(dag.task_ids) == set(order)
    for up, down in itertools.pairwise(order):
        assert down in dag.get_task(up).downstream_task_ids
    infer = dag.get_task("infer")
    assert infer.queue == "gpu" and infer.pool == "gpu"
    assert infer.retry_exponential_backoff
    assert type(infer).__name__.endswith("MappedOperator")  # expands over the planned batches
    assert [a.uri for a in dag.get_task("publish").outlets] == ["bloodnet://findings/"]
    for task in dag.tasks:
        assert task.retries >= 2, task.task_id


def test_dag_run_persists_findings_and_a_rerun_leaves_the_same_rows(
    dagbag, conns: dict[str, str], synth_small: Path, tiny_model: Path,
) -> None:
    from bloodnet_ops import PREPROCESSING_VERSION
    from bloodnet_ops.nightly import night_run_id
    from bloodnet_ops.storage import s3_client

    db = conns["db_url"]
    n_objects = upload_studies(synth_small, conns["bucket"], "incoming")
    truth = labels(synth_small)
    dag = _dag(dagbag)

    dr, states = _run(dag, model_path=str(tiny_model))
    assert str(dr.state) == "success", states
    assert set(states.values()) == {"success"}, states
    assert sum(1 for task, _ in states if task == "infer") == 3  # 6 studies in batches of 2

    sql = ("SELECT study_uid, series_uid, site, patient_key, probability, positive, volume_ml,"
           " subtypes, model_version, weights_sha256, preprocessing_version, input_etags,"
           " run_id, seg_key, sr_key, load_seconds, infer_seconds FROM findings"
           " ORDER BY study_uid")
    findings = query(db, sql)
    assert {f.study_uid for f in findings} == set(truth)
    for f in findings:
        assert f.series_uid == truth[f.study_uid]["series_uid"]  # the diagnostic series
        assert f.site == truth[f.study_uid]["site"]
        assert 0.0 <= f.probability <= 1.0 and f.volume_ml >= 0.0
        assert set(f.subtypes) == {"EDH", "SDH", "SAH", "IPH", "IVH"}
        assert len(f.weights_sha256) == 64 and f.model_version
        assert f.preprocessing_version == PREPROCESSING_VERSION
        assert f.input_etags and all(f.input_etags.values())
        assert all(k.startswith(f"{f.site}/") for k in f.input_etags)
        assert f.run_id == night_run_id(NIGHT, dr.run_id) == "night__2026-03-01T01:00:00"
        assert len(f.patient_key) == 32  # a pseudonym, never the raw PatientID
        assert f.sr_key.startswith(conns["output_uri"] + "/")
        assert f.load_seconds > 0 and f.infer_seconds > 0
    listing = s3_client().list_objects_v2(Bucket=conns["bucket"], Prefix="derived/")
    keys = [o["Key"] for o in listing.get("Contents", [])]
    assert sum(k.endswith("/sr.dcm") for k in keys) == len(truth)
    assert dict(query(db, "SELECT status, count(*) FROM objects GROUP BY status")) == {
        "ingested": n_objects}
    (run,) = query(db, "SELECT status, counts, dag_run_id FROM inference_runs")
    assert run.status == "success" and run.counts["n_scored"] == len(truth)
    assert run.dag_run_id == dr.run_id

    # the same night again (another Airflow run, the same logical date): redone, the same rows
    before = counts(db)
    dr2, states2 = _run(dag, model_path=str(tiny_model))
    assert str(dr2.state) == "success", states2
    assert sum(1 for task, _ in states2 if task == "infer") == 3  # really redone
    assert counts(db) == before
    stable = [tuple(f)[:15] for f in findings]  # all but the timings
    assert [tuple(f)[:15] for f in query(db, sql)] == stable

    # the next night finds nothing new: no stored row changes, one more run row
    dr3, states3 = _run(dag, logical_date=datetime(2026, 3, 2, 1, tzinfo=UTC),
                        model_path=str(tiny_model))
    assert str(dr3.state) == "success", states3
    after = counts(db)
    assert {t: after[t] for t in STABLE_TABLES} == {t: before[t] for t in STABLE_TABLES}
    assert after["inference_runs"] == before["inference_runs"] + 1


def test_dag_run_with_a_corrupt_study_quarantines_it_and_scores_the_rest(
    dagbag, conns: dict[str, str], synth_small: Path, tiny_model: Path,
) -> None:
    from bloodnet_ops.nightly import night_run_id
    from bloodnet_ops.storage import s3_client

    db = conns["db_url"]
    upload_studies(synth_small, conns["bucket"], "incoming")
    truth = labels(synth_small)
    victim = min(truth)
    row = truth[victim]
    series = sorted((synth_small / row["site"] / victim / row["series_uid"]).iterdir())
    middle = series[len(series) // 2]
    bad_key = f"{row['site']}/{victim}/{row['series_uid']}/{middle.name}"
    client = s3_client()
    client.put_object(Bucket=conns["bucket"], Key=f"incoming/{bad_key}",
                      Body=middle.read_bytes()[:600])  # truncated inside the header
    client.put_object(Bucket=conns["bucket"], Key="incoming/notes/readme.txt",
                      Body=b"not a DICOM object")

    dr, states = _run(_dag(dagbag), model_path=str(tiny_model))
    assert str(dr.state) == "success", states
    assert set(states.values()) == {"success"}, states

    scored = {r.study_uid for r in query(db, "SELECT study_uid FROM findings")}
    assert scored == set(truth) - {victim}
    quarantined = query(db, "SELECT kind, ref, reason FROM quarantine WHERE run_id = :r",
                        r=night_run_id(NIGHT, dr.run_id))
    refs = {(q.kind, q.ref): q.reason for q in quarantined}
    assert refs[("object", "notes/readme.txt")] == "unreadable"
    assert refs[("object", bad_key)] == "unreadable"
    assert ("study", victim) in refs  # its series now has a gap
    (verdict,) = query(db, "SELECT verdict FROM validation_results WHERE study_uid = :s",
                       s=victim)
    assert verdict.verdict == "reject"


def test_a_batch_that_fails_every_retry_closes_the_run_as_failed(
    dagbag, conns: dict[str, str], synth_small: Path, tmp_path: Path,
) -> None:
    """Every ``infer`` attempt fails (the weights are missing), so ``finalise`` never runs; the
    tasks' failure callback closes the night's ``inference_runs`` row as ``failed`` instead of
    leaving it ``running``."""
    from bloodnet_ops.nightly import night_run_id

    db = conns["db_url"]
    upload_studies(synth_small, conns["bucket"], "incoming")
    dr, states = _run(_dag(dagbag), model_path=str(tmp_path / "missing.pt"), batch_size=16)
    assert str(dr.state) == "failed", states
    assert states[("infer", 0)] == "failed", states
    assert states[("finalise", -1)] == "upstream_failed", states
    (run,) = query(db, "SELECT run_id, status, finished_at, counts FROM inference_runs")
    assert run.run_id == night_run_id(NIGHT, dr.run_id)
    assert run.status == "failed" and run.finished_at is not None
    assert run.counts["error"] == "FileNotFoundError"
    assert run.counts["n_studies"] == len(labels(synth_small)) and run.counts["n_scored"] == 0
