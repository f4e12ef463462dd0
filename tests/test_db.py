"""The results database on a real PostgreSQL: migrations equal the models, upserts are idempotent,
the manifest makes discovery incremental, no raw identifier is stored, retries survive killed
connections, and the roles grant what they should and nothing more."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import math
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Engine, create_engine, make_url, select, text
from sqlalchemy.exc import OperationalError, ProgrammingError

from bloodnet_ops import PREPROCESSING_VERSION
from bloodnet_ops.db import repo
from bloodnet_ops.db.base import Base
from bloodnet_ops.db.session import (
    apply_sql,
    current_revision,
    downgrade,
    make_engine,
    migrate,
    with_retries,
)
from bloodnet_ops.pseudonym import pseudonymise
from bloodnet_ops.reasons import Reason, Verdict
from bloodnet_ops.records import (
    CheckResult,
    HUStats,
    ObjectRef,
    StudyFinding,
    StudyResult,
    UnreadableObject,
    ValidationReport,
)
from bloodnet_ops.services import create_database, drop_database

SQL_DIR = Path(__file__).resolve().parents[1] / "sql"

#: Raw identifiers of the hand-made report: none may appear anywhere in the database.
RAW_PATIENT_IDS = ("PID-0042-DOE", "PID-0043-ROE", "PID-0044-POE")
RAW_ACCESSIONS = ("ACC-778899", "ACC-778900", "ACC-778901")


@pytest.fixture
def engine(database_url: str):
    eng = make_engine(database_url)
    yield eng
    eng.dispose()


def _uid() -> str:
    return f"1.2.826.0.1.3680043.10.{uuid.uuid4().int % 10**18}"


def _checks(reason: Reason | None) -> list[CheckResult]:
    return [
        CheckResult("header", "expect_column_values_to_be_in_set", "modality", True, ["CT"]),
        CheckResult(
            "series", "expect_table_row_count_to_be_between", None, reason is None,
            np.int64(12), Reason.TOO_FEW_SLICES if reason else None,
        ),
        CheckResult(
            "hu", "expect_column_values_to_be_between", "air_peak", True,
            {"value": np.float32(-998.5), "bounds": (np.float64(-1100), -900), "nan": math.nan},
        ),
    ]


def _study(i: int, verdict: Verdict, reasons: list[Reason], keys: list[str]) -> StudyResult:
    accepted = verdict != Verdict.REJECT
    return StudyResult(
        study_uid=_uid(),
        series_uid=_uid() if accepted else None,
        site=("site-a", "site-b", "")[i % 3],
        verdict=verdict,
        reasons=reasons,
        keys=keys,
        series_keys=keys[:2] if accepted else [],
        patient_id=RAW_PATIENT_IDS[i % 3],
        accession_number=RAW_ACCESSIONS[i % 3],
        study_date=("20260114", "2026-02-30", "")[i % 3],
        manufacturer="ACME",
        manufacturer_model="Scan 9",
        kernel="H30s",
        kvp=120.0,
        slice_thickness=5.0,
        pixel_spacing=0.45,
        n_slices=len(keys) - 1,
        checks=_checks(reasons[0] if reasons and not accepted else None),
        hu=HUStats(-1000.0, 32.5, -1024.0, 1400.0, -1024.0, 2900.0, -350.0, 480.0)
        if accepted else None,
    )


def make_report(tag: str = "") -> ValidationReport:
    """Three studies (accept, warning, reject) and two unreadable objects, every object listed."""
    objects: list[ObjectRef] = []
    studies = []
    spec = [
        (Verdict.ACCEPT, []),
        (Verdict.ACCEPT_WITH_WARNING, [Reason.CONTRAST_ENHANCED]),
        (Verdict.REJECT, [Reason.TOO_FEW_SLICES, Reason.SLICE_GAP]),
    ]
    for i, (verdict, reasons) in enumerate(spec):
        keys = [f"{tag}s{i}/obj {j}.dcm" for j in range(4)]
        objects += [ObjectRef(k, f"etag-{k}", 1000 + j) for j, k in enumerate(keys)]
        studies.append(_study(i, verdict, reasons, keys))
    bad = [
        UnreadableObject(f"{tag}junk/readme.txt", "etag-txt", 12, Reason.UNREADABLE, "not DICOM"),
        UnreadableObject(f"{tag}junk/empty", "etag-empty", 0, Reason.UNREADABLE, "empty object"),
    ]
    objects += [ObjectRef(u.key, u.etag, u.size) for u in bad]
    return ValidationReport(studies, bad, objects)


def _snapshot(engine: Engine, tables: tuple[str, ...] = repo.CORE_TABLES) -> dict[str, list]:
    """Every row of every table, minus columns that legitimately move on a rerun (timestamps)."""
    moving = {"first_seen", "last_seen", "validated_at", "recorded_at", "created_at",
              "updated_at", "started_at", "finished_at"}
    out = {}
    with engine.connect() as conn:
        for name in tables:
            table = Base.metadata.tables[name]
            cols = [c for c in table.c if c.name not in moving]
            rows = conn.execute(select(*cols)).all()
            out[name] = sorted(tuple(map(repr, r)) for r in rows)
    return out


# ---------------------------------------------------------------------------------------------
# migrations


def test_migrated_schema_equals_the_models(database_url: str) -> None:
    """One schema definition: the migrations produce exactly what the ORM models declare."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from bloodnet_ops.db.session import MIGRATIONS_DIR

    with contextlib.suppress(ModuleNotFoundError):  # audit/drift tables must be migrated too
        importlib.import_module("bloodnet_ops.db.models_audit")
    eng = create_engine(database_url)
    try:
        with eng.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(ctx, Base.metadata)
    finally:
        eng.dispose()
    assert diff == [], f"models and migrations differ: {diff}"
    assert (MIGRATIONS_DIR / "versions" / "0001_core.py").exists()


