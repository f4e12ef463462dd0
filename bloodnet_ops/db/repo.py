"""Writers and readers of the results database.

Every bulk write is a batched ``INSERT ... ON CONFLICT DO UPDATE`` keyed on the table's natural
key, run in one transaction and retried on transient connection errors
(:func:`bloodnet_ops.db.session.with_retries`). Calling a writer twice with the same input leaves
the same rows, which is what makes every Airflow task idempotent.

Raw patient identifiers are pseudonymised here, at the last step before the database
(:func:`bloodnet_ops.pseudonym.pseudonymise`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from itertools import islice
from typing import Any

from sqlalchemy import Connection, Engine, Table, func, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert

from bloodnet_ops import PREPROCESSING_VERSION
from bloodnet_ops.db.models import (
    ExpectationResult,
    Finding,
    HUStatsRow,
    InferenceRun,
    ModelVersion,
    ObjectRecord,
    Quarantine,
    Series,
    Site,
    Study,
    ValidationResult,
)
from bloodnet_ops.db.session import with_retries
from bloodnet_ops.pseudonym import pseudonymise
from bloodnet_ops.reasons import Verdict
from bloodnet_ops.records import ObjectRef, StudyFinding, StudyResult, ValidationReport

#: Objects compared against the manifest per round trip; bounds memory for any listing size.
MANIFEST_CHUNK = 5000
#: Rows per INSERT statement in batched upserts.
UPSERT_BATCH = 1000
#: Site name stored when a study carries no InstitutionName.
UNKNOWN_SITE = "unknown"
#: Longest free-text detail stored (exception messages can be long; they are diagnostics).
MAX_DETAIL = 2000


# ---------------------------------------------------------------------------------------------
# helpers


def chunked(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Lists of up to ``size`` items, consuming ``items`` lazily."""
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def _table(model: type) -> Table:
    return model.__table__  # type: ignore[attr-defined,return-value]


