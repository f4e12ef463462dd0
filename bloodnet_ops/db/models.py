"""Core tables of the results database (SQLAlchemy 2 typed ORM).

The schema is defined here once; Alembic migrations are generated from these classes and a test
checks that the migrated database and this metadata do not differ. Audit and drift tables live in
:mod:`bloodnet_ops.db.models_audit` on the same :class:`~bloodnet_ops.db.base.Base`.

Patient identifiers are stored only as keyed pseudonyms
(:func:`bloodnet_ops.pseudonym.pseudonymise`).
Bulk writes go through :mod:`bloodnet_ops.db.repo` (``INSERT ... ON CONFLICT``), never row-by-row.

The ``rollup_*`` tables are per-run (and mostly per-site) sums of the big per-study tables, kept
exact by statement-level triggers (migration ``0003_dashboard_indexes``) so the dashboards read a
few thousand rows for a year instead of a few hundred thousand; nothing writes them directly.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from bloodnet_ops.db.base import Base

#: Manifest states of one object under a source.
OBJECT_STATUSES = ("pending", "ingested", "rejected", "unreadable")
VERDICTS = ("accept", "accept_with_warning", "reject")


def _now() -> Any:
    return func.now()


class Site(Base):
    """A hospital (DICOM InstitutionName as the pipeline reports it)."""

    __tablename__ = "sites"

    site: Mapped[str] = mapped_column(primary_key=True)
    first_seen: Mapped[datetime] = mapped_column(server_default=_now())
    last_seen: Mapped[datetime] = mapped_column(server_default=_now())


class ObjectRecord(Base):
    """The manifest: one row per object under a source, with the ETag last seen.

    ``pending`` means discovered but not yet recorded by a completed validation; the next
    discovery offers it again, so a crashed night loses nothing.
    """

    __tablename__ = "objects"
    __table_args__ = (
        UniqueConstraint("source_uri", "key"),
        CheckConstraint(
            "status IN ('pending', 'ingested', 'rejected', 'unreadable')", name="status"
        ),
        Index(None, "study_uid"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    source_uri: Mapped[str]
    key: Mapped[str]
    etag: Mapped[str]
    size: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(server_default="pending")
    study_uid: Mapped[str | None]
    reason: Mapped[str | None]
    run_id: Mapped[str | None]
    first_seen: Mapped[datetime] = mapped_column(server_default=_now())
    last_seen: Mapped[datetime] = mapped_column(server_default=_now())
    recorded_at: Mapped[datetime | None]


class Study(Base):
    """One study (by StudyInstanceUID); identifiers only as pseudonyms."""

    __tablename__ = "studies"
    __table_args__ = (
        Index(None, "site"),
        Index(None, "patient_key"),
        # The audit worklist sorts by exam date: looking it up for every worklist entry from the
        # index alone halves the page's cost.
        Index(None, "study_uid", postgresql_include=["study_date"]),
    )

    study_uid: Mapped[str] = mapped_column(primary_key=True)
    site: Mapped[str] = mapped_column(ForeignKey("sites.site"))
    patient_key: Mapped[str] = mapped_column(server_default="")  #: HMAC pseudonym of PatientID
    accession_key: Mapped[str] = mapped_column(server_default="")  #: pseudonym of AccessionNumber
    study_date: Mapped[date | None]
    source_uri: Mapped[str | None]
    first_seen: Mapped[datetime] = mapped_column(server_default=_now())
    last_seen: Mapped[datetime] = mapped_column(server_default=_now())


class Series(Base):
    """A series the pipeline looked at; ``selected`` marks the diagnostic one that is scored."""

    __tablename__ = "series"
    __table_args__ = (Index(None, "study_uid"),)

    series_uid: Mapped[str] = mapped_column(primary_key=True)
    study_uid: Mapped[str] = mapped_column(ForeignKey("studies.study_uid", ondelete="CASCADE"))
    modality: Mapped[str | None]
    description: Mapped[str | None]
    kernel: Mapped[str | None]
    manufacturer: Mapped[str | None]
    model: Mapped[str | None]
    n_instances: Mapped[int] = mapped_column(Integer, server_default="0")
    slice_thickness: Mapped[float | None] = mapped_column(Float)  #: mm
    pixel_spacing: Mapped[float | None] = mapped_column(Float)  #: mm (row spacing)
    kvp: Mapped[float | None] = mapped_column(Float)
    selected: Mapped[bool] = mapped_column(server_default="false")
    first_seen: Mapped[datetime] = mapped_column(server_default=_now())
    last_seen: Mapped[datetime] = mapped_column(server_default=_now())


class ValidationResult(Base):
    """One verdict per (study, run): per-night pass/warn/reject rates come from these rows."""

    __tablename__ = "validation_results"
    __table_args__ = (
        UniqueConstraint("study_uid", "run_id"),
        CheckConstraint(
            "verdict IN ('accept', 'accept_with_warning', 'reject')", name="verdict"
        ),
        Index(None, "run_id"),
        Index(None, "validated_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    study_uid: Mapped[str] = mapped_column(ForeignKey("studies.study_uid", ondelete="CASCADE"))
    run_id: Mapped[str]
    source_uri: Mapped[str]
    series_uid: Mapped[str | None]
    verdict: Mapped[str]
    #: The study's site as this run saw it (copied from the study so per-site figures need no
    #: join; a later change of the study's site does not rewrite history).
    site: Mapped[str]
    reasons: Mapped[list[str]] = mapped_column(server_default="{}")
    n_slices: Mapped[int] = mapped_column(Integer, server_default="0")
    #: ``[[key, etag], ...]`` of the chosen series in slice order: what inference fetches.
    series_objects: Mapped[list[list[str]] | None] = mapped_column(
        JSONB, comment="[[key, etag], ...] of the chosen series, in slice order")
    validated_at: Mapped[datetime] = mapped_column(server_default=_now())


class ExpectationResult(Base):
    """One expectation's outcome for one study and run (which check failed, and what it saw)."""

    __tablename__ = "expectation_results"
    __table_args__ = (
        UniqueConstraint("validation_id", "ordinal"),
        Index(None, "study_uid", "run_id"),
        Index(None, "created_at"),
        # Failures are ~2 % of the rows and the only ones the dashboards read, per run: this
        # index alone answers the failure lists and counts (index-only scans; a year holds tens
        # of thousands of failures, each on its own heap page).
        Index(
            None,
            "run_id",
            postgresql_where=text("NOT success"),
            postgresql_include=[
                "id", "study_uid", "site", "suite", "expectation", "column_name", "created_at"
            ],
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    validation_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("validation_results.id", ondelete="CASCADE")
    )
    study_uid: Mapped[str]
    run_id: Mapped[str]
    site: Mapped[str]  #: the study's site as this run saw it (as on its validation result)
    ordinal: Mapped[int] = mapped_column(Integer)  #: position in StudyResult.checks
    suite: Mapped[str]
    expectation: Mapped[str]
    column_name: Mapped[str | None]
    success: Mapped[bool]
    observed: Mapped[Any] = mapped_column(JSONB, nullable=True)  #: any JSON value
    reason: Mapped[str | None]
    created_at: Mapped[datetime] = mapped_column(server_default=_now())


class Quarantine(Base):
    """A rejected study or an unreadable object, with its reason codes, per run."""

    __tablename__ = "quarantine"
    __table_args__ = (
        UniqueConstraint("run_id", "kind", "ref"),
        CheckConstraint("kind IN ('study', 'object')", name="kind"),
        Index(None, "reason"),
        Index(None, "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    run_id: Mapped[str]
    source_uri: Mapped[str]
    kind: Mapped[str]  #: 'study' or 'object'
    ref: Mapped[str]  #: the study UID or the object key
    study_uid: Mapped[str | None]
    object_key: Mapped[str | None]
    site: Mapped[str | None]  #: the study's site; NULL for an object whose header was unreadable
    reason: Mapped[str]  #: the first (primary) reason code
    reasons: Mapped[list[str]] = mapped_column(server_default="{}")
    detail: Mapped[str] = mapped_column(server_default="")
    created_at: Mapped[datetime] = mapped_column(server_default=_now())


class HUStatsRow(Base):
    """HU statistics of the selected series per study and run (HU units)."""

    __tablename__ = "hu_stats"
    __table_args__ = (Index(None, "run_id"),)

    study_uid: Mapped[str] = mapped_column(
        ForeignKey("studies.study_uid", ondelete="CASCADE"), primary_key=True
    )
    run_id: Mapped[str] = mapped_column(primary_key=True)
    site: Mapped[str]  #: the study's site as this run saw it
    series_uid: Mapped[str | None]
    air_peak: Mapped[float | None] = mapped_column(Float)
    brain_median: Mapped[float | None] = mapped_column(Float)
    p01: Mapped[float] = mapped_column(Float)
    p99: Mapped[float] = mapped_column(Float)
    min: Mapped[float] = mapped_column(Float)
    max: Mapped[float] = mapped_column(Float)
    mean: Mapped[float] = mapped_column(Float)
    std: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(server_default=_now())


class ModelVersion(Base):
    """A model that produced findings; weights are identified by their SHA-256."""

    __tablename__ = "model_versions"

    model_version: Mapped[str] = mapped_column(primary_key=True)
    weights_sha256: Mapped[str]
    threshold: Mapped[float] = mapped_column(Float)
    variant: Mapped[str]
    metrics: Mapped[dict[str, Any]] = mapped_column(server_default="{}")
    created_at: Mapped[datetime] = mapped_column(server_default=_now())


class InferenceRun(Base):
    """One screening run (a night, a backfill or a CLI ``screen``)."""

    __tablename__ = "inference_runs"
    __table_args__ = (
        CheckConstraint("status IN ('running', 'success', 'failed')", name="status"),
    )

    run_id: Mapped[str] = mapped_column(primary_key=True)
    source_uri: Mapped[str]
    dag_run_id: Mapped[str | None]
    model_version: Mapped[str | None] = mapped_column(ForeignKey("model_versions.model_version"))
    status: Mapped[str] = mapped_column(server_default="running")
    started_at: Mapped[datetime] = mapped_column(server_default=_now())
    finished_at: Mapped[datetime | None]
    counts: Mapped[dict[str, Any]] = mapped_column(server_default="{}")
    timings: Mapped[dict[str, Any]] = mapped_column(server_default="{}")


class Finding(Base):
    """The model's study-level result with provenance; one row per (series, model, preprocessing).

    Reruns upsert on that key, so a repeated night leaves the same rows and two model versions can
    score the same series side by side.
    """

    __tablename__ = "findings"
    __table_args__ = (
        UniqueConstraint("series_uid", "model_version", "preprocessing_version"),
        Index(None, "study_uid"),
        Index(None, "site", "created_at"),
        Index(None, "run_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    series_uid: Mapped[str]
    model_version: Mapped[str] = mapped_column(ForeignKey("model_versions.model_version"))
    preprocessing_version: Mapped[str]
    study_uid: Mapped[str]
    site: Mapped[str]
    patient_key: Mapped[str] = mapped_column(server_default="")
    probability: Mapped[float] = mapped_column(Float)
    positive: Mapped[bool]
    volume_ml: Mapped[float] = mapped_column(Float)  #: mL of segmented blood
    subtypes: Mapped[dict[str, float]] = mapped_column(server_default="{}")
    weights_sha256: Mapped[str]
    input_etags: Mapped[dict[str, str]] = mapped_column(server_default="{}")  #: key -> ETag
    run_id: Mapped[str]
    load_seconds: Mapped[float] = mapped_column(Float, server_default="0")
    infer_seconds: Mapped[float] = mapped_column(Float, server_default="0")
    seg_key: Mapped[str | None]
    sr_key: Mapped[str | None]
    created_at: Mapped[datetime] = mapped_column(server_default=_now())
    updated_at: Mapped[datetime] = mapped_column(server_default=_now())


# ---------------------------------------------------------------------------------------------
# Rollups. One row per (run, site, day[, ...]): ``day`` is the UTC date of the rows' own
# timestamp, used as their night only when the run has no ``inference_runs`` row (the views'
# rule). The counts are deltas applied by triggers, so a group that loses all its rows stays
# with zeros (the writer role may not DELETE); the views skip such rows.


def _count() -> Any:
    return mapped_column(Integer, server_default="0")


def _sum() -> Any:
    return mapped_column(Float, server_default="0")


class ValidationRollup(Base):
    """Verdict counts of ``validation_results`` per run, site and day."""

    __tablename__ = "rollup_validation"

    run_id: Mapped[str] = mapped_column(primary_key=True)
    site: Mapped[str] = mapped_column(primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    studies: Mapped[int] = _count()
    accepted: Mapped[int] = _count()
    warned: Mapped[int] = _count()
    rejected: Mapped[int] = _count()


class FindingRollup(Base):
    """Findings per run, site, model version and day, with every study's time (load + infer, s),
    sorted: the multiset, not a summary, so medians over any set of nights stay exact."""

    __tablename__ = "rollup_findings"

    run_id: Mapped[str] = mapped_column(primary_key=True)
    site: Mapped[str] = mapped_column(primary_key=True)
    model_version: Mapped[str] = mapped_column(primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    scored: Mapped[int] = _count()
    positives: Mapped[int] = _count()
    seconds: Mapped[list[float]] = mapped_column(ARRAY(Float), server_default="{}")


class RunSecondsRollup(Base):
    """All of a run's study times (load + infer, s) per day, sorted: the median of a night with
    one run is then a single array lookup instead of a sort of every study's time."""

    __tablename__ = "rollup_run_seconds"

    run_id: Mapped[str] = mapped_column(primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    scored: Mapped[int] = _count()
    seconds: Mapped[list[float]] = mapped_column(ARRAY(Float), server_default="{}")


class HURollup(Base):
    """Sums of ``hu_stats`` per run, site and day (HU); averages are sum / count."""

    __tablename__ = "rollup_hu"

    run_id: Mapped[str] = mapped_column(primary_key=True)
    site: Mapped[str] = mapped_column(primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    n: Mapped[int] = _count()
    air_peak_n: Mapped[int] = _count()  #: rows with an air peak (it may be NULL)
    air_peak_sum: Mapped[float] = _sum()
    brain_median_n: Mapped[int] = _count()
    brain_median_sum: Mapped[float] = _sum()
    p01_sum: Mapped[float] = _sum()
    p99_sum: Mapped[float] = _sum()
    mean_sum: Mapped[float] = _sum()
    std_sum: Mapped[float] = _sum()


class FailedExpectationRollup(Base):
    """Failed expectations per run, site and day (the dashboards find runs without an
    ``inference_runs`` row through these small tables instead of scanning the big ones)."""

    __tablename__ = "rollup_failed_expectations"

    run_id: Mapped[str] = mapped_column(primary_key=True)
    site: Mapped[str] = mapped_column(primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    n: Mapped[int] = _count()


class QuarantineRollup(Base):
    """Quarantined items per run, site ('' = unknown), day, kind and primary reason."""

    __tablename__ = "rollup_quarantine"

    run_id: Mapped[str] = mapped_column(primary_key=True)
    site: Mapped[str] = mapped_column(primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    kind: Mapped[str] = mapped_column(primary_key=True)
    reason: Mapped[str] = mapped_column(primary_key=True)
    n: Mapped[int] = _count()


__all__ = [
    "OBJECT_STATUSES",
    "VERDICTS",
    "Base",
    "ExpectationResult",
    "FailedExpectationRollup",
    "Finding",
    "FindingRollup",
    "HURollup",
    "HUStatsRow",
    "InferenceRun",
    "ModelVersion",
    "ObjectRecord",
    "Quarantine",
    "QuarantineRollup",
    "RunSecondsRollup",
    "Series",
    "Site",
    "Study",
    "ValidationResult",
    "ValidationRollup",
]