def test_migrate_is_idempotent_and_reversible(pg_server_url: str) -> None:
    from alembic.script import ScriptDirectory

    from bloodnet_ops.db.session import alembic_config

    name = f"bloodnet_mig_{uuid.uuid4().hex[:10]}"
    url = create_database(pg_server_url, name)
    try:
        assert current_revision(url) is None
        migrate(url)
        head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
        assert current_revision(url) == head
        migrate(url)  # nothing to do, no error
        assert current_revision(url) == head
        downgrade(url, "base")
        eng = create_engine(url)
        with eng.connect() as conn:
            tables = conn.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            ).scalars().all()
        eng.dispose()
        assert set(tables) <= {"alembic_version"}
        migrate(url)
        assert current_revision(url) == head
    finally:
        drop_database(pg_server_url, name)


def test_migrate_works_with_a_percent_in_the_password(pg_server_url: str) -> None:
    """The URL must not go through ConfigParser interpolation (a '%' would break it)."""
    role = f"bn_pct_{uuid.uuid4().hex[:8]}"
    name = f"bloodnet_pct_{uuid.uuid4().hex[:8]}"
    admin = create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE ROLE {role} LOGIN PASSWORD 'p%40ss%w0rd'"))
    try:
        create_database(pg_server_url, name)
        with admin.connect() as conn:
            conn.execute(text(f"ALTER DATABASE {name} OWNER TO {role}"))
        url = make_url(pg_server_url).set(username=role, password="p%40ss%w0rd", database=name)
        migrate(url.render_as_string(hide_password=False))
        assert current_revision(url.render_as_string(hide_password=False)) is not None
    finally:
        drop_database(pg_server_url, name)
        with admin.connect() as conn:
            conn.execute(text(f"DROP ROLE IF EXISTS {role}"))
        admin.dispose()


# ---------------------------------------------------------------------------------------------
# record_validation


def test_record_validation_writes_every_table(engine: Engine) -> None:
    report = make_report("rv1/")
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    counts = repo.record_validation(engine, report, source_uri="s3://b/rv1", run_id=run_id)
    assert counts == {
        "sites": 3, "studies": 3, "series": 2, "validation_results": 3,
        "expectation_results": 9, "quarantine": 3, "hu_stats": 2, "objects": 14,
    }
    with engine.connect() as conn:
        verdicts = dict(conn.execute(text(
            "SELECT verdict, count(*) FROM validation_results WHERE run_id = :r GROUP BY verdict"
        ), {"r": run_id}).tuples().all())
        assert verdicts == {"accept": 1, "accept_with_warning": 1, "reject": 1}
        q = conn.execute(text(
            "SELECT kind, reason, reasons, detail FROM quarantine WHERE run_id = :r ORDER BY ref"
        ), {"r": run_id}).all()
        assert sorted((k, r) for k, r, _, _ in q) == [
            ("object", "unreadable"), ("object", "unreadable"), ("study", "too_few_slices")]
        assert ["too_few_slices", "slice_gap"] in [list(x[2]) for x in q]
        observed = conn.execute(text(
            "SELECT observed FROM expectation_results WHERE run_id = :r AND suite = 'hu' LIMIT 1"
        ), {"r": run_id}).scalar_one()
        assert observed == {"value": -998.5, "bounds": [-1100.0, -900], "nan": None}
        failed = conn.execute(text(
            "SELECT count(*) FROM expectation_results "
            "WHERE run_id = :r AND NOT success AND reason = 'too_few_slices'"
        ), {"r": run_id}).scalar_one()
        assert failed == 1
        statuses = dict(conn.execute(text(
            "SELECT status, count(*) FROM objects WHERE source_uri = 's3://b/rv1' GROUP BY status"
        )).tuples().all())
        assert statuses == {"ingested": 8, "rejected": 4, "unreadable": 2}
        sites = set(conn.execute(text("SELECT site FROM studies WHERE source_uri = 's3://b/rv1'"))
                    .scalars())
        assert sites == {"site-a", "site-b", repo.UNKNOWN_SITE}
        dates = conn.execute(text(
            "SELECT study_date FROM studies WHERE source_uri = 's3://b/rv1' ORDER BY study_date"
        )).scalars().all()
        assert [str(d) for d in dates if d] == ["2026-01-14"]  # malformed and empty: NULL
        assert conn.execute(text(
            "SELECT count(*) FROM series s JOIN studies st USING (study_uid) "
            "WHERE st.source_uri = 's3://b/rv1' AND s.selected"
        )).scalar_one() == 2


def test_record_validation_is_idempotent_per_run(engine: Engine) -> None:
    report = make_report("idem/")
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    repo.record_validation(engine, report, source_uri="s3://b/idem", run_id=run_id)
    first = _snapshot(engine)
    again = repo.record_validation(engine, report, source_uri="s3://b/idem", run_id=run_id)
    assert _snapshot(engine) == first
    assert again["validation_results"] == 3

    # Another night over the same studies adds per-run rows only.
    before = repo.table_counts(engine)
    repo.record_validation(engine, report, source_uri="s3://b/idem", run_id=run_id + "-next")
    after = repo.table_counts(engine)
    grew = {k: after[k] - before[k] for k in after if after[k] != before[k]}
    assert grew == {"validation_results": 3, "expectation_results": 9, "quarantine": 3,
                    "hu_stats": 2}


