"""Fault injection against the real services, all on loopback and bounded in time.

Every faulted night is compared with one clean run of the same studies (``reference``): the same
verdicts, the same findings and the same row counts per table, so no study is lost or counted
twice. The faults are real wherever they can be made real here:

- SeaweedFS is SIGKILLed in the middle of the nightly DAG's validation and started again; the
  DAG's task retries carry the night through (botocore's own retries give up after a few
  seconds of connection errors, see the test's docstring);
- PostgreSQL terminates the pipeline's backend while it is writing (``pg_terminate_backend`` on
  a writer caught waiting on a table lock), for the manifest, the verdicts and the findings;
- an inference worker process is SIGKILLed mid-batch and the task is run again;
- a proxy in front of SeaweedFS answers ``503 SlowDown`` and ``500 InternalError``;
- out-of-memory can only be simulated on a CPU-only machine: a wrapper raises
  ``torch.OutOfMemoryError`` (or ``MemoryError``) where a real device would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

import pytest
from airflow_env import DAGS, set_connections
from faultproxy import FaultPlan, FaultProxy, reads_only
from screening_fixtures import (
    STABLE_TABLES,
    copy_studies,
    counts,
    labels,
    query,
    upload_studies,
)

from bloodnet_ops import nightly

NIGHT = datetime(2026, 4, 1, 1, 0, tzinfo=UTC)
#: What a faulted night must reproduce exactly (probabilities to 1e-5: a retried batch may be cut
#: differently, which changes float summation order, not the result).
FINDING_SQL = (
    "SELECT study_uid, series_uid, site, patient_key, positive, round(probability::numeric, 5),"
    " round(volume_ml::numeric, 2), model_version, preprocessing_version FROM findings"
    " ORDER BY study_uid"
)
VERDICT_SQL = (
    "SELECT study_uid, series_uid, verdict, reasons FROM validation_results ORDER BY study_uid"
)
OBJECT_SQL = "SELECT key, status, study_uid, reason FROM objects ORDER BY key"


# ---------------------------------------------------------------------------------------------
# the night and its clean run


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three studies at 128², two sites: 48- and 29-slice diagnostic series."""
    from bloodnet_ops.synth import generate_dataset

    out = tmp_path_factory.mktemp("fault_night")
    generate_dataset(out, studies=3, sites=2, seed=3, matrix=128)
    return out


@dataclass
class Snapshot:
    counts: dict[str, int]
    findings: list[tuple]
    verdicts: list[tuple]
    objects: list[tuple]


def snapshot(db_url: str) -> Snapshot:
    table_counts = counts(db_url)
    return Snapshot(
        counts={t: table_counts[t] for t in (*STABLE_TABLES, "inference_runs")},
        findings=[tuple(r) for r in query(db_url, FINDING_SQL)],
        verdicts=[tuple(r) for r in query(db_url, VERDICT_SQL)],
        objects=[tuple(r) for r in query(db_url, OBJECT_SQL)],
    )


@pytest.fixture(scope="module")
def reference(night: Path, tiny_model: Path, pg_server_url: str,
              tmp_path_factory: pytest.TempPathFactory) -> Snapshot:
    """One clean ``screen`` of the night (a local copy, no faults) in its own database."""
    from bloodnet_ops.db.session import migrate
    from bloodnet_ops.services import create_database, drop_database

    name = f"bloodnet_fault_ref_{uuid.uuid4().hex[:10]}"
    url = create_database(pg_server_url, name)
    try:
        migrate(url)
        folder = copy_studies(night, tmp_path_factory.mktemp("ref") / "night")
        summary = nightly.screen(str(folder), url, str(tiny_model), batch_size=2,
                                   write_dicom=False)
        assert summary.n_scored == 3 and summary.n_rejected == 0
        return snapshot(url)
    finally:
        nightly.dispose_engines()
        drop_database(pg_server_url, name)


def _same_night(got: Snapshot, want: Snapshot) -> None:
    assert got.counts == want.counts
    assert got.verdicts == want.verdicts
    assert got.objects == want.objects
    assert got.findings == want.findings


# ---------------------------------------------------------------------------------------------
# 1. the object store is killed mid-run and restarted


