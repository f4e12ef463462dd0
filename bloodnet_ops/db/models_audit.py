"""Audit and drift tables (SQLAlchemy 2 typed ORM) on the shared :class:`Base`.

- ``radiology_reads``: imported ground truth, keyed by a pseudonym; rows that match no screened
  study, or that are malformed, are kept with a reason (never dropped).
- ``audit_runs`` / ``audit_items`` / ``audit_metrics``: one retrospective audit, its discordance
  worklist and its per-site figures with 95 % CIs (kept per run, so trends can be drawn).
- ``adjudications``: a reviewer's verdict on a worklist item; it feeds the next audit's figures.
- ``drift_runs`` / ``drift_metrics`` / ``drift_alerts``: every drift statistic with its thresholds
  and status, and the alerts raised from them.

Migration: ``migrations/versions/0002_audit_drift.py``.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column

from bloodnet_ops.db.base import Base

READ_STATUSES = ("matched", "unmatched", "invalid")
AUDIT_KINDS = ("missed_by_reader", "missed_by_model", "reread_sample")
#: Reviewer outcomes. ``confirmed_miss``/``true_positive`` mean ICH is present, ``false_positive``/
#: ``true_negative`` mean it is absent; ``indeterminate``/``technical_failure`` leave the label
#: as it is.
ADJUDICATION_OUTCOMES = (
    "confirmed_miss",
    "true_positive",
    "false_positive",
    "true_negative",
    "indeterminate",
    "technical_failure",
)
DRIFT_FAMILIES = ("metadata", "hu", "score", "positive_rate", "reject_rate")
DRIFT_STATISTICS = ("PSI", "KS", "chi2", "CUSUM", "two_prop")
DRIFT_STATUSES = ("ok", "warn", "alert")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class RadiologyRead(Base):
    """One radiology read (ground truth for the audit), identifiers pseudonymised.

    ``read_key`` is the pseudonym of the accession number when there is one, else ``uid:<study
    UID>``, else a pseudonym of the row's content (an invalid row still gets a stable key, so a
    re-import updates it instead of adding a copy).
    """

    __tablename__ = "radiology_reads"
    __table_args__ = (
        UniqueConstraint("read_key"),
        CheckConstraint(_in("status", READ_STATUSES), name="status"),
        Index(None, "matched_study_uid"),
        Index(None, "accession_key"),
        Index(None, "site", "read_date"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    read_key: Mapped[str]
    accession_key: Mapped[str] = mapped_column(server_default="")  #: HMAC of AccessionNumber
    study_uid: Mapped[str | None]  #: as given in the reads file
    matched_study_uid: Mapped[str | None]  #: the screened study it resolved to
    site: Mapped[str | None]
    read_date: Mapped[date | None]
    reader_key: Mapped[str] = mapped_column(server_default="")  #: HMAC of the reader's name
    ich: Mapped[bool | None]  #: null only for an invalid row
    subtypes: Mapped[list[str]] = mapped_column(server_default="{}")
    report: Mapped[str | None]  #: free text, stored only when the import asks for it
    source: Mapped[str]  #: file or s3:// URI it came from
    row_number: Mapped[int] = mapped_column(Integer)  #: 1-based data row (header excluded)
    status: Mapped[str]
    matched: Mapped[bool] = mapped_column(server_default="false")
    unmatched_reason: Mapped[str | None]
    imported_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())


class AuditRun(Base):
    """One retrospective audit over a date window and one model version."""

    __tablename__ = "audit_runs"
    __table_args__ = (UniqueConstraint("run_key"), Index(None, "started_at"))

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    run_key: Mapped[str]  #: Airflow run id or a CLI-made key; rerunning the same key replaces
    started_at: Mapped[datetime] = mapped_column(server_default=func.now())
    finished_at: Mapped[datetime | None]
    date_from: Mapped[date | None]
    date_to: Mapped[date | None]
    model_version: Mapped[str | None]
    params: Mapped[dict[str, Any]] = mapped_column(server_default="{}")
    counts: Mapped[dict[str, Any]] = mapped_column(server_default="{}")


class AuditItem(Base):
    """One worklist entry: a discordant study or a random re-read sample, with output links."""

    __tablename__ = "audit_items"
    __table_args__ = (
        UniqueConstraint("audit_run_id", "study_uid", "kind"),
        CheckConstraint(_in("kind", AUDIT_KINDS), name="kind"),
        Index(None, "study_uid"),
        Index(None, "site", "kind"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    audit_run_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("audit_runs.id", ondelete="CASCADE")
    )
    study_uid: Mapped[str]
    site: Mapped[str]
    kind: Mapped[str]
    probability: Mapped[float | None] = mapped_column(Float)
    volume_ml: Mapped[float | None] = mapped_column(Float)
    rank: Mapped[int] = mapped_column(Integer)  #: 1 = review first, within (site, kind)
    read_ich: Mapped[bool | None]  #: the radiology read's label, null when there is no read
    model_version: Mapped[str | None]
    series_uid: Mapped[str | None]
    seg_key: Mapped[str | None]  #: object key of the DICOM SEG output
    sr_key: Mapped[str | None]  #: object key of the DICOM SR output


class Adjudication(Base):
    """A reviewer's verdict on one worklist item; the newest per (study, kind) is kept."""

    __tablename__ = "adjudications"
    __table_args__ = (
        UniqueConstraint("study_uid", "kind"),
        CheckConstraint(_in("kind", AUDIT_KINDS), name="kind"),
        CheckConstraint(_in("outcome", ADJUDICATION_OUTCOMES), name="outcome"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    study_uid: Mapped[str]
    kind: Mapped[str]
    outcome: Mapped[str]
    reviewer_key: Mapped[str] = mapped_column(server_default="")  #: HMAC of the reviewer
    note: Mapped[str] = mapped_column(server_default="")
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())


class AuditMetric(Base):
    """One figure of one audit run at one site (or ``overall``), with its 95 % CI."""

    __tablename__ = "audit_metrics"
    __table_args__ = (UniqueConstraint("audit_run_id", "site", "metric"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    audit_run_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("audit_runs.id", ondelete="CASCADE")
    )
    site: Mapped[str]  #: a site name or 'overall'
    metric: Mapped[str]  #: sensitivity, specificity, ppv, npv, auc, reread_miss_rate, ...
    value: Mapped[float | None] = mapped_column(Float)  #: null when undefined (no cases)
    ci_lo: Mapped[float | None] = mapped_column(Float)
    ci_hi: Mapped[float | None] = mapped_column(Float)
    n: Mapped[int] = mapped_column(Integer)  #: the denominator
    method: Mapped[str] = mapped_column(server_default="")  #: wilson, delong, bootstrap, count


class DriftRun(Base):
    """One drift-monitor run; the windows are per site and stored on each metric row."""

    __tablename__ = "drift_runs"
    __table_args__ = (UniqueConstraint("run_key"), Index(None, "started_at"))

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    run_key: Mapped[str]
    started_at: Mapped[datetime] = mapped_column(server_default=func.now())
    finished_at: Mapped[datetime | None]
    params: Mapped[dict[str, Any]] = mapped_column(server_default="{}")
    counts: Mapped[dict[str, Any]] = mapped_column(server_default="{}")


class DriftMetric(Base):
    """One statistic for one (site, family, feature) comparing a recent with a reference window."""

    __tablename__ = "drift_metrics"
    __table_args__ = (
        UniqueConstraint("drift_run_id", "site", "family", "feature", "statistic"),
        CheckConstraint(_in("family", DRIFT_FAMILIES), name="family"),
        CheckConstraint(_in("statistic", DRIFT_STATISTICS), name="statistic"),
        CheckConstraint(_in("status", DRIFT_STATUSES), name="status"),
        Index(None, "site", "family", "feature"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    drift_run_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("drift_runs.id", ondelete="CASCADE")
    )
    site: Mapped[str]
    family: Mapped[str]
    feature: Mapped[str]
    statistic: Mapped[str]
    value: Mapped[float | None] = mapped_column(Float)  #: null when a window had too little data
    p_value: Mapped[float | None] = mapped_column(Float)
    threshold_warn: Mapped[float] = mapped_column(Float)
    threshold_alert: Mapped[float] = mapped_column(Float)
    status: Mapped[str]
    n_reference: Mapped[int] = mapped_column(Integer)
    n_recent: Mapped[int] = mapped_column(Integer)
    reference_from: Mapped[date | None]
    reference_to: Mapped[date | None]
    recent_from: Mapped[date | None]
    recent_to: Mapped[date | None]
    note: Mapped[str] = mapped_column(server_default="")
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class DriftAlert(Base):
    """An alert raised from a drift metric, with how the webhook delivery went."""

    __tablename__ = "drift_alerts"
    __table_args__ = (
        UniqueConstraint("drift_metric_id"),
        Index(None, "site", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    drift_run_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("drift_runs.id", ondelete="CASCADE")
    )
    drift_metric_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("drift_metrics.id", ondelete="CASCADE")
    )
    site: Mapped[str]
    family: Mapped[str]
    feature: Mapped[str]
    statistic: Mapped[str]
    value: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    delivery: Mapped[str] = mapped_column(server_default="")  #: sent | disabled | failed: ...
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


__all__ = [
    "ADJUDICATION_OUTCOMES",
    "AUDIT_KINDS",
    "DRIFT_FAMILIES",
    "DRIFT_STATISTICS",
    "DRIFT_STATUSES",
    "READ_STATUSES",
    "Adjudication",
    "AuditItem",
    "AuditMetric",
    "AuditRun",
    "DriftAlert",
    "DriftMetric",
    "DriftRun",
    "RadiologyRead",
]