def test_no_raw_identifier_reaches_the_database(engine: Engine) -> None:
    report = make_report("phi/")
    repo.record_validation(engine, report, source_uri="s3://b/phi", run_id="run-phi")
    study = report.studies[0]
    repo.register_model_version(engine, model_version="phi-test", weights_sha256="ab" * 32,
                                threshold=0.5, variant="bloodnet")
    repo.upsert_findings(engine, [repo.FindingRow.from_finding(
        StudyFinding(study.study_uid, study.series_uid or "", 0.9, True, 3.0),
        study, model_version="phi-test", weights_sha256="ab" * 32, run_id="run-phi")])
    hits = _scan_database(engine, RAW_PATIENT_IDS + RAW_ACCESSIONS)
    assert hits == {}, f"raw identifiers stored in {hits}"
    # ... while the pseudonyms are there and join a patient's studies.
    with engine.connect() as conn:
        keys = set(conn.execute(text("SELECT patient_key FROM studies")).scalars())
        fkey = conn.execute(text(
            "SELECT patient_key FROM findings WHERE model_version = 'phi-test'")).scalar_one()
    assert pseudonymise(RAW_PATIENT_IDS[0]) in keys
    assert fkey == pseudonymise(RAW_PATIENT_IDS[0])


def _scan_database(engine: Engine, needles: tuple[str, ...]) -> dict[str, int]:
    """Count rows, in every table of the public schema, whose text form contains a needle."""
    hits: dict[str, int] = {}
    with engine.connect() as conn:
        tables = conn.execute(text(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        )).scalars().all()
        for table in tables:
            quoted = conn.dialect.identifier_preparer.quote(table)
            for needle in needles:
                n = conn.execute(
                    text(f"SELECT count(*) FROM {quoted} t WHERE strpos(t::text, :needle) > 0"),
                    {"needle": needle},
                ).scalar_one()
                if n:
                    hits[f"{table}:{needle}"] = n
    return hits


# ---------------------------------------------------------------------------------------------
# manifest


def test_manifest_sees_only_new_or_changed_objects(engine: Engine) -> None:
    source = f"s3://manifest-{uuid.uuid4().hex[:8]}/night"
    report = make_report()
    objects = report.objects
    first = repo.manifest_changes(engine, source, objects)
    assert sorted(o.key for o in first) == sorted(o.key for o in objects)
    # Nothing recorded yet (the run "died"): the same objects are offered again.
    assert len(repo.manifest_changes(engine, source, objects)) == len(objects)

    repo.manifest_record(engine, source, report, "run-1")
    assert repo.manifest_changes(engine, source, objects) == []

    changed = ObjectRef(objects[0].key, "etag-new", objects[0].size)
    new = ObjectRef("late/arrival.dcm", "etag-late", 10)
    second = repo.manifest_changes(engine, source, [changed, *objects[1:], new])
    assert sorted(o.key for o in second) == sorted([changed.key, new.key])
    # Another source is its own manifest.
    assert len(repo.manifest_changes(engine, source + "-other", objects)) == len(objects)

    with engine.connect() as conn:
        row = conn.execute(text(
            "SELECT status, etag, study_uid FROM objects WHERE source_uri = :s AND key = :k"
        ), {"s": source, "k": changed.key}).one()
    assert row.status == "pending" and row.etag == "etag-new"
    assert row.study_uid == report.studies[0].study_uid  # kept until re-recorded


def test_manifest_chunks_large_listings(engine: Engine) -> None:
    source = f"file:///large-{uuid.uuid4().hex[:8]}"
    n = repo.MANIFEST_CHUNK * 2 + 123
    objects = [ObjectRef(f"k/{i:06d}", f"e{i}", i) for i in range(n)]
    assert len(repo.manifest_changes(engine, source, iter(objects))) == n
    report = ValidationReport([], [UnreadableObject(o.key, o.etag, o.size, Reason.UNREADABLE)
                                   for o in objects], objects)
    assert repo.manifest_record(engine, source, report, "run-large") == n
    objects[7] = ObjectRef(objects[7].key, "changed", 7)
    assert [o.key for o in repo.manifest_changes(engine, source, iter(objects))] == ["k/000007"]


def test_manifest_keys_for_studies_returns_whole_studies(engine: Engine) -> None:
    source = f"s3://mk-{uuid.uuid4().hex[:8]}"
    report = make_report()
    repo.record_validation(engine, report, source_uri=source, run_id="run-mk")
    study = report.studies[1]
    refs = repo.manifest_keys_for_studies(engine, source, [study.study_uid, "1.2.unknown"])
    assert sorted(r.key for r in refs) == sorted(study.keys)
    assert all(r.etag == f"etag-{r.key}" for r in refs)
    assert repo.manifest_keys_for_studies(engine, source, []) == []


# ---------------------------------------------------------------------------------------------
# models, runs, findings


def _finding(study: StudyResult, version: str, run_id: str, p: float, **kw: Any) -> repo.FindingRow:
    return repo.FindingRow.from_finding(
        StudyFinding(study.study_uid, study.series_uid or "", p, p >= 0.5, 12.5 * p,
                     {"SDH": np.float32(p)}, 30, 0.25, 1.5),
        study, model_version=version, weights_sha256="cd" * 32, run_id=run_id,
        input_etags={k: f"etag-{k}" for k in study.series_keys}, **kw,
    )