@pytest.fixture(scope="module")
def own_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A SeaweedFS of this module's own: the tests kill it, and the session's must live on."""
    from bloodnet_ops.services import start_seaweedfs

    server = start_seaweedfs(tmp_path_factory.mktemp("own_s3"))
    try:
        yield server
    finally:
        server.stop()


class Outage:
    """Kill ``server`` (SIGKILL) when the process's ``after_gets``-th S3 GetObject is about to be
    sent, keep it down ``down_s`` seconds, then start it again on the same ports and data.

    The trigger is a botocore event handler on the default boto3 session, so it sees every S3
    client the pipeline creates in this process; it only counts, the kill runs in its own thread.
    """

    def __init__(self, server, *, after_gets: int, down_s: float) -> None:
        self.server, self.after_gets, self.down_s = server, after_gets, down_s
        self.gets = 0
        self.killed_at: float | None = None
        self.back_at: float | None = None
        self._go = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="outage")
        self._lock = threading.Lock()
        self._cancelled = False

    def _count(self, **_kwargs: object) -> None:
        with self._lock:
            self.gets += 1
            if self.gets == self.after_gets:
                self._go.set()

    def _run(self) -> None:
        if not self._go.wait(timeout=600) or self._cancelled:
            return
        self.server.kill()
        self.killed_at = time.monotonic()
        time.sleep(self.down_s)
        self.server.start(timeout=120)
        self.back_at = time.monotonic()

    def __enter__(self) -> Self:
        import boto3

        if boto3.DEFAULT_SESSION is None:
            boto3.setup_default_session()
        boto3.DEFAULT_SESSION.events.register(
            "before-send.s3.GetObject", self._count, unique_id="bloodnet-outage")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        import boto3

        boto3.DEFAULT_SESSION.events.unregister("before-send.s3.GetObject",
                                                unique_id="bloodnet-outage")
        with self._lock:
            if not self._go.is_set():  # never triggered: let the thread end, killing nothing
                self._cancelled = True
                self._go.set()
        self._thread.join(timeout=150)


@pytest.fixture
def own_boto3_session() -> Iterator[None]:
    """A default boto3 session for this test alone: a session caches the credentials it first
    resolves, and this test's store has other keys than the session-wide one."""
    import boto3

    saved, boto3.DEFAULT_SESSION = boto3.DEFAULT_SESSION, None
    try:
        yield
    finally:
        boto3.DEFAULT_SESSION = saved


def _fresh_dag():
    """The screening DAG parsed now, so it picks up this test's retry delays."""
    from airflow.dag_processing.dagbag import DagBag

    if str(DAGS) not in sys.path:
        sys.path.append(str(DAGS))
    bag = DagBag(dag_folder=str(DAGS / "nightly_screening.py"))
    assert bag.import_errors == {}
    return bag.get_dag("bloodnet_nightly_screening")


