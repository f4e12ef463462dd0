"""The audit's tables: the cases it reads (findings with reads and adjudications), its runs,
worklists and figures, and the reviewers' adjudications."""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from typing import Any

from sqlalchemy import Date, cast, delete, func, or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from bloodnet_ops.audit.figures import SiteFigures
from bloodnet_ops.audit.worklist import AuditCase, WorklistItem
from bloodnet_ops.db.models import Finding, Study
from bloodnet_ops.db.models_audit import (
    Adjudication,
    AuditItem,
    AuditMetric,
    AuditRun,
    RadiologyRead,
)

#: "The database's now", for a column a caller sets at write time.
NOW = func.now()


def _study_day():
    """A study's day: its DICOM StudyDate, else the day it was scored."""
    return func.coalesce(Study.study_date, cast(Finding.created_at, Date))


def load_cases(
    session: Session, *, model_version: str, date_from: date | None, date_to: date | None
) -> list[AuditCase]:
    """One case per study scored by ``model_version`` in the window (the newest finding wins
    when a study has several, e.g. two preprocessing versions), with its read and adjudications."""
    day = _study_day()
    q = (
        select(Finding)
        .join(Study, Study.study_uid == Finding.study_uid)
        .where(Finding.model_version == model_version)
        .order_by(Finding.study_uid, Finding.updated_at.desc(), Finding.id.desc())
        .distinct(Finding.study_uid)
    )
    if date_from:
        q = q.where(day >= date_from)
    if date_to:
        q = q.where(day <= date_to)
    findings = session.execute(q).scalars().all()
    uids = [f.study_uid for f in findings]
    reads: dict[str, bool] = {}
    adjs: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for chunk in (uids[i : i + 5000] for i in range(0, len(uids), 5000)):
        # Several reads of one study (by UID and by accession): the newest read wins.
        for uid, ich in session.execute(
            select(RadiologyRead.matched_study_uid, RadiologyRead.ich)
            .where(RadiologyRead.matched_study_uid.in_(chunk), RadiologyRead.matched.is_(True))
            .order_by(RadiologyRead.matched_study_uid, RadiologyRead.read_date.desc().nulls_last(),
                      RadiologyRead.updated_at.desc())
            .distinct(RadiologyRead.matched_study_uid)
        ):
            reads[uid] = bool(ich)
        for uid, kind, outcome in session.execute(
            select(Adjudication.study_uid, Adjudication.kind, Adjudication.outcome)
            .where(Adjudication.study_uid.in_(chunk))
            .order_by(Adjudication.updated_at, Adjudication.id)
        ):
            adjs[uid].append((kind, outcome))
    return [
        AuditCase(
            study_uid=f.study_uid, site=f.site, series_uid=f.series_uid,
            model_version=f.model_version, probability=float(f.probability),
            positive=bool(f.positive), volume_ml=float(f.volume_ml),
            read_ich=reads.get(f.study_uid), seg_key=f.seg_key, sr_key=f.sr_key,
            adjudications=tuple(adjs.get(f.study_uid, ())),
        )
        for f in findings
    ]


def unmatched_reads(session: Session, *, date_from: date | None, date_to: date | None) -> int:
    """Reads in the window that matched no screened study."""
    q = select(func.count()).select_from(RadiologyRead).where(RadiologyRead.matched.is_(False))
    if date_from:
        q = q.where(or_(RadiologyRead.read_date.is_(None), RadiologyRead.read_date >= date_from))
    if date_to:
        q = q.where(or_(RadiologyRead.read_date.is_(None), RadiologyRead.read_date <= date_to))
    return int(session.execute(q).scalar_one())