def test_findings_upsert_is_keyed_on_series_model_and_preprocessing(engine: Engine) -> None:
    report = make_report("fnd/")
    repo.record_validation(engine, report, source_uri="s3://b/fnd", run_id="run-fnd")
    scored = [s for s in report.studies if s.series_uid]
    v1, v2 = f"m1-{uuid.uuid4().hex[:6]}", f"m2-{uuid.uuid4().hex[:6]}"
    for v in (v1, v2):
        repo.register_model_version(engine, model_version=v, weights_sha256="cd" * 32,
                                    threshold=0.5, variant="bloodnet", metrics={"auc": 0.95})
    repo.start_inference_run(engine, run_id="run-fnd", source_uri="s3://b/fnd", model_version=v1)

    rows = [_finding(s, v1, "run-fnd", 0.8) for s in scored]
    assert repo.upsert_findings(engine, rows) == 2
    first = _snapshot(engine, ("findings",))
    assert repo.upsert_findings(engine, rows + rows) == 2  # duplicates collapse, rerun is a no-op
    assert _snapshot(engine, ("findings",)) == first

    # A rescore with the same model updates in place; another model sits side by side.
    repo.upsert_findings(engine, [_finding(s, v1, "run-fnd", 0.3) for s in scored])
    repo.upsert_findings(engine, [_finding(s, v2, "run-fnd", 0.7) for s in scored])
    repo.upsert_findings(engine, [_finding(s, v2, "run-fnd", 0.7, preprocessing_version="pp-2")
                                  for s in scored])
    with engine.connect() as conn:
        got = conn.execute(text(
            "SELECT model_version, preprocessing_version, count(*), min(probability), "
            "bool_or(positive) FROM findings WHERE model_version IN (:a, :b) "
            "GROUP BY 1, 2 ORDER BY 1, 2"
        ), {"a": v1, "b": v2}).all()
    assert [tuple(r) for r in got] == [
        (v1, PREPROCESSING_VERSION, 2, 0.3, False),
        (v2, PREPROCESSING_VERSION, 2, 0.7, True),
        (v2, "pp-2", 2, 0.7, True),
    ]
    back = [r for r in repo.findings_for_run(engine, "run-fnd") if r.model_version == v1]
    assert {r.series_uid for r in back} == {s.series_uid for s in scored}
    assert back[0].subtypes == {"SDH": pytest.approx(0.3)}
    assert back[0].input_etags and back[0].weights_sha256 == "cd" * 32

    repo.finish_inference_run(engine, run_id="run-fnd", counts={"studies": np.int64(2)},
                              timings={"infer": 1.5, "bad": math.inf})
    with engine.connect() as conn:
        run = conn.execute(text(
            "SELECT status, finished_at, counts, timings FROM inference_runs "
            "WHERE run_id = 'run-fnd'"
        )).one()
    assert run.status == "success" and run.finished_at is not None
    assert run.counts == {"studies": 2} and run.timings == {"infer": 1.5, "bad": None}
    repo.start_inference_run(engine, run_id="run-fnd", source_uri="s3://b/fnd", model_version=v1)
    with engine.connect() as conn:
        assert conn.execute(text(
            "SELECT status FROM inference_runs WHERE run_id = 'run-fnd'")).scalar_one() == "running"


def test_model_version_is_bound_to_its_weights(engine: Engine) -> None:
    v = f"bound-{uuid.uuid4().hex[:6]}"
    repo.register_model_version(engine, model_version=v, weights_sha256="aa" * 32,
                                threshold=0.4, variant="bloodnet")
    repo.register_model_version(engine, model_version=v, weights_sha256="aa" * 32,
                                threshold=0.45, variant="bloodnet", metrics={"auc": 0.9})
    with pytest.raises(ValueError, match="other weights"):
        repo.register_model_version(engine, model_version=v, weights_sha256="bb" * 32,
                                    threshold=0.4, variant="bloodnet")
    with engine.connect() as conn:
        row = conn.execute(text(
            "SELECT weights_sha256, threshold, metrics FROM model_versions WHERE model_version = :v"
        ), {"v": v}).one()
    assert (row.weights_sha256, row.threshold, row.metrics) == ("aa" * 32, 0.45, {"auc": 0.9})


def test_finish_unknown_run_and_bad_status_are_errors(engine: Engine) -> None:
    with pytest.raises(LookupError):
        repo.finish_inference_run(engine, run_id="never-started")
    with pytest.raises(ValueError):
        repo.finish_inference_run(engine, run_id="never-started", status="done")


def test_upsert_findings_needs_a_registered_model(engine: Engine) -> None:
    study = make_report("unreg/").studies[0]
    with pytest.raises(Exception, match="fk_findings_model_version"):
        repo.upsert_findings(engine, [_finding(study, "not-registered", "r", 0.5)])


# ---------------------------------------------------------------------------------------------
# retries against real connection drops


def test_with_retries_survives_a_terminated_backend(engine: Engine) -> None:
    attempts = []

    def write() -> int:
        with engine.begin() as conn:
            attempts.append(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
            conn.execute(text("INSERT INTO sites (site) VALUES ('retry-site') "
                              "ON CONFLICT DO NOTHING"))
            if len(attempts) == 1:  # the first attempt loses its connection mid-transaction
                conn.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
            return len(attempts)

    assert with_retries(write, attempts=3, base_delay=0.01) == 2
    with engine.connect() as conn:
        assert conn.execute(text(
            "SELECT count(*) FROM sites WHERE site = 'retry-site'")).scalar_one() == 1


def test_with_retries_gives_up_and_ignores_non_transient_errors() -> None:
    calls = []

    def refused() -> None:
        calls.append(1)
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    with pytest.raises(OperationalError):
        with_retries(refused, attempts=3, base_delay=0.001)
    assert len(calls) == 3

    def bug() -> None:
        calls.append(2)
        raise KeyError("not a database error")

    with pytest.raises(KeyError):
        with_retries(bug, attempts=5, base_delay=0.001)
    assert calls.count(2) == 1


def test_pooled_connections_killed_between_writes_are_replaced(
    engine: Engine, pg_server_url: str
) -> None:
    repo.table_counts(engine)  # leave a connection in the pool
    db = engine.url.database
    admin = create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        killed = conn.execute(text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = :d AND pid <> pg_backend_pid() AND application_name = 'bloodnet'"
        ), {"d": db}).scalar_one()
    admin.dispose()
    assert killed >= 1
    report = make_report("pool/")
    counts = repo.record_validation(engine, report, source_uri="s3://b/pool", run_id="run-pool")
    assert counts["studies"] == 3