def test_s3_killed_mid_validation_and_restarted_the_night_completes_unchanged(
    own_s3, night: Path, fresh_db: str, tiny_model: Path, reference: Snapshot,
    airflow_home: Path, monkeypatch: pytest.MonkeyPatch, own_boto3_session: None,
) -> None:
    """The nightly DAG against a SeaweedFS that dies during header validation.

    botocore 1.44's standard retry mode backs off 50 ms x 2^i for connection errors (8 attempts,
    at most ~6 s in all) and spends 14 of its 500 quota tokens per such retry, while a SeaweedFS
    restart takes 5-10 s here. ``S3Source``'s own retries would ride that out (see the next
    test); they are turned off here (``BLOODNET_S3_RETRY_SECONDS=0``) to prove the last line of
    defence: the ``validate`` task fails, and Airflow's task retry (``retries=2``, exponential
    delay; 8 s here, 1 min in production) redoes it once the store is back. The task is
    idempotent, so the night ends with the rows of a clean run.
    """
    from bloodnet_ops.storage import s3_client

    for key, value in own_s3.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("BLOODNET_S3_RETRY_SECONDS", "0")
    bucket = f"kill-{uuid.uuid4().hex[:12]}"
    s3_client().create_bucket(Bucket=bucket)
    n_objects = upload_studies(night, bucket, "incoming")
    conns = set_connections(monkeypatch, db_url=fresh_db, s3_env=own_s3.env(), bucket=bucket)
    monkeypatch.setenv("BLOODNET_RETRY_DELAY_S", "8")
    monkeypatch.setenv("BLOODNET_MAX_RETRY_DELAY_S", "30")
    dag = _fresh_dag()

    # the 40th GET is one of the ~215 header reads of the validate task
    with Outage(own_s3, after_gets=40, down_s=3.0) as outage:
        dr = dag.test(logical_date=NIGHT, run_conf={"batch_size": 2,
                                                    "model_path": str(tiny_model)})
    tis = dr.get_task_instances()
    states = {(ti.task_id, ti.map_index): (str(ti.state), ti.try_number) for ti in tis}
    assert outage.killed_at is not None and outage.back_at is not None, outage.gets
    assert str(dr.state) == "success", states
    assert {s for s, _ in states.values()} == {"success"}, states
    assert states[("validate", -1)][1] >= 2, states  # the outage failed an attempt: retried
    assert outage.gets > n_objects  # the whole night's GETs ran, most after the restart

    _same_night(snapshot(fresh_db), reference)
    listing = s3_client().list_objects_v2(Bucket=bucket, Prefix="derived/")
    srs = [o["Key"] for o in listing.get("Contents", []) if o["Key"].endswith("/sr.dcm")]
    assert len(srs) == len(set(srs)) == 3
    assert conns["output_uri"].endswith("/derived")


def test_s3_down_longer_than_botocores_retries_validation_rides_it_out(
    own_s3, night: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    own_boto3_session: None, caplog: pytest.LogCaptureFixture,
) -> None:
    """``bloodnet screen`` has no task retry to fall back on. SeaweedFS is SIGKILLed during the
    header reads of ``validate_source`` over S3 and kept down 12 s (then restarted: ~15-20 s
    without a store, three times what botocore's own retries cover). ``S3Source`` keeps
    retrying each read with backoff and jitter within ``BLOODNET_S3_RETRY_SECONDS`` (default
    60 s): the run completes with the verdicts of a clean run, and the retries are logged
    without keys or UIDs."""
    import logging

    from bloodnet_ops.pipeline import validate_source
    from bloodnet_ops.storage import LocalSource, S3Source, s3_client

    for key, value in own_s3.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("BLOODNET_S3_RETRY_SECONDS", raising=False)  # the default budget
    bucket = f"down-{uuid.uuid4().hex[:12]}"
    s3_client().create_bucket(Bucket=bucket)
    upload_studies(night, bucket, "in")
    clean = validate_source(LocalSource(copy_studies(night, tmp_path / "night")), workers=4)

    caplog.set_level(logging.WARNING, logger="bloodnet_ops.storage")
    t0 = time.monotonic()
    with Outage(own_s3, after_gets=40, down_s=12.0) as outage:
        report = validate_source(S3Source(bucket, "in"), workers=8)
    seconds = time.monotonic() - t0
    assert outage.killed_at is not None and outage.back_at is not None, outage.gets
    assert outage.back_at - outage.killed_at >= 12.0
    assert seconds < 60

    def verdicts(rep) -> list[tuple]:
        return [(s.study_uid, s.series_uid, s.verdict, s.reasons, s.series_keys, s.n_slices)
                for s in rep.studies]

    assert verdicts(report) == verdicts(clean)
    assert report.unreadable == [] and len(report.objects) == len(clean.objects)
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert retries, "the outage outlived botocore's retries: S3Source must have retried"
    uids = {s.study_uid for s in clean.studies} | {s.series_uid for s in clean.studies}
    assert not any(".dcm" in m or any(u in m for u in uids) for m in retries)


# ---------------------------------------------------------------------------------------------
# 2. PostgreSQL drops the writer's connection mid-write