def _upsert(
    conn: Connection,
    model: type,
    rows: Sequence[dict[str, Any]],
    keys: Sequence[str],
    *,
    update: Sequence[str] | None = None,
    touch: dict[str, str] | None = None,
) -> int:
    """Batched ``INSERT ... VALUES (...), (...) ON CONFLICT (keys) DO UPDATE``.

    Rows with the same key are collapsed (last wins), because PostgreSQL refuses to update one
    row twice in a statement. ``update`` lists the columns taken from the new row (default:
    every non-key column given); ``touch`` sets extra columns on update only, as SQL expressions
    written in this module (e.g. ``{"last_seen": "now()"}``), never from input.

    The statement is written once and the rows go through psycopg2's ``execute_values``:
    SQLAlchemy would send an upsert per row (its insertmanyvalues does not batch ON CONFLICT), and
    compiling a multi-row ``values()`` construct costs more than the database does.
    """
    if not rows:
        return 0
    from psycopg2.extras import Json, execute_values

    unique = list({tuple(r[k] for k in keys): r for r in rows}.values())
    table = _table(model)
    cols = list(unique[0])
    updates = list(update) if update is not None else [c for c in cols if c not in keys]
    q = conn.dialect.identifier_preparer.quote
    sets = [f"{q(c)} = EXCLUDED.{q(c)}" for c in updates]
    sets += [f"{q(c)} = {expr}" for c, expr in (touch or {}).items()]
    action = f"DO UPDATE SET {', '.join(sets)}" if sets else "DO NOTHING"
    sql = (
        f"INSERT INTO {q(table.name)} ({', '.join(q(c) for c in cols)}) VALUES %s "
        f"ON CONFLICT ({', '.join(q(k) for k in keys)}) {action}"
    )
    is_json = [isinstance(table.c[c].type, JSONB) for c in cols]
    values = [
        tuple(Json(r[c]) if js and r[c] is not None else r[c] for c, js in zip(cols, is_json,
                                                                             strict=True))
        for r in unique
    ]
    cursor = conn.connection.cursor()
    try:
        execute_values(cursor, sql, values, page_size=UPSERT_BATCH)
    finally:
        cursor.close()
    return len(unique)


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON: numpy scalars and arrays unwrapped, enums as their value,
    non-finite floats as ``None`` (JSONB has no NaN), anything else unknown as ``str``."""
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Enum):
        return jsonable(value.value)
    if isinstance(value, Decimal):
        return float(value) if value.is_finite() else None
    if isinstance(value, date | datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if hasattr(value, "tolist"):  # numpy scalar or array
        return jsonable(value.tolist())
    if hasattr(value, "item"):
        return jsonable(value.item())
    return str(value)


def _float(value: Any) -> float | None:
    if value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _study_date(text_value: str) -> date | None:
    """DICOM DA (``YYYYMMDD``) to a date; anything malformed is stored as unknown."""
    digits = (text_value or "").strip().replace("-", "").replace(".", "")
    if len(digits) != 8 or not digits.isdigit():
        return None
    try:
        return date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        return None


def _site(study: StudyResult) -> str:
    return (study.site or "").strip() or UNKNOWN_SITE


# ---------------------------------------------------------------------------------------------
# manifest (incremental discovery)


def manifest_changes(
    engine: Engine, source_uri: str, objects: Iterable[ObjectRef]
) -> list[ObjectRef]:
    """The objects that are new, changed (another ETag) or still ``pending`` since the last
    completed recording (:func:`manifest_record`) of ``source_uri``.

    New and changed objects are entered as ``pending``, so a run that dies before recording offers
    them again next time; unchanged ones only get ``last_seen`` refreshed. Works in chunks of
    :data:`MANIFEST_CHUNK`, so memory does not grow with the listing.
    """
    out: list[ObjectRef] = []
    for chunk in chunked(objects, MANIFEST_CHUNK):
        by_key = {o.key: o for o in chunk}
        out.extend(with_retries(lambda b=by_key: _manifest_chunk(engine, source_uri, b)))
    return out


def _manifest_chunk(
    engine: Engine, source_uri: str, by_key: dict[str, ObjectRef]
) -> list[ObjectRef]:
    t = _table(ObjectRecord)
    keys = list(by_key)
    with engine.begin() as conn:
        known = {
            row.key: (row.etag, row.status)
            for row in conn.execute(
                select(t.c.key, t.c.etag, t.c.status).where(
                    t.c.source_uri == source_uri, t.c.key.in_(keys)
                )
            )
        }
        changed = [
            o
            for k, o in by_key.items()
            if k not in known or known[k][0] != o.etag or known[k][1] == "pending"
        ]
        _upsert(
            conn,
            ObjectRecord,
            [
                {"source_uri": source_uri, "key": o.key, "etag": o.etag, "size": o.size,
                 "status": "pending"}
                for o in changed
            ],
            ("source_uri", "key"),
            update=("etag", "size", "status"),
            touch={"last_seen": "now()"},
        )
        changed_keys = {o.key for o in changed}
        unchanged = [k for k in keys if k in known and k not in changed_keys]
        if unchanged:
            conn.execute(
                update(t)
                .where(t.c.source_uri == source_uri, t.c.key.in_(unchanged))
                .values(last_seen=func.now())
            )
    return changed


def manifest_record(
    engine: Engine, source_uri: str, report: ValidationReport, run_id: str
) -> int:
    """Mark every object of ``report`` ``ingested`` (its study was accepted, with or without
    warnings), ``rejected`` (its study was rejected; reason codes joined by ``,``) or
    ``unreadable``. Returns the number of objects recorded."""

    def _do() -> int:
        with engine.begin() as conn:
            return _manifest_record(conn, source_uri, report, run_id)

    return with_retries(_do)


def _manifest_record(
    conn: Connection, source_uri: str, report: ValidationReport, run_id: str
) -> int:
    refs = {o.key: o for o in report.objects}
    rows: list[dict[str, Any]] = []
    for study in report.studies:
        rejected = study.verdict == Verdict.REJECT
        reason = ",".join(r.value for r in study.reasons) or None
        for key in study.keys:
            ref = refs.get(key)
            rows.append({
                "source_uri": source_uri, "key": key,
                "etag": ref.etag if ref else "", "size": ref.size if ref else 0,
                "status": "rejected" if rejected else "ingested",
                "study_uid": study.study_uid, "reason": reason, "run_id": run_id,
            })
    for u in report.unreadable:
        rows.append({
            "source_uri": source_uri, "key": u.key, "etag": u.etag, "size": u.size,
            "status": "unreadable", "study_uid": None, "reason": u.reason.value,
            "run_id": run_id,
        })
    if not rows:
        return 0
    # A key the report lists without its ObjectRef keeps the ETag discovery stored.
    etag = "CASE WHEN EXCLUDED.etag = '' THEN objects.etag ELSE EXCLUDED.etag END"
    size = "CASE WHEN EXCLUDED.etag = '' THEN objects.size ELSE EXCLUDED.size END"
    return _upsert(
        conn, ObjectRecord, rows, ("source_uri", "key"),
        update=("status", "study_uid", "reason", "run_id"),
        touch={"etag": etag, "size": size, "recorded_at": "now()", "last_seen": "now()"},
    )


def manifest_keys_for_studies(
    engine: Engine, source_uri: str, study_uids: Iterable[str], *,
    except_pending_under: str | None = None,
) -> list[ObjectRef]:
    """Every recorded object of the given studies, so an incremental run that sees one new slice
    of a known study can re-validate the whole study rather than a fragment of it.

    ``except_pending_under``: leave out the ``pending`` objects under this key prefix (``""``:
    all pending objects), i.e. those the caller is validating anyway."""
    uids = sorted(set(study_uids))
    if not uids:
        return []
    t = _table(ObjectRecord)
    where = [t.c.source_uri == source_uri]
    if except_pending_under is not None:
        prefix = except_pending_under.strip("/")
        pending = t.c.status == "pending"
        if prefix:
            pending = pending & t.c.key.startswith(prefix + "/", autoescape=True)
        where.append(~pending)
    out: list[ObjectRef] = []
    with engine.connect() as conn:
        for chunk in chunked(uids, MANIFEST_CHUNK):
            rows = conn.execute(
                select(t.c.key, t.c.etag, t.c.size)
                .where(*where, t.c.study_uid.in_(chunk))
                .order_by(t.c.key)
            )
            out.extend(ObjectRef(r.key, r.etag, int(r.size)) for r in rows)
    return sorted(out, key=lambda o: o.key)


def iter_pending(
    engine: Engine, source_uri: str, prefix: str | None = None, *, page: int = MANIFEST_CHUNK
) -> Iterator[ObjectRef]:
    """The manifest's ``pending`` objects of a source (optionally under a key prefix), by key,
    one page at a time (keyset pagination: short queries, no cursor held open while the
    caller works, and the caller may record objects as it goes)."""
    t = _table(ObjectRecord)
    where = [t.c.source_uri == source_uri, t.c.status == "pending"]
    prefix = (prefix or "").strip("/")
    if prefix:
        where.append(t.c.key.startswith(prefix + "/", autoescape=True))
    last: str | None = None
    while True:
        q = select(t.c.key, t.c.etag, t.c.size).where(*where)
        if last is not None:
            q = q.where(t.c.key > last)
        with engine.connect() as conn:
            rows = conn.execute(q.order_by(t.c.key).limit(page)).all()
        yield from (ObjectRef(r.key, r.etag, int(r.size)) for r in rows)
        if len(rows) < page:
            return
        last = rows[-1].key


def count_pending(engine: Engine, source_uri: str, prefix: str | None = None) -> int:
    """How many ``pending`` objects :func:`iter_pending` will give."""
    t = _table(ObjectRecord)
    where = [t.c.source_uri == source_uri, t.c.status == "pending"]
    prefix = (prefix or "").strip("/")
    if prefix:
        where.append(t.c.key.startswith(prefix + "/", autoescape=True))
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(t).where(*where)).scalar_one())


# ---------------------------------------------------------------------------------------------
# validation


def record_validation(
    engine: Engine, report: ValidationReport, *, source_uri: str, run_id: str
) -> dict[str, int]:
    """Persist a validation report in one transaction: sites, studies (pseudonymised patient and
    accession), the selected series, one verdict per study for ``run_id``, every expectation's
    outcome, quarantine rows for rejected studies and unreadable objects, HU statistics, and the
    manifest. Idempotent for a given ``run_id``. Returns rows written per table."""

    def _do() -> dict[str, int]:
        with engine.begin() as conn:
            return _record_validation(conn, report, source_uri, run_id)

    return with_retries(_do)


def _record_validation(
    conn: Connection, report: ValidationReport, source_uri: str, run_id: str
) -> dict[str, int]:
    studies = report.studies
    counts: dict[str, int] = {}
    now = "now()"
    counts["sites"] = _upsert(
        conn, Site, [{"site": _site(s)} for s in studies], ("site",),
        update=(), touch={"last_seen": now},
    )
    counts["studies"] = _upsert(
        conn,
        Study,
        [
            {
                "study_uid": s.study_uid,
                "site": _site(s),
                "patient_key": pseudonymise(s.patient_id),
                "accession_key": pseudonymise(s.accession_number),
                "study_date": _study_date(s.study_date),
                "source_uri": source_uri,
            }
            for s in studies
        ],
        ("study_uid",),
        touch={"last_seen": now},
    )
    selected = [s for s in studies if s.series_uid]
    counts["series"] = _upsert(
        conn,
        Series,
        [
            {
                "series_uid": s.series_uid,
                "study_uid": s.study_uid,
                "kernel": s.kernel or None,
                "manufacturer": s.manufacturer or None,
                "model": s.manufacturer_model or None,
                "n_instances": s.n_slices,
                "slice_thickness": _float(s.slice_thickness),
                "pixel_spacing": _float(s.pixel_spacing),
                "kvp": _float(s.kvp),
                "selected": True,
            }
            for s in selected
        ],
        ("series_uid",),
        touch={"last_seen": now},
    )
    if selected:  # a rerun that picks another series must leave one selected series per study
        ser = _table(Series)
        conn.execute(
            update(ser)
            .where(
                ser.c.study_uid.in_([s.study_uid for s in selected]),
                ser.c.series_uid.not_in([s.series_uid for s in selected]),
                ser.c.selected.is_(True),
            )
            .values(selected=False)
        )
    counts["validation_results"] = _upsert(
        conn,
        ValidationResult,
        [
            {
                "study_uid": s.study_uid,
                "run_id": run_id,
                "source_uri": source_uri,
                "series_uid": s.series_uid,
                "site": _site(s),
                "verdict": Verdict(s.verdict).value,
                "reasons": [r.value for r in s.reasons],
                "n_slices": s.n_slices,
            }
            for s in studies
        ],
        ("study_uid", "run_id"),
        touch={"validated_at": now},
    )
    vr = _table(ValidationResult)
    ids: dict[str, int] = {}
    for chunk in chunked([s.study_uid for s in studies], MANIFEST_CHUNK):
        rows = conn.execute(
            select(vr.c.study_uid, vr.c.id).where(vr.c.run_id == run_id, vr.c.study_uid.in_(chunk))
        )
        ids.update((uid, vid) for uid, vid in rows)
    counts["expectation_results"] = _upsert(
        conn,
        ExpectationResult,
        [
            {
                "validation_id": ids[s.study_uid],
                "study_uid": s.study_uid,
                "run_id": run_id,
                "site": _site(s),
                "ordinal": i,
                "suite": c.suite,
                "expectation": c.expectation,
                "column_name": c.column,
                "success": bool(c.success),
                "observed": jsonable(c.observed),
                "reason": c.reason.value if c.reason is not None else None,
            }
            for s in studies
            for i, c in enumerate(s.checks)
        ],
        ("validation_id", "ordinal"),
    )
    quarantine = [
        {
            "run_id": run_id, "source_uri": source_uri, "kind": "study", "ref": s.study_uid,
            "study_uid": s.study_uid, "object_key": None, "site": _site(s),
            "reason": s.reasons[0].value if s.reasons else "unknown",
            "reasons": [r.value for r in s.reasons], "detail": (s.detail or "")[:MAX_DETAIL],
        }
        for s in studies
        if s.verdict == Verdict.REJECT
    ] + [
        {
            "run_id": run_id, "source_uri": source_uri, "kind": "object", "ref": u.key,
            "study_uid": None, "object_key": u.key, "site": None, "reason": u.reason.value,
            "reasons": [u.reason.value], "detail": (u.detail or "")[:MAX_DETAIL],
        }
        for u in report.unreadable
    ]
    counts["quarantine"] = _upsert(conn, Quarantine, quarantine, ("run_id", "kind", "ref"))
    counts["hu_stats"] = _upsert(
        conn,
        HUStatsRow,
        [
            {
                "study_uid": s.study_uid,
                "run_id": run_id,
                "site": _site(s),
                "series_uid": s.series_uid,
                "air_peak": _float(s.hu.air_peak),
                "brain_median": _float(s.hu.brain_median),
                **{k: float(getattr(s.hu, k)) for k in ("p01", "p99", "min", "max", "mean", "std")},
            }
            for s in studies
            if s.hu is not None
        ],
        ("study_uid", "run_id"),
    )
    counts["objects"] = _manifest_record(conn, source_uri, report, run_id)
    return counts


# ---------------------------------------------------------------------------------------------
# models, runs and findings


def register_model_version(
    engine: Engine,
    *,
    model_version: str,
    weights_sha256: str,
    threshold: float,
    variant: str,
    metrics: dict[str, Any] | None = None,
) -> None:
    """Register (or refresh the threshold and metrics of) a model version.

    A version name is bound to one set of weights: registering it again with another SHA-256
    raises ``ValueError``, because the findings already stored under it would lose their
    provenance.
    """

    def _do() -> None:
        t = _table(ModelVersion)
        stmt = pg_insert(t).values(
            model_version=model_version, weights_sha256=weights_sha256,
            threshold=float(threshold), variant=variant, metrics=jsonable(metrics or {}),
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["model_version"],
            set_={"threshold": stmt.excluded.threshold, "variant": stmt.excluded.variant,
                  "metrics": stmt.excluded.metrics},
            where=t.c.weights_sha256 == stmt.excluded.weights_sha256,
        ).returning(t.c.model_version)
        with engine.begin() as conn:
            if conn.execute(stmt).first() is None:
                raise ValueError(
                    f"model version {model_version!r} is already registered with other weights"
                )

    with_retries(_do)


def start_inference_run(
    engine: Engine,
    *,
    run_id: str,
    source_uri: str,
    model_version: str | None = None,
    dag_run_id: str | None = None,
) -> None:
    """Open (or reopen, on a rerun) a screening run: status ``running``, no finish time."""

    def _do() -> None:
        t = _table(InferenceRun)
        stmt = pg_insert(t).values(
            run_id=run_id, source_uri=source_uri, model_version=model_version,
            dag_run_id=dag_run_id, status="running",
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["run_id"],
            set_={"source_uri": stmt.excluded.source_uri,
                  "model_version": stmt.excluded.model_version,
                  "dag_run_id": stmt.excluded.dag_run_id, "status": "running",
                  "started_at": func.now(), "finished_at": None},
        )
        with engine.begin() as conn:
            conn.execute(stmt)

    with_retries(_do)


def finish_inference_run(
    engine: Engine,
    *,
    run_id: str,
    status: str = "success",
    counts: dict[str, Any] | None = None,
    timings: dict[str, Any] | None = None,
) -> None:
    """Close a run with its status (``success`` or ``failed``), counts and timings (seconds)."""
    if status not in ("success", "failed"):
        raise ValueError(f"status must be 'success' or 'failed', got {status!r}")

    def _do() -> None:
        t = _table(InferenceRun)
        with engine.begin() as conn:
            res = conn.execute(
                update(t)
                .where(t.c.run_id == run_id)
                .values(status=status, finished_at=func.now(),
                        counts=jsonable(counts or {}), timings=jsonable(timings or {}))
            )
            if res.rowcount == 0:
                raise LookupError(f"no inference run {run_id!r}; call start_inference_run first")

    with_retries(_do)


@dataclass(slots=True)
class FindingRow:
    """One row of ``findings`` (every column except the surrogate id and the timestamps)."""

    series_uid: str
    model_version: str
    preprocessing_version: str
    study_uid: str
    site: str
    patient_key: str  #: pseudonym, never a raw PatientID
    probability: float
    positive: bool
    volume_ml: float
    weights_sha256: str
    run_id: str
    subtypes: dict[str, float] = field(default_factory=dict)
    input_etags: dict[str, str] = field(default_factory=dict)  #: object key -> ETag
    load_seconds: float = 0.0
    infer_seconds: float = 0.0
    seg_key: str | None = None
    sr_key: str | None = None

    @classmethod
    def from_finding(
        cls,
        finding: StudyFinding,
        study: StudyResult,
        *,
        model_version: str,
        weights_sha256: str,
        run_id: str,
        input_etags: dict[str, str] | None = None,
        preprocessing_version: str = PREPROCESSING_VERSION,
        seg_key: str | None = None,
        sr_key: str | None = None,
    ) -> FindingRow:
        """Build the row from the model's output and the study it scored (pseudonymising)."""
        return cls(
            series_uid=finding.series_uid,
            model_version=model_version,
            preprocessing_version=preprocessing_version,
            study_uid=finding.study_uid,
            site=_site(study),
            patient_key=pseudonymise(study.patient_id),
            probability=float(finding.probability),
            positive=bool(finding.positive),
            volume_ml=float(finding.volume_ml),
            weights_sha256=weights_sha256,
            run_id=run_id,
            subtypes={k: float(v) for k, v in finding.subtypes.items()},
            input_etags=dict(input_etags or {}),
            load_seconds=float(finding.load_seconds),
            infer_seconds=float(finding.infer_seconds),
            seg_key=seg_key,
            sr_key=sr_key,
        )