# ---------------------------------------------------------------------------------------------
# roles and retention


def _login(pg_server_url: str, database_url: str, group: str) -> tuple[str, str]:
    user = f"bn_t_{group.split('_')[-1]}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE ROLE {user} LOGIN IN ROLE {group}"))
    admin.dispose()
    return user, make_url(database_url).set(username=user, password=None).render_as_string(
        hide_password=False)


def _drop_login(pg_server_url: str, user: str) -> None:
    admin = create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"DROP ROLE IF EXISTS {user}"))
    admin.dispose()


def test_roles_grant_least_privilege(database_url: str, pg_server_url: str) -> None:
    apply_sql(database_url, SQL_DIR / "roles.sql")
    apply_sql(database_url, SQL_DIR / "roles.sql")  # idempotent
    apply_sql(database_url, SQL_DIR / "retention.sql")
    # A view created after the grants (as the dashboards' views are) is readable too.
    su = create_engine(database_url)
    with su.begin() as conn:
        conn.execute(text("CREATE VIEW v_roles_probe AS SELECT site FROM sites"))
    su.dispose()

    reader, reader_url = _login(pg_server_url, database_url, "bloodnet_reader")
    writer, writer_url = _login(pg_server_url, database_url, "bloodnet_writer")
    try:
        r = create_engine(reader_url)
        with r.connect() as conn:
            conn.execute(text("SELECT count(*) FROM findings")).scalar_one()
            conn.execute(text("SELECT count(*) FROM v_roles_probe")).scalar_one()
        for stmt in (
            "INSERT INTO sites (site) VALUES ('reader-was-here')",
            "UPDATE sites SET last_seen = now()",
            "DELETE FROM sites",
            "CREATE TABLE reader_table (x int)",
        ):
            with pytest.raises(ProgrammingError, match="permission denied"), r.begin() as conn:
                conn.execute(text(stmt))
        r.dispose()

        w = create_engine(writer_url)
        with w.begin() as conn:
            conn.execute(text("INSERT INTO sites (site) VALUES ('writer-was-here') "
                              "ON CONFLICT (site) DO UPDATE SET last_seen = now()"))
        report = make_report("writer/")
        counts = repo.record_validation(w, report, source_uri="s3://b/writer", run_id="run-w")
        assert counts["expectation_results"] == 9  # identity columns need no sequence grant
        for stmt in (
            "DELETE FROM sites WHERE site = 'writer-was-here'",
            "CREATE TABLE writer_table (x int)",
            "DROP TABLE findings",
            "UPDATE alembic_version SET version_num = 'x'",
            "SELECT * FROM bloodnet_retention(1)",
        ):
            denied = pytest.raises(ProgrammingError, match=r"permission denied|must be owner")
            with denied, w.begin() as conn:
                conn.execute(text(stmt))
        w.dispose()
    finally:
        _drop_login(pg_server_url, reader)
        _drop_login(pg_server_url, writer)


def test_retention_deletes_old_diagnostics_and_keeps_findings(
    database_url: str, engine: Engine
) -> None:
    apply_sql(database_url, SQL_DIR / "retention.sql")
    report = make_report("ret/")
    repo.record_validation(engine, report, source_uri="s3://b/ret", run_id="run-old")
    study = report.studies[0]
    repo.register_model_version(engine, model_version="ret-m", weights_sha256="ef" * 32,
                                threshold=0.5, variant="bloodnet")
    repo.upsert_findings(engine, [_finding(study, "ret-m", "run-old", 0.9)])
    with engine.begin() as conn:
        for table in ("expectation_results", "quarantine", "findings"):
            conn.execute(text(f"UPDATE {table} SET created_at = now() - interval '400 days' "
                              "WHERE run_id = 'run-old'"))
    before = repo.table_counts(engine)
    with engine.begin() as conn:
        deleted = dict(conn.execute(text("SELECT * FROM bloodnet_retention(180)")).all())
    after = repo.table_counts(engine)
    assert deleted == {"expectation_results": 9, "quarantine": 3}
    assert before["expectation_results"] - after["expectation_results"] == 9
    assert before["quarantine"] - after["quarantine"] == 3
    for kept in ("findings", "validation_results", "hu_stats", "studies", "objects"):
        assert after[kept] == before[kept], kept
    with engine.begin() as conn:  # nothing left to delete: a second run is a no-op
        again = dict(conn.execute(text("SELECT * FROM bloodnet_retention(180)")).all())
    assert again == {"expectation_results": 0, "quarantine": 0}
    with pytest.raises(Exception, match="keep_days must be at least 1"), engine.begin() as conn:
        conn.execute(text("SELECT * FROM bloodnet_retention(0)"))


# ---------------------------------------------------------------------------------------------
# rollups (migration 0003): per-run sums kept exact by triggers, whatever writes the tables