class WriterTerminator:
    """Hold ``LOCK TABLE t IN EXCLUSIVE MODE`` on each table (reads pass, writes wait); a thread
    polls ``pg_stat_activity``/``pg_locks`` for a backend of the app (``application_name`` =
    ``bloodnet``) waiting on one of them, terminates it with ``pg_terminate_backend`` and then
    releases that table. Each table's first writer thus loses its connection mid-statement,
    inside its transaction; every later write goes through."""

    def __init__(self, server_url: str, database: str, tables: tuple[str, ...], *,
                 timeout: float = 240.0) -> None:
        import psycopg2
        from sqlalchemy import make_url

        u = make_url(server_url)
        self._connect = lambda db: psycopg2.connect(
            host=u.host, port=u.port, user=u.username, password=u.password, dbname=db,
            application_name="bloodnet-fault-injector")
        self.database, self.tables, self.timeout = database, tables, timeout
        self.terminated: dict[str, int] = {t: 0 for t in tables}
        self.errors: list[str] = []
        self._holders: dict[str, object] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True, name="pg-terminator")

    def __enter__(self) -> Self:
        from psycopg2 import sql

        for table in self.tables:
            conn = self._connect(self.database)
            with conn.cursor() as cur:  # psycopg2 opens a transaction: the lock is held
                cur.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(
                    sql.Identifier(table)))
            self._holders[table] = conn
        self._thread.start()
        return self

    def _release(self, table: str) -> None:
        conn = self._holders.pop(table, None)
        if conn is not None:
            conn.rollback()
            conn.close()

    def _poll(self) -> None:
        admin = self._connect(self.database)
        admin.autocommit = True
        deadline = time.monotonic() + self.timeout
        try:
            with admin.cursor() as cur:
                while self._holders and not self._stop.is_set() and time.monotonic() < deadline:
                    cur.execute(
                        "SELECT a.pid, c.relname FROM pg_stat_activity a"
                        " JOIN pg_locks l ON l.pid = a.pid AND NOT l.granted"
                        " JOIN pg_class c ON c.oid = l.relation"
                        " WHERE a.datname = %s AND a.application_name = 'bloodnet'",
                        (self.database,))
                    for pid, table in cur.fetchall():
                        if table not in self._holders:
                            continue
                        cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
                        for _ in range(200):  # until the backend is really gone
                            cur.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,))
                            if cur.fetchone() is None:
                                break
                            time.sleep(0.01)
                        self.terminated[table] += 1
                        self._release(table)
                    time.sleep(0.02)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(repr(exc))
        finally:
            admin.close()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for table in list(self._holders):
            self._release(table)


def test_postgres_terminates_the_writers_mid_write_and_the_retries_give_a_clean_nights_rows(
    night: Path, fresh_db: str, pg_server_url: str, tiny_model: Path,
    reference: Snapshot, tmp_path: Path,
) -> None:
    from sqlalchemy import make_url

    folder = copy_studies(night, tmp_path / "night")
    database = make_url(fresh_db).database
    tables = ("objects", "validation_results", "findings")
    with WriterTerminator(pg_server_url, database, tables) as term:
        summary = nightly.screen(str(folder), fresh_db, str(tiny_model), batch_size=2,
                                   write_dicom=False)
    assert term.errors == []
    # discover (manifest), validate (verdicts, after its sites/studies/series upserts in the
    # same transaction) and infer (findings) each lost a connection while writing
    assert term.terminated == {t: 1 for t in tables}
    assert summary.n_scored == 3 and summary.n_failed == 0
    _same_night(snapshot(fresh_db), reference)


# ---------------------------------------------------------------------------------------------
# 3. an inference worker is SIGKILLed mid-batch


_INFER = """
import json, sys
from bloodnet_ops import nightly
source, db, uids, run_id, model = sys.argv[1:6]
print(json.dumps(nightly.infer_batch(source, db, json.loads(uids), run_id, model)))
"""