def store_audit_run(session: Session, *, run: dict[str, Any], items: list[WorklistItem],
                    figures: list[SiteFigures]) -> int:
    """The run (upserted on ``run_key``), its worklist and its figures; returns the run id.
    The same key replaces the earlier result, so retries are idempotent."""
    stmt = insert(AuditRun).values(**run)
    stmt = stmt.on_conflict_do_update(
        index_elements=["run_key"],
        set_={k: stmt.excluded[k] for k in run if k != "run_key"} | {"started_at": func.now()},
    ).returning(AuditRun.id)
    run_id = int(session.execute(stmt).scalar_one())
    session.execute(delete(AuditItem).where(AuditItem.audit_run_id == run_id))
    session.execute(delete(AuditMetric).where(AuditMetric.audit_run_id == run_id))
    if items:
        session.execute(insert(AuditItem), [
            {"audit_run_id": run_id, "study_uid": it.study_uid, "site": it.site, "kind": it.kind,
             "probability": it.probability, "volume_ml": it.volume_ml, "rank": it.rank,
             "read_ich": it.read_ich, "model_version": it.model_version,
             "series_uid": it.series_uid, "seg_key": it.seg_key, "sr_key": it.sr_key}
            for it in items
        ])
    metric_rows = [
        {"audit_run_id": run_id, "site": fig.site, "metric": name, "value": est.value,
         "ci_lo": est.ci[0] if est.ci else None, "ci_hi": est.ci[1] if est.ci else None,
         "n": est.n, "method": est.method}
        for fig in figures
        for name, est in fig.estimates().items()
    ] + [
        {"audit_run_id": run_id, "site": fig.site, "metric": name, "value": float(value),
         "ci_lo": None, "ci_hi": None, "n": fig.n, "method": "count"}
        for fig in figures
        for name, value in (("n", fig.n), ("n_positive", fig.n_positive), ("tp", fig.tp),
                            ("fp", fig.fp), ("tn", fig.tn), ("fn", fig.fn))
    ]
    session.execute(insert(AuditMetric), metric_rows)
    return run_id


def on_worklist(session: Session, *, study_uid: str, kind: str) -> bool:
    """Whether any audit run listed ``study_uid`` with worklist ``kind``."""
    return session.execute(
        select(AuditItem.id).where(AuditItem.study_uid == study_uid, AuditItem.kind == kind)
        .limit(1)
    ).first() is not None


def upsert_adjudication(session: Session, *, study_uid: str, kind: str, outcome: str,
                        reviewer_key: str, note: str) -> Any:
    """Store or replace the adjudication of (study, kind); returns its ``updated_at``."""
    values = {"study_uid": study_uid, "kind": kind, "outcome": outcome,
              "reviewer_key": reviewer_key, "note": note}
    stmt = insert(Adjudication).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["study_uid", "kind"],
        set_={"outcome": stmt.excluded.outcome, "reviewer_key": stmt.excluded.reviewer_key,
              "note": stmt.excluded.note, "updated_at": func.now()},
    ).returning(Adjudication.updated_at)
    return session.execute(stmt).scalar_one()


def latest_audit(session: Session) -> tuple[Any, dict[str, int], list[Any]] | None:
    """The newest audit run, its worklist size by kind, and its headline metrics."""
    run = session.execute(
        select(AuditRun).order_by(AuditRun.started_at.desc(), AuditRun.id.desc()).limit(1)
    ).scalar_one_or_none()
    if run is None:
        return None
    kinds = dict(session.execute(
        select(AuditItem.kind, func.count()).where(AuditItem.audit_run_id == run.id)
        .group_by(AuditItem.kind)
    ).tuples().all())
    metrics = list(session.execute(
        select(AuditMetric).where(AuditMetric.audit_run_id == run.id,
                                  AuditMetric.metric.in_(("sensitivity", "specificity", "auc",
                                                          "n")))
    ).scalars())
    return run, kinds, metrics


def latest_drift(session: Session) -> tuple[Any, list[Any]] | None:
    """The newest drift run and its alerts."""
    from bloodnet_ops.db.models_audit import DriftAlert, DriftRun

    run = session.execute(
        select(DriftRun).order_by(DriftRun.started_at.desc(), DriftRun.id.desc()).limit(1)
    ).scalar_one_or_none()
    if run is None:
        return None
    alerts = session.execute(
        select(DriftAlert).where(DriftAlert.drift_run_id == run.id)
        .order_by(DriftAlert.site, DriftAlert.family, DriftAlert.feature)
    ).scalars().all()
    return run, list(alerts)