#: Each rollup next to the same sums computed by hand from its table (zero rows left behind by
#: groups that emptied are excluded; _assert_rollups_exact checks they hold zeros only).
ROLLUP_TRUTH: dict[str, tuple[str, str]] = {
    "rollup_validation": (
        (
            "SELECT run_id, site, (validated_at AT TIME ZONE 'UTC')::date, count(*),"
            " count(*) FILTER (WHERE verdict = 'accept'),"
            " count(*) FILTER (WHERE verdict = 'accept_with_warning'),"
            " count(*) FILTER (WHERE verdict = 'reject') FROM validation_results GROUP BY 1, 2, 3"
        ),
        (
            "SELECT run_id, site, day, studies, accepted, warned, rejected FROM rollup_validation"
            " WHERE studies <> 0"
        ),
    ),
    "rollup_findings": (
        (
            "SELECT run_id, site, model_version, (created_at AT TIME ZONE 'UTC')::date, count(*),"
            " count(*) FILTER (WHERE positive),"
            " array_agg(load_seconds + infer_seconds ORDER BY load_seconds + infer_seconds)"
            " FROM findings GROUP BY 1, 2, 3, 4"
        ),
        (
            "SELECT run_id, site, model_version, day, scored, positives,"
            " (SELECT array_agg(v ORDER BY v) FROM unnest(seconds) v) FROM rollup_findings"
            " WHERE scored <> 0"
        ),
    ),
    "rollup_hu": (
        (
            "SELECT run_id, site, (created_at AT TIME ZONE 'UTC')::date, count(*), count(air_peak),"
            " round(COALESCE(sum(air_peak), 0)::numeric, 6), count(brain_median),"
            " round(COALESCE(sum(brain_median), 0)::numeric, 6), round(sum(p01)::numeric, 6),"
            " round(sum(p99)::numeric, 6), round(sum(mean)::numeric, 6),"
            " round(sum(std)::numeric, 6)"
            " FROM hu_stats GROUP BY 1, 2, 3"
        ),
        (
            "SELECT run_id, site, day, n, air_peak_n, round(air_peak_sum::numeric, 6),"
            " brain_median_n,"
            " round(brain_median_sum::numeric, 6), round(p01_sum::numeric, 6),"
            " round(p99_sum::numeric, 6), round(mean_sum::numeric, 6), round(std_sum::numeric, 6)"
            " FROM rollup_hu WHERE n <> 0"
        ),
    ),
    "rollup_failed_expectations": (
        (
            "SELECT run_id, site, (created_at AT TIME ZONE 'UTC')::date, count(*)"
            " FROM expectation_results WHERE NOT success GROUP BY 1, 2, 3"
        ),
        (
            "SELECT run_id, site, day, n FROM rollup_failed_expectations WHERE n <> 0"
        ),
    ),
    "rollup_quarantine": (
        (
            "SELECT run_id, COALESCE(site, ''), (created_at AT TIME ZONE 'UTC')::date, kind,"
            " reason,"
            " count(*) FROM quarantine GROUP BY 1, 2, 3, 4, 5"
        ),
        (
            "SELECT run_id, site, day, kind, reason, n FROM rollup_quarantine WHERE n <> 0"
        ),
    ),
}
ROLLUP_ZEROS = {
    "rollup_validation": "studies = 0 AND (accepted, warned, rejected) <> (0, 0, 0)",
    "rollup_findings": "scored = 0 AND (positives <> 0 OR cardinality(seconds) <> 0)",
    "rollup_hu": "n = 0 AND (air_peak_n, brain_median_n) <> (0, 0)",
    "rollup_failed_expectations": "n < 0",
    "rollup_quarantine": "n < 0",
}


def _assert_rollups_exact(engine: Engine) -> dict[str, int]:
    """Every rollup equals its table's sums; returns the non-empty groups per rollup."""
    sizes = {}
    with engine.connect() as conn:
        for table, (truth, rollup) in ROLLUP_TRUTH.items():
            expected = sorted(tuple(r) for r in conn.execute(text(truth)))
            got = sorted(tuple(r) for r in conn.execute(text(rollup)))
            assert got == expected, table
            bad = conn.execute(text(f"SELECT count(*) FROM {table} WHERE {ROLLUP_ZEROS[table]}"))
            assert bad.scalar_one() == 0, f"{table}: an emptied group holds non-zero values"
            sizes[table] = len(got)
        # The views' medians read the times as sorted arrays (a lookup, a binary search).
        for table in ("rollup_findings", "rollup_run_seconds"):
            unsorted = conn.execute(text(
                f"SELECT count(*) FROM {table} WHERE seconds <> bloodnet_sorted(seconds)"))
            assert unsorted.scalar_one() == 0, f"{table}: times not sorted"
        run_truth = sorted(tuple(r) for r in conn.execute(text(
            "SELECT run_id, (created_at AT TIME ZONE 'UTC')::date, count(*),"
            " array_agg(load_seconds + infer_seconds ORDER BY load_seconds + infer_seconds)"
            " FROM findings GROUP BY 1, 2")))
        runs = sorted(tuple(r) for r in conn.execute(text(
            "SELECT run_id, day, scored, seconds FROM rollup_run_seconds WHERE scored <> 0")))
        assert runs == run_truth, "rollup_run_seconds"
    return sizes


@pytest.fixture
def rollup_db(empty_db: str) -> str:
    """A database of its own: the test truncates tables and downgrades the schema."""
    return empty_db