def test_worker_killed_mid_batch_then_the_task_retry_gives_the_same_rows(
    night: Path, fresh_db: str, tiny_model: Path, reference: Snapshot,
    tmp_path: Path,
) -> None:
    folder = copy_studies(night, tmp_path / "night")
    found = nightly.discover(str(folder), fresh_db)
    nightly.validate_and_record(found.source_uri, fresh_db, found.run_id)
    (batch,) = nightly.plan_batches(fresh_db, found.run_id, 16)
    assert len(batch) == 3
    derived = folder / nightly.DERIVED_DIR
    argv = [sys.executable, "-c", _INFER, found.source_uri, fresh_db, json.dumps(batch),
            found.run_id, str(tiny_model)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}

    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        # mid-batch: the first study's DICOM SR is written, the others are still to come
        while time.monotonic() < deadline and proc.poll() is None:
            if any(derived.glob("*/*/sr.dcm")):
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    written = list(derived.glob("*/*/sr.dcm"))
    assert 1 <= len(written) < 3  # it died between studies
    assert query(fresh_db, "SELECT count(*) FROM findings")[0][0] == 0  # nothing half-written

    # the task's retry (here in this process: the task body is the same function)
    again = nightly.infer_batch(found.source_uri, fresh_db, batch, found.run_id,
                                  str(tiny_model))
    assert again.n_scored == 3 and again.n_failed == 0
    nightly.summarise_run(fresh_db, found.run_id, [again])
    _same_night(snapshot(fresh_db), reference)
    # outputs are keyed by (model version, study): the retry overwrote, never duplicated
    assert len(list(derived.rglob("sr.dcm"))) == 3


# ---------------------------------------------------------------------------------------------
# 4. the object store throttles and fails: back off, then succeed


def test_throttling_and_5xx_from_the_store_are_retried_with_backoff(
    s3_server, s3_bucket: str, night: Path, fresh_db: str, tiny_model: Path,
    reference: Snapshot, monkeypatch: pytest.MonkeyPatch,
) -> None:
    n_objects = upload_studies(night, s3_bucket, "in")
    source = f"s3://{s3_bucket}/in"
    slow_down = FaultPlan(status=503, first=20, fraction=0.05, max_faults=40, match=reads_only,
                          seed=1)
    with FaultProxy(s3_server.endpoint, slow_down) as proxy:
        monkeypatch.setenv("BLOODNET_S3_ENDPOINT", proxy.endpoint)
        found = nightly.discover(source, fresh_db)
        nightly.validate_and_record(source, fresh_db, found.run_id)
        slowdowns = proxy.faults[503]
        header_gets = proxy.requests["GET"]
        proxy.set_plan(FaultPlan(status=500, first=6, fraction=0.05, max_faults=60,
                                 match=reads_only, seed=2))
        out = [nightly.infer_batch(source, fresh_db, b, found.run_id, str(tiny_model),
                                     write_dicom=False)
               for b in nightly.plan_batches(fresh_db, found.run_id, 2)]
        nightly.summarise_run(fresh_db, found.run_id, out)
    assert slowdowns >= 20 and proxy.faults[500] >= 6
    # every refused GET was sent again: requests = objects read + one retry per fault (at least)
    assert header_gets >= n_objects + slowdowns
    _same_night(snapshot(fresh_db), reference)