FINDING_KEY = ("series_uid", "model_version", "preprocessing_version")


def upsert_findings(engine: Engine, rows: Sequence[FindingRow]) -> int:
    """Insert or update findings keyed on (series_uid, model_version, preprocessing_version);
    ``created_at`` is kept, ``updated_at`` moves. Returns the number of distinct keys written."""
    if not rows:
        return 0
    payload = []
    for r in rows:
        d = dataclasses.asdict(r)
        d["subtypes"] = jsonable(d["subtypes"])
        d["probability"] = float(d["probability"])
        d["volume_ml"] = float(d["volume_ml"])
        payload.append(d)

    def _do() -> int:
        with engine.begin() as conn:
            return _upsert(conn, Finding, payload, FINDING_KEY, touch={"updated_at": "now()"})

    return with_retries(_do)


def findings_for_run(engine: Engine, run_id: str) -> list[FindingRow]:
    """The findings a run wrote, ordered by study and series UID."""
    t = _table(Finding)
    names = [f.name for f in dataclasses.fields(FindingRow)]
    with engine.connect() as conn:
        rows = conn.execute(
            select(*(t.c[n] for n in names))
            .where(t.c.run_id == run_id)
            .order_by(t.c.study_uid, t.c.series_uid)
        )
        return [FindingRow(**dict(r._mapping)) for r in rows]


# ---------------------------------------------------------------------------------------------
# counts (reports, tests, the demo)


CORE_TABLES = (
    "sites", "objects", "studies", "series", "validation_results", "expectation_results",
    "quarantine", "hu_stats", "model_versions", "inference_runs", "findings",
)


def table_counts(engine: Engine, tables: Sequence[str] = CORE_TABLES) -> dict[str, int]:
    """Row counts per table (names checked against the ORM metadata, never interpolated raw)."""
    from bloodnet_ops.db.base import Base

    out: dict[str, int] = {}
    with engine.connect() as conn:
        for name in tables:
            table = Base.metadata.tables.get(name)
            if table is None:
                raise ValueError(f"unknown table {name!r}")
            out[name] = int(conn.execute(select(func.count()).select_from(table)).scalar_one())
    return out