def _seed_at_0002(url: str) -> None:
    """Rows written by the 0002 schema (no site columns yet): one run with an inference run
    row, one without, a failed expectation, quarantined items, HU statistics and findings."""
    eng = create_engine(url)
    with eng.begin() as conn:
        conn.execute(text(
            "INSERT INTO sites (site) VALUES ('old-a'), ('old-b');"
            "INSERT INTO studies (study_uid, site) VALUES ('9.1', 'old-a'), ('9.2', 'old-b');"
            "INSERT INTO model_versions (model_version, weights_sha256, threshold, variant)"
            " VALUES ('m-old', 'aa', 0.5, 'bloodnet');"
            "INSERT INTO inference_runs (run_id, source_uri, model_version, started_at)"
            " VALUES ('old-run', 's3://b', 'm-old', '2026-01-05 01:00+00');"
            "INSERT INTO validation_results (study_uid, run_id, source_uri, verdict, validated_at)"
            " VALUES ('9.1', 'old-run', 's3://b', 'accept', '2026-01-05 01:05+00'),"
            " ('9.2', 'old-run', 's3://b', 'reject', '2026-01-05 01:05+00'),"
            " ('9.1', 'old-cli', 's3://b', 'accept_with_warning', '2026-01-07 09:00+00');"
            "INSERT INTO expectation_results (validation_id, study_uid, run_id, ordinal, suite,"
            " expectation, success, created_at) SELECT id, study_uid, run_id, 0, 'series',"
            " 'expect_x', verdict <> 'reject', validated_at FROM validation_results;"
            "INSERT INTO quarantine (run_id, source_uri, kind, ref, study_uid, reason, created_at)"
            " VALUES ('old-run', 's3://b', 'study', '9.2', '9.2', 'SLICE_GAP',"
            " '2026-01-05 01:05+00'),"
            " ('old-run', 's3://b', 'object', 'junk', NULL, 'UNREADABLE', '2026-01-05 01:05+00');"
            "INSERT INTO hu_stats (study_uid, run_id, air_peak, brain_median, p01, p99, min, max,"
            " mean, std, created_at) VALUES ('9.1', 'old-run', -1000, 35, -1020, 1500, -1024,"
            " 3000, -400, 500, '2026-01-05 01:05+00'), ('9.1', 'old-cli', NULL, 36, -1010, 1400,"
            " -1024, 3000, -410, 510, '2026-01-07 09:00+00');"
            "INSERT INTO findings (series_uid, model_version, preprocessing_version, study_uid,"
            " site, probability, positive, volume_ml, weights_sha256, run_id, load_seconds,"
            " infer_seconds, created_at) VALUES ('9.1.1', 'm-old', 'p1', '9.1', 'old-a', 0.9,"
            " true, 3, 'aa', 'old-run', 1.25, 0.5, '2026-01-05 01:10+00');"
        ))
    eng.dispose()


def test_migration_backfills_sites_and_rollups_and_reverses_under_the_views(
    rollup_db: str,
) -> None:
    from bloodnet_ops.db.views import apply_views

    migrate(rollup_db, "0002_audit_drift")
    _seed_at_0002(rollup_db)
    migrate(rollup_db)
    eng = make_engine(rollup_db)
    try:
        with eng.connect() as conn:
            sites = conn.execute(text(
                "SELECT (SELECT array_agg(site ORDER BY id) FROM validation_results),"
                " (SELECT array_agg(site ORDER BY validation_id) FROM expectation_results),"
                " (SELECT array_agg(site ORDER BY run_id) FROM hu_stats),"
                " (SELECT array_agg(site ORDER BY kind DESC) FROM quarantine)")).one()
        assert tuple(sites) == (["old-a", "old-b", "old-a"], ["old-a", "old-b", "old-a"],
                                ["old-a", "old-a"], ["old-b", None])
        assert _assert_rollups_exact(eng) == {
            "rollup_validation": 3, "rollup_findings": 1, "rollup_hu": 2,
            "rollup_failed_expectations": 1, "rollup_quarantine": 2}
        # The run without an inference_runs row counts on its own date, through the rollups.
        apply_views(rollup_db)
        with eng.connect() as conn:
            rows = conn.execute(text(
                "SELECT night, site, studies, warned FROM v_quality_by_site ORDER BY 1, 2")).all()
            per_row = conn.execute(text(
                "SELECT night, site, count(*), count(*) FILTER (WHERE verdict ="
                " 'accept_with_warning') FROM v_validation_nights GROUP BY 1, 2 ORDER BY 1, 2"
            )).all()
        assert [tuple(r) for r in rows] == [tuple(r) for r in per_row] == [
            (date(2026, 1, 5), "old-a", 1, 0), (date(2026, 1, 5), "old-b", 1, 0),
            (date(2026, 1, 7), "old-a", 1, 1)]
    finally:
        eng.dispose()
    # Down again with the dashboard views in place (they read what 0003 adds), and up.
    downgrade(rollup_db, "0002_audit_drift")
    assert current_revision(rollup_db) == "0002_audit_drift"
    migrate(rollup_db)
    eng = make_engine(rollup_db)
    try:
        assert _assert_rollups_exact(eng)["rollup_validation"] == 3
    finally:
        eng.dispose()