def test_a_store_that_stays_down_fails_the_step_instead_of_quarantining_good_data(
    s3_server, s3_bucket: str, night: Path, fresh_db: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from botocore.exceptions import ClientError

    upload_studies(night, s3_bucket, "in")
    source = f"s3://{s3_bucket}/in"
    monkeypatch.setenv("BLOODNET_S3_RETRY_SECONDS", "3")  # outages are ridden out this long
    with FaultProxy(s3_server.endpoint, FaultPlan(status=500, first=10**9,
                                                  match=reads_only)) as proxy:
        monkeypatch.setenv("BLOODNET_S3_ENDPOINT", proxy.endpoint)
        found = nightly.discover(source, fresh_db)  # listing still works
        t0 = time.monotonic()
        with pytest.raises(ClientError, match="InternalError"):
            nightly.validate_and_record(source, fresh_db, found.run_id)
        seconds = time.monotonic() - t0
    assert proxy.n_faults >= 8  # botocore's attempts on at least one object
    assert seconds < 60
    assert query(fresh_db, "SELECT count(*) FROM quarantine")[0][0] == 0
    assert query(fresh_db, "SELECT count(*) FROM validation_results")[0][0] == 0
    statuses = {s for (s,) in query(fresh_db, "SELECT DISTINCT status FROM objects")}
    assert statuses == {"pending"}  # offered again to the next attempt


# ---------------------------------------------------------------------------------------------
# 5. out of memory


def _volumes(night: Path) -> list[tuple[str, str, object]]:
    from bloodnet_ops.hu import load_series_files

    out = []
    for uid, row in sorted(labels(night).items()):
        paths = sorted((night / row["site"] / uid / row["series_uid"]).iterdir())
        out.append((uid, row["series_uid"], load_series_files(paths)))
    return out


def test_device_oom_halves_the_batch_and_the_findings_do_not_change(
    night: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CUDA OOM cannot happen on this CPU-only machine: a wrapper around the slice model's
    forward raises ``torch.OutOfMemoryError`` for batches above 8 slices, as a small GPU would."""
    import numpy as np
    import torch

    from bloodnet_ops.model import predictor as predictor_mod

    items = _volumes(night)[:2]
    clean = predictor_mod.Predictor(tiny_model, device="cpu", batch_size=32).predict(items)

    real = predictor_mod.forward_slices
    sizes: list[tuple[int, bool]] = []

    def small_device(model, hu, device, **kwargs):
        if hu.shape[0] > 8:
            sizes.append((int(hu.shape[0]), False))
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        sizes.append((int(hu.shape[0]), True))
        return real(model, hu, device, **kwargs)

    monkeypatch.setattr(predictor_mod, "forward_slices", small_device)
    pred = predictor_mod.Predictor(tiny_model, device="cpu", batch_size=32)
    got = pred.predict(items)

    assert sizes[0] == (32, False)  # the first batch hit the limit ...
    assert pred.batch_size <= 8  # ... and the batch size came down and stayed down
    assert all(n <= 8 for n, ok in sizes if ok)
    assert sum(ok for _, ok in sizes) > sum(not ok for _, ok in sizes)
    assert [f.study_uid for f in got] == [f.study_uid for f in clean]
    for a, b in zip(got, clean, strict=True):
        assert a.n_slices == b.n_slices
        assert np.isclose(a.probability, b.probability, atol=1e-5)
        assert np.isclose(a.volume_ml, b.volume_ml, atol=1e-3)


def test_a_series_too_large_to_hold_is_rejected_with_a_reason_and_the_night_goes_on(
    night: Path, fresh_db: str, tiny_model: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Host memory runs out preparing the largest series (simulated: ``MemoryError`` from the
    Predictor's volume preparation for more than 40 slices, a limit between this night's 29- and
    48-slice series). The study is quarantined with a reason code and a detail that says the
    series was too large; the others are scored."""
    from bloodnet_ops.model import predictor as predictor_mod

    truth = labels(night)
    n_slices = {uid: len(list((night / r["site"] / uid / r["series_uid"]).iterdir()))
                for uid, r in truth.items()}
    big = max(n_slices, key=n_slices.get)
    assert n_slices[big] > 40 > max(n for uid, n in n_slices.items() if uid != big)

    real = predictor_mod.prepare_volume

    def bounded(hu, spacing, **kwargs):
        if hu.shape[0] > 40:
            raise MemoryError("cannot allocate the prepared volume (simulated)")
        return real(hu, spacing, **kwargs)

    monkeypatch.setattr(predictor_mod, "prepare_volume", bounded)
    folder = copy_studies(night, tmp_path / "night")
    summary = nightly.screen(str(folder), fresh_db, str(tiny_model), write_dicom=False)

    assert (summary.n_scored, summary.n_failed, summary.n_rejected) == (2, 1, 1)
    assert {r.study_uid for r in query(fresh_db, "SELECT study_uid FROM findings")} == (
        set(truth) - {big})
    (q,) = query(fresh_db, "SELECT ref, reason, detail FROM quarantine WHERE kind = 'study'")
    assert (q.ref, q.reason) == (big, "pixel_decode_failed")  # the stable code ...
    # ... and a detail that says what happened and where the limit is set
    assert q.detail.startswith("series too large: out of memory")
    assert "BLOODNET_MAX_SERIES_VOXELS" in q.detail
    (v,) = query(fresh_db, "SELECT verdict FROM validation_results WHERE study_uid = :s", s=big)
    assert v.verdict == "reject"

