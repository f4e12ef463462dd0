"""Validation's rows: sites, studies (pseudonymised), series, verdicts, expectation outcomes,
quarantine and HU statistics, with the manifest, in one transaction per report.

Raw patient identifiers are pseudonymised here, at the last step before the database
(:func:`bloodnet_ops.pseudonym.pseudonymise`).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, Engine, select, update

from bloodnet_ops.db.manifest import manifest_record_conn
from bloodnet_ops.db.models import (
    ExpectationResult,
    HUStatsRow,
    Quarantine,
    Series,
    Site,
    Study,
    ValidationResult,
)
from bloodnet_ops.db.session import with_retries
from bloodnet_ops.db.upsert import (
    MANIFEST_CHUNK,
    MAX_DETAIL,
    as_float,
    chunked,
    jsonable,
    site_of,
    study_date_of,
    table_of,
    upsert,
)
from bloodnet_ops.pseudonym import pseudonymise
from bloodnet_ops.reasons import Verdict
from bloodnet_ops.records import StudyResult, ValidationReport


def record_validation(
    engine: Engine, report: ValidationReport, *, source_uri: str, run_id: str,
    studies_known: bool = False,
) -> dict[str, int]:
    """Persist a validation report in one transaction: sites, studies (pseudonymised patient and
    accession), the selected series, one verdict per study for ``run_id``, every expectation's
    outcome, quarantine rows for rejected studies and unreadable objects, HU statistics, and the
    manifest. Idempotent for a given ``run_id``. Returns rows written per table."""

    def _do() -> dict[str, int]:
        with engine.begin() as conn:
            return _record_validation(conn, report, source_uri, run_id, studies_known)

    return with_retries(_do)


def _series_objects(study: StudyResult, etags: dict[str, str]) -> list[list[str]] | None:
    """``[[key, etag], ...]`` of the chosen series in slice order (what inference fetches); a
    key the report holds no ETag for keeps ``""``, i.e. "as discovered"."""
    if not study.series_uid or not study.series_keys:
        return None
    return [[key, etags.get(key, "")] for key in study.series_keys]


def _record_validation(
    conn: Connection, report: ValidationReport, source_uri: str, run_id: str,
    studies_known: bool = False,
) -> dict[str, int]:
    studies = report.studies
    etags = {o.key: o.etag for o in report.objects}
    counts: dict[str, int] = {}
    if not studies_known:  # studies read back from the database carry no header fields
        counts.update(_record_studies(conn, studies, source_uri))
    counts.update(_record_verdicts(conn, report, source_uri, run_id, etags))
    counts["objects"] = manifest_record_conn(conn, source_uri, report, run_id)
    return counts


def _record_studies(conn: Connection, studies: Sequence[StudyResult], source_uri: str
                    ) -> dict[str, int]:
    """Sites, studies (pseudonymised) and the selected series, from the headers."""
    counts: dict[str, int] = {}
    now = "now()"
    counts["sites"] = upsert(
        conn, Site, [{"site": site_of(s)} for s in studies], ("site",),
        update=(), touch={"last_seen": now},
    )
    counts["studies"] = upsert(
        conn,
        Study,
        [
            {
                "study_uid": s.study_uid,
                "site": site_of(s),
                "patient_key": pseudonymise(s.patient_id),
                "accession_key": pseudonymise(s.accession_number),
                "study_date": study_date_of(s.study_date),
                "source_uri": source_uri,
            }
            for s in studies
        ],
        ("study_uid",),
        touch={"last_seen": now},
    )
    selected = [s for s in studies if s.series_uid]
    counts["series"] = upsert(
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
                "slice_thickness": as_float(s.slice_thickness),
                "pixel_spacing": as_float(s.pixel_spacing),
                "kvp": as_float(s.kvp),
                "selected": True,
            }
            for s in selected
        ],
        ("series_uid",),
        touch={"last_seen": now},
    )
    if selected:  # a rerun that picks another series must leave one selected series per study
        ser = table_of(Series)
        conn.execute(
            update(ser)
            .where(
                ser.c.study_uid.in_([s.study_uid for s in selected]),
                ser.c.series_uid.not_in([s.series_uid for s in selected]),
                ser.c.selected.is_(True),
            )
            .values(selected=False)
        )
    return counts


def _record_verdicts(conn: Connection, report: ValidationReport, source_uri: str, run_id: str,
                     etags: dict[str, str]) -> dict[str, int]:
    """One verdict per study for ``run_id``, its expectations, quarantine and HU statistics."""
    studies = report.studies
    counts: dict[str, int] = {}
    now = "now()"
    counts["validation_results"] = upsert(
        conn,
        ValidationResult,
        [
            {
                "study_uid": s.study_uid,
                "run_id": run_id,
                "source_uri": source_uri,
                "series_uid": s.series_uid,
                "site": site_of(s),
                "verdict": Verdict(s.verdict).value,
                "reasons": [r.value for r in s.reasons],
                "n_slices": s.n_slices,
                "series_objects": _series_objects(s, etags),
            }
            for s in studies
        ],
        ("study_uid", "run_id"),
        touch={"validated_at": now},
    )
    vr = table_of(ValidationResult)
    ids: dict[str, int] = {}
    for chunk in chunked([s.study_uid for s in studies], MANIFEST_CHUNK):
        rows = conn.execute(
            select(vr.c.study_uid, vr.c.id).where(vr.c.run_id == run_id, vr.c.study_uid.in_(chunk))
        )
        ids.update((uid, vid) for uid, vid in rows)
    counts["expectation_results"] = upsert(
        conn,
        ExpectationResult,
        [
            {
                "validation_id": ids[s.study_uid],
                "study_uid": s.study_uid,
                "run_id": run_id,
                "site": site_of(s),
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
            "study_uid": s.study_uid, "object_key": None, "site": site_of(s),
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
    counts["quarantine"] = upsert(conn, Quarantine, quarantine, ("run_id", "kind", "ref"))
    counts["hu_stats"] = upsert(
        conn,
        HUStatsRow,
        [
            {
                "study_uid": s.study_uid,
                "run_id": run_id,
                "site": site_of(s),
                "series_uid": s.series_uid,
                "air_peak": as_float(s.hu.air_peak),
                "brain_median": as_float(s.hu.brain_median),
                **{k: float(getattr(s.hu, k)) for k in ("p01", "p99", "min", "max", "mean", "std")},
            }
            for s in studies
            if s.hu is not None
        ],
        ("study_uid", "run_id"),
    )
    return counts