def test_rollups_stay_exact_through_every_kind_of_write(rollup_db: str) -> None:
    from bloodnet_ops.db.views import apply_views

    migrate(rollup_db)
    apply_sql(rollup_db, SQL_DIR / "retention.sql")
    eng = make_engine(rollup_db)
    try:
        report = make_report("rollup/")
        repo.record_validation(eng, report, source_uri="s3://b/r", run_id="run-a")
        assert _assert_rollups_exact(eng)["rollup_validation"] == 3  # site-a, site-b, unknown
        repo.record_validation(eng, report, source_uri="s3://b/r", run_id="run-a")  # upserts
        _assert_rollups_exact(eng)
        # A rerun that sees another site moves the study's rows to it.
        moved = dataclasses.replace(report.studies[0], site="site-c")
        repo.record_validation(eng, ValidationReport([moved], [], []), source_uri="s3://b/r",
                               run_id="run-a")
        with eng.connect() as conn:
            assert conn.execute(text(
                "SELECT studies FROM rollup_validation WHERE site = 'site-a'")).scalar_one() == 0
        _assert_rollups_exact(eng)

        # Findings: insert, rescore, and move to another run (run_id is not part of the key).
        repo.register_model_version(eng, model_version="m-r", weights_sha256="cd" * 32,
                                    threshold=0.5, variant="bloodnet")
        scored = [s for s in report.studies if s.series_uid]
        repo.upsert_findings(eng, [_finding(s, "m-r", "run-a", 0.8) for s in scored])
        _assert_rollups_exact(eng)
        rescored = [dataclasses.replace(_finding(s, "m-r", "run-a", 0.3), infer_seconds=2.0)
                    for s in scored]
        repo.upsert_findings(eng, rescored)
        _assert_rollups_exact(eng)
        repo.upsert_findings(eng, [_finding(s, "m-r", "run-b", 0.6) for s in scored])
        with eng.connect() as conn:
            assert conn.execute(text(
                "SELECT sum(scored) FROM rollup_findings WHERE run_id = 'run-a'")).scalar_one() == 0
        _assert_rollups_exact(eng)

        # Concurrent writers on the same run and site: no lost update.
        many = [dataclasses.replace(scored[0], study_uid=_uid(), series_uid=_uid())
                for _ in range(24)]
        rows = [_finding(s, "m-r", "run-c", 0.1 * (i % 10)) for i, s in enumerate(many)]
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda chunk: repo.upsert_findings(eng, chunk),
                          [rows[i::4] for i in range(4)]))
        with eng.connect() as conn:
            assert conn.execute(text(
                "SELECT scored FROM rollup_findings WHERE run_id = 'run-c'")).scalar_one() == 24
        _assert_rollups_exact(eng)
        # Two runs on one night (neither has an inference_runs row): the night's median is
        # taken over both, not looked up in one run's sorted times.
        apply_views(rollup_db)
        with eng.connect() as conn:
            parts = conn.execute(text(
                "SELECT max(n) FROM (SELECT count(*) AS n FROM v_run_seconds GROUP BY night) x"
            )).scalar_one()
            by_view = conn.execute(text(
                "SELECT night, scored, median_seconds FROM v_findings_by_night")).all()
            by_rows = conn.execute(text(
                "SELECT night, count(*), percentile_cont(0.5) WITHIN GROUP"
                " (ORDER BY load_seconds + infer_seconds) FROM v_finding_nights GROUP BY 1")).all()
        assert parts == 2 and sorted(map(tuple, by_view)) == sorted(map(tuple, by_rows))

        # Back-dating, retention, a cascade from studies, TRUNCATE.
        with eng.begin() as conn:
            for table, column in (("validation_results", "validated_at"),
                                  ("expectation_results", "created_at"),
                                  ("quarantine", "created_at"), ("hu_stats", "created_at"),
                                  ("findings", "created_at")):
                conn.execute(text(f"UPDATE {table} SET {column} = {column} - interval '400 days'"
                                  " WHERE run_id IN ('run-a', 'run-b')"))
        _assert_rollups_exact(eng)
        with eng.begin() as conn:
            deleted = dict(conn.execute(text("SELECT * FROM bloodnet_retention(180)")).all())
        assert deleted["quarantine"] == 3 and deleted["expectation_results"] > 0
        _assert_rollups_exact(eng)
        with eng.begin() as conn:
            conn.execute(text("DELETE FROM studies WHERE study_uid = :s"),
                         {"s": report.studies[1].study_uid})
        _assert_rollups_exact(eng)
        with eng.begin() as conn:
            conn.execute(text("TRUNCATE hu_stats"))
            assert conn.execute(text("SELECT count(*) FROM rollup_hu")).scalar_one() == 0
        assert _assert_rollups_exact(eng)["rollup_hu"] == 0
    finally:
        eng.dispose()


# ---------------------------------------------------------------------------------------------
# the real pipeline on synthetic DICOM (needs the synth and pipeline modules)


def test_pipeline_report_persists_without_phi(engine: Engine, synth_small: Path) -> None:
    import pydicom

    from bloodnet_ops.pipeline import validate_source
    from bloodnet_ops.storage import LocalSource

    source = LocalSource(synth_small)
    report = validate_source(source)
    run_id = f"run-synth-{uuid.uuid4().hex[:6]}"
    counts = repo.record_validation(engine, report, source_uri=source.uri, run_id=run_id)
    assert counts["studies"] == len(report.studies) >= 6
    assert counts["objects"] == len(report.accounted_keys())
    assert counts["expectation_results"] == sum(len(s.checks) for s in report.studies) > 0

    needles: set[str] = set()
    for path in sorted(synth_small.rglob("*.dcm"))[:400]:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for value in (ds.get("PatientID"), ds.get("PatientName"), ds.get("AccessionNumber")):
            if value and len(str(value)) >= 4:
                needles.add(str(value))
    assert needles, "the synthetic studies carry patient identifiers to look for"
    assert _scan_database(engine, tuple(sorted(needles))) == {}

    assert repo.manifest_changes(engine, source.uri, source.list()) == []


# ---------------------------------------------------------------------------------------------
# pseudonyms


def test_pseudonyms_are_keyed_stable_and_not_reversible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLOODNET_PSEUDONYM_KEY", "key-one")
    a = pseudonymise("PID-0042-DOE")
    assert len(a) == 32 and all(c in "0123456789abcdef" for c in a)
    assert pseudonymise("PID-0042-DOE") == a
    assert pseudonymise("  PID-0042-DOE ") == a  # DICOM space padding does not matter
    assert pseudonymise("PID-0043-DOE") != a
    assert pseudonymise("") == "" and pseudonymise(None) == "" and pseudonymise("   ") == ""
    monkeypatch.setenv("BLOODNET_PSEUDONYM_KEY", "key-two")
    assert pseudonymise("PID-0042-DOE") != a  # another deployment's key, another pseudonym
    import hashlib

    assert a != hashlib.sha256(b"PID-0042-DOE").hexdigest()[:32]  # keyed, not a bare hash


def test_pseudonyms_fall_back_to_a_dev_key_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import bloodnet_ops.pseudonym as pseudo

    monkeypatch.delenv("BLOODNET_PSEUDONYM_KEY", raising=False)
    monkeypatch.setattr(pseudo, "_warned", False)
    with caplog.at_level("WARNING", logger="bloodnet_ops.pseudonym"):
        value = pseudonymise("PID-1")
    assert value and "BLOODNET_PSEUDONYM_KEY" in caplog.text
    assert "PID-1" not in caplog.text
