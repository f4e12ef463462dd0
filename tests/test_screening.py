"""The screening library without Airflow, and ``bloodnet screen`` on a local folder.

Real PostgreSQL (a fresh database per test), real SeaweedFS, real DICOM from the synthetic
generator, and a small untrained checkpoint (rows and provenance matter here, not accuracy).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from screening_fixtures import (
    STABLE_TABLES,
    copy_studies,
    counts,
    labels,
    query,
    upload_studies,
)

from bloodnet_ops import PREPROCESSING_VERSION, nightly


def test_bloodnet_screen_on_a_local_folder(
    tmp_path: Path, fresh_db: str, synth_small: Path, tiny_model: Path,
) -> None:
    from typer.testing import CliRunner

    from bloodnet_ops.cli import app

    folder = copy_studies(synth_small, tmp_path / "night")
    (folder / "stray.bin").write_bytes(b"\x00" * 300)  # every object is accounted for
    truth = labels(synth_small)
    runner = CliRunner()
    res = runner.invoke(app, ["screen", str(folder), "--db", fresh_db, "--model",
                              str(tiny_model), "--batch-size", "4", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["n_scored"] == len(truth)
    assert summary["n_unreadable"] == 1
    assert summary["reasons"] == {"unreadable": 1}
    assert {s: v["scored"] for s, v in summary["per_site"].items()} == {
        site: sum(r["site"] == site for r in truth.values()) for site in
        {r["site"] for r in truth.values()}}

    rows = query(fresh_db, "SELECT study_uid, series_uid, site, model_version, weights_sha256,"
                           " preprocessing_version, input_etags, run_id, sr_key, seg_key"
                           " FROM findings")
    assert {r.study_uid for r in rows} == set(truth)
    (version,) = query(fresh_db, "SELECT model_version, weights_sha256 FROM model_versions")
    for r in rows:
        assert r.series_uid == truth[r.study_uid]["series_uid"]
        assert (r.model_version, r.weights_sha256) == tuple(version)
        assert r.preprocessing_version == PREPROCESSING_VERSION
        assert r.run_id == summary["run_id"]
        n_slices = len(list((folder / r.site / r.study_uid / r.series_uid).iterdir()))
        assert len(r.input_etags) == n_slices  # one ETag per scored slice
        # outputs land in <folder>/bloodnet-derived, and a rescan does not pick them up
        sr = Path(r.sr_key.removeprefix("file://"))
        assert sr.is_file() and sr.is_relative_to(folder / nightly.DERIVED_DIR)
    (stray,) = query(fresh_db, "SELECT kind, reason FROM quarantine WHERE ref = 'stray.bin'")
    assert tuple(stray) == ("object", "unreadable")

    # the demo's report reads the same numbers back from the database
    from bloodnet_ops.db.reports import demo_report
    from bloodnet_ops.demo import format_report

    rep = demo_report(fresh_db)
    assert rep["n_scored"] == len(truth) and rep["rejects"] == {"unreadable": 1}
    assert {s: r["scored"] for s, r in rep["per_site"].items()} == {
        s: v["scored"] for s, v in summary["per_site"].items()}
    assert rep["run_id"] == summary["run_id"] and rep["n_sr"] == len(truth)
    text = format_report(rep, db_url=fresh_db, outputs_uri="file:///x", timings={"total": 1.0})
    assert f"{len(truth):>8}" in text and "unreadable 1" in text

    # a second run finds nothing new and leaves every stored row as it was
    before = counts(fresh_db)
    res = runner.invoke(app, ["screen", str(folder), "--db", fresh_db, "--model",
                              str(tiny_model), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["n_scored"] == 0
    after = counts(fresh_db)
    assert {t: after[t] for t in STABLE_TABLES} == {t: before[t] for t in STABLE_TABLES}


def test_rerunning_a_run_id_redoes_it_with_identical_rows(
    fresh_db: str, s3_bucket: str, synth_small: Path, tiny_model: Path,
) -> None:
    upload_studies(synth_small, s3_bucket, "in")
    source = f"s3://{s3_bucket}/in"
    run_id = "nightly__2026-03-01"

    def night() -> list:
        found = nightly.discover(source, fresh_db, run_id=run_id)
        nightly.validate_and_record(source, fresh_db, run_id)
        batches = nightly.plan_batches(fresh_db, run_id, 4)
        out = [nightly.infer_batch(source, fresh_db, b, run_id, str(tiny_model),
                                     write_dicom=False) for b in batches]
        nightly.summarise_run(fresh_db, run_id, out)
        return [found, batches, out]

    found, batches, out = night()
    assert found.n_new == found.n_listed > 0
    assert [len(b) for b in batches] == [4, 2]
    assert sum(c.n_scored for c in out) == 6
    sql = ("SELECT series_uid, model_version, preprocessing_version, probability, volume_ml,"
           " subtypes, patient_key, input_etags, run_id FROM findings ORDER BY series_uid")
    first, first_counts = query(fresh_db, sql), counts(fresh_db)

    found2, batches2, _ = night()
    assert found2.n_new == found.n_new  # the run's objects are offered again
    assert batches2 == batches
    assert query(fresh_db, sql) == first
    assert counts(fresh_db) == first_counts


def test_a_study_that_breaks_after_validation_is_quarantined_and_the_batch_goes_on(
    fresh_db: str, s3_bucket: str, synth_small: Path, tiny_model: Path,
) -> None:
    from bloodnet_ops.storage import s3_client

    upload_studies(synth_small, s3_bucket, "in")
    source = f"s3://{s3_bucket}/in"
    found = nightly.discover(source, fresh_db)
    summary = nightly.validate_and_record(source, fresh_db, found.run_id)
    assert summary.n_accepted == 6
    (batch,) = nightly.plan_batches(fresh_db, found.run_id, 16)
    victim = batch[2]
    truth = labels(synth_small)[victim]
    # between validation and inference one slice's pixels are overwritten with garbage
    key = next(iter(
        k for (k,) in query(fresh_db, "SELECT key FROM objects WHERE study_uid = :s"
                                      " AND key LIKE :p ORDER BY key",
                            s=victim, p=f"%{truth['series_uid']}%")))
    client = s3_client()
    blob = client.get_object(Bucket=s3_bucket, Key=f"in/{key}")["Body"].read()
    client.put_object(Bucket=s3_bucket, Key=f"in/{key}", Body=blob[: len(blob) // 2])

    out = nightly.infer_batch(source, fresh_db, batch, found.run_id, str(tiny_model),
                                write_dicom=False)
    assert out.n_scored == 5 and out.n_failed == 1
    scored = {r.study_uid for r in query(fresh_db, "SELECT study_uid FROM findings")}
    assert scored == set(batch) - {victim}
    (q,) = query(fresh_db, "SELECT kind, reason FROM quarantine WHERE ref = :s", s=victim)
    assert tuple(q) == ("study", "pixel_decode_failed")
    final = nightly.summarise_run(fresh_db, found.run_id, [out])
    assert final.n_scored == 5 and final.n_rejected == 1 and final.n_failed == 1


def test_backfill_by_prefix_and_site_leaves_the_rest_pending(
    fresh_db: str, s3_bucket: str, synth_small: Path, tiny_model: Path,
) -> None:
    upload_studies(synth_small, s3_bucket, "in")
    source = f"s3://{s3_bucket}/in"
    truth = labels(synth_small)
    sites = sorted({r["site"] for r in truth.values()})
    first, second = sites[0], sites[1]

    # a prefix backfill lists only that prefix
    found = nightly.discover(source, fresh_db, prefix=first, run_id="backfill-1")
    assert found.n_listed == found.n_new
    assert {k for (k,) in query(fresh_db, "SELECT key FROM objects")} == {
        k for (k,) in query(fresh_db, "SELECT key FROM objects WHERE key LIKE :p",
                            p=f"{first}/%")}
    nightly.validate_and_record(source, fresh_db, "backfill-1", prefix=first)
    # the nightly run then sees the other site; a site filter defers the rest
    nightly.discover(source, fresh_db, run_id="night-2")
    summary = nightly.validate_and_record(source, fresh_db, "night-2", site="nowhere")
    assert summary.n_studies == 0
    assert summary.n_deferred == sum(r["site"] == second for r in truth.values())
    pending = query(fresh_db, "SELECT count(*) FROM objects WHERE status = 'pending'")[0][0]
    assert pending > 0
    summary = nightly.validate_and_record(source, fresh_db, "night-2", site=second)
    assert summary.n_deferred == 0
    assert query(fresh_db, "SELECT count(*) FROM objects WHERE status = 'pending'")[0][0] == 0
    # a planned night includes the backlog: accepted studies without any finding yet
    planned = sorted(u for b in nightly.plan_batches(fresh_db, "night-2", 16) for u in b)
    assert planned == sorted(truth)


def test_outputs_inside_the_source_are_never_discovered(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / nightly.DERIVED_DIR / "v1").mkdir(parents=True)
    assert nightly.excluded_prefix(src.as_uri(), None) == f"{nightly.DERIVED_DIR}/"
    assert nightly.excluded_prefix("s3://b", None) == f"{nightly.DERIVED_DIR}/"
    assert nightly.excluded_prefix("s3://b/in", "s3://b/out") is None
    assert nightly.excluded_prefix("s3://b", "s3://b/out/x") == "out/x/"
    shutil.rmtree(src)


def test_load_failures_quarantine_bad_data_but_raise_on_an_outage() -> None:
    from botocore.exceptions import ClientError, EndpointConnectionError

    from bloodnet_ops.hu import PixelDecodeError
    from bloodnet_ops.reasons import Reason

    gone = ClientError({"Error": {"Code": "NoSuchKey", "Message": "gone"}}, "GetObject")
    assert nightly.failure_reason(gone) == Reason.UNREADABLE
    assert nightly.failure_reason(PixelDecodeError("bad")) == Reason.PIXEL_DECODE_FAILED
    assert nightly.failure_reason(ValueError("short")) == Reason.PIXEL_DECODE_FAILED
    slow = ClientError({"Error": {"Code": "SlowDown", "Message": "busy"}}, "GetObject")
    for outage in (EndpointConnectionError(endpoint_url="http://x"), slow,
                   ConnectionResetError()):
        with pytest.raises(type(outage)):
            nightly.failure_reason(outage)


# ---------------------------------------------------------------------------------------------
# large nights: validation in partitions, recorded part by part


def _validation_rows(db_url: str, run_id: str) -> dict[str, list]:
    """Everything validation writes for ``run_id`` (ids and timestamps left out)."""
    return {
        "verdicts": query(db_url, "SELECT study_uid, series_uid, site, verdict, reasons, n_slices"
                                  " FROM validation_results WHERE run_id = :r ORDER BY 1", r=run_id),
        "checks": query(db_url, "SELECT study_uid, ordinal, suite, expectation, column_name,"
                                " success, observed::text, reason FROM expectation_results"
                                " WHERE run_id = :r ORDER BY 1, 2", r=run_id),
        "quarantine": query(db_url, "SELECT kind, ref, reason, reasons, detail FROM quarantine"
                                    " WHERE run_id = :r ORDER BY 1, 2", r=run_id),
        "hu": query(db_url, "SELECT study_uid, series_uid, air_peak, brain_median, p01, p99, mean"
                            " FROM hu_stats WHERE run_id = :r ORDER BY 1", r=run_id),
        "objects": query(db_url, "SELECT key, status, study_uid, reason FROM objects"
                                 " ORDER BY key"),
    }


def _middle_slice(folder: Path, study_uid: str, series_uid: str, site: str) -> Path:
    """The slice in the middle of the stack by position (taking it out leaves a gap)."""
    import pydicom

    files = list((folder / site / study_uid / series_uid).iterdir())
    z = {f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2])
         for f in files}
    return sorted(files, key=z.__getitem__)[len(files) // 2]


def test_validation_in_partitions_records_the_rows_of_one_pass(
    tmp_path: Path, fresh_db: str, synth_small: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A night validated in partitions of ~1 study (headers spilled to disk, each part recorded
    before the next is built) writes the same rows as one in-memory pass; then one new slice of
    a known study brings the study's recorded objects along, and the study is judged whole."""
    from bloodnet_ops import pipeline

    folder = copy_studies(synth_small, tmp_path / "night")
    (folder / "stray.bin").write_bytes(b"\x00" * 300)
    truth = labels(synth_small)
    victim = min(truth)
    row = truth[victim]
    held = _middle_slice(folder, victim, row["series_uid"], row["site"])
    kept_aside = held.read_bytes()
    held.unlink()

    found = nightly.discover(str(folder), fresh_db, run_id="one-pass")
    one = nightly.validate_and_record(found.source_uri, fresh_db, "one-pass")
    rows_one = _validation_rows(fresh_db, "one-pass")
    assert one.n_unreadable == 1 and one.n_studies == len(truth) and one.n_rejected == 1
    assert one.n_objects == found.n_listed

    monkeypatch.setattr(pipeline, "PARTITION_OBJECTS", 60)
    monkeypatch.setattr(pipeline, "READ_CHUNK", 50)
    found = nightly.discover(str(folder), fresh_db, run_id="parts", rescan=True)
    parts = nightly.validate_and_record(found.source_uri, fresh_db, "parts")
    same = ("n_objects", "n_studies", "n_accepted", "n_rejected", "n_unreadable", "reasons")
    assert [getattr(parts, k) for k in same] == [getattr(one, k) for k in same]
    assert _validation_rows(fresh_db, "parts") == rows_one

    # the next night: only the missing slice is new, and its study is validated whole
    held.write_bytes(kept_aside)
    found = nightly.discover(str(folder), fresh_db, run_id="next")
    assert found.n_new == 1
    nxt = nightly.validate_and_record(found.source_uri, fresh_db, "next")
    n_objects = sum(1 for p in (folder / row["site"] / victim).rglob("*") if p.is_file())
    assert (nxt.n_objects, nxt.n_studies, nxt.n_accepted) == (n_objects, 1, 1)
    (v,) = query(fresh_db, "SELECT verdict, n_slices FROM validation_results"
                           " WHERE run_id = 'next'")
    assert v.verdict == "accept"
    assert v.n_slices == len(list((folder / row["site"] / victim / row["series_uid"]).iterdir()))
    statuses = query(fresh_db, "SELECT status, count(*) FROM objects GROUP BY 1 ORDER BY 1")
    assert [tuple(s) for s in statuses] == [("ingested", found.n_listed - 1), ("unreadable", 1)]


def test_a_run_that_fails_is_closed_as_failed_not_left_running(
    tmp_path: Path, fresh_db: str, synth_small: Path,
) -> None:
    """Inference fails for good (here: the weights are missing). ``screen`` re-raises, and the
    run's ``inference_runs`` row is closed as ``failed`` with its finish time, the counts so far
    and the error's class; closing it again, or an unknown run, changes nothing."""
    folder = copy_studies(synth_small, tmp_path / "night")
    with pytest.raises(FileNotFoundError):
        nightly.screen(str(folder), fresh_db, str(tmp_path / "missing.pt"), write_dicom=False)
    (run,) = query(fresh_db, "SELECT run_id, status, finished_at, counts FROM inference_runs")
    assert run.status == "failed" and run.finished_at is not None
    assert run.counts["error"] == "FileNotFoundError"
    assert run.counts["n_studies"] == len(labels(synth_small)) and run.counts["n_scored"] == 0
    assert nightly.fail_run(fresh_db, run.run_id) is False  # already closed
    assert nightly.fail_run(fresh_db, "no-such-run") is False
    (again,) = query(fresh_db, "SELECT status, finished_at FROM inference_runs")
    assert tuple(again) == ("failed", run.finished_at)
