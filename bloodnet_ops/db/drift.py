"""The drift monitor's tables, and the per-study values it compares (read from validation,
HU statistics and findings)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from sqlalchemy import Date, and_, cast, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from bloodnet_ops.db.models import Finding, HUStatsRow, Series, Study, ValidationResult
from bloodnet_ops.db.models_audit import DriftAlert, DriftMetric, DriftRun
from bloodnet_ops.drift.features import (
    ACCEPTED,
    CHUNK,
    HU_FEATURES,
    METADATA_FEATURES,
    StudyPoint,
    category,
)
from bloodnet_ops.drift.windows import Windows


def _latest_validation():
    """The newest validation of every study (a re-validated study counts once)."""
    return (
        select(ValidationResult)
        .order_by(ValidationResult.study_uid, ValidationResult.validated_at.desc(),
                  ValidationResult.id.desc())
        .distinct(ValidationResult.study_uid)
        .subquery()
    )


def _night(latest):
    return func.coalesce(Study.study_date, cast(latest.c.validated_at, Date))


def site_nights(session: Session) -> dict[str, list[date]]:
    """The nights (distinct study days) of every site, ascending."""
    latest = _latest_validation()
    night = _night(latest).label("night")
    out: dict[str, list[date]] = {}
    rows = session.execute(
        select(Study.site, night).join(latest, latest.c.study_uid == Study.study_uid)
        .distinct().order_by(Study.site, night)
    )
    for site, day in rows:
        out.setdefault(site, []).append(day)
    return out


def load_points(
    session: Session, *, model_version: str | None, windows: Mapping[str, Windows]
) -> list[StudyPoint]:
    """The studies of each site's two windows, with their newest validation and the newest finding
    of ``model_version``. Only those nights are read, so a year of history costs little."""
    if not windows:
        return []
    latest = _latest_validation()
    night = _night(latest)
    in_windows = or_(*(
        and_(Study.site == site, or_(night.between(w.reference_from, w.reference_to),
                                     night.between(w.recent_from, w.recent_to)))
        for site, w in windows.items()
    ))
    q = (
        select(latest.c.study_uid, Study.site, night.label("night"), latest.c.verdict,
               latest.c.reasons,
               *(getattr(Series, f) for f in METADATA_FEATURES),
               *(getattr(HUStatsRow, f).label(f"hu_{f}") for f in HU_FEATURES),
               HUStatsRow.study_uid.label("hu_study"))
        .join(Study, Study.study_uid == latest.c.study_uid)
        .outerjoin(Series, Series.series_uid == latest.c.series_uid)
        .outerjoin(HUStatsRow, and_(HUStatsRow.study_uid == latest.c.study_uid,
                                    HUStatsRow.run_id == latest.c.run_id))
        .where(in_windows)
    )
    rows = session.execute(q).mappings().all()
    scores: dict[str, tuple[float, bool]] = {}
    uids = [r["study_uid"] for r in rows if r["verdict"] in ACCEPTED]
    for start in range(0, len(uids) if model_version else 0, CHUNK):
        for uid, p, pos in session.execute(
            select(Finding.study_uid, Finding.probability, Finding.positive)
            .where(Finding.model_version == model_version,
                   Finding.study_uid.in_(uids[start : start + CHUNK]))
            .order_by(Finding.study_uid, Finding.updated_at.desc(), Finding.id.desc())
            .distinct(Finding.study_uid)
        ):
            scores[uid] = (float(p), bool(pos))
    points = []
    for r in rows:
        accepted = r["verdict"] in ACCEPTED
        hu = ({f: r[f"hu_{f}"] for f in HU_FEATURES}
              if accepted and r["hu_study"] is not None else None)
        score = scores.get(r["study_uid"]) if accepted else None
        points.append(StudyPoint(
            site=r["site"], night=r["night"], verdict=r["verdict"],
            reasons=tuple(r["reasons"] or ()),
            metadata={f: category(r[f]) for f in METADATA_FEATURES},
            hu=hu,
            probability=score[0] if score else None,
            positive=score[1] if score else None,
        ))
    return points


def store_drift_run(session: Session, *, run_key: str, params: dict[str, Any],
                    sites: dict[str, list[Any]], counts: dict[str, int]) -> tuple[int, list[tuple[int, Any]]]:
    """The run (upserted on ``run_key``) and its metrics; returns the run id and each stored
    metric with its row id. The same key replaces the earlier result."""
    stmt = insert(DriftRun).values(run_key=run_key, params=params, counts=counts,
                                   finished_at=func.now())
    stmt = stmt.on_conflict_do_update(
        index_elements=["run_key"],
        set_={"params": stmt.excluded.params, "counts": stmt.excluded.counts,
              "started_at": func.now(), "finished_at": func.now()},
    ).returning(DriftRun.id)
    run_id = int(session.execute(stmt).scalar_one())
    session.execute(delete(DriftMetric).where(DriftMetric.drift_run_id == run_id))
    rows = [m for ms in sites.values() for m in ms]
    stored: list[tuple[int, Any]] = []
    for start in range(0, len(rows), 1000):
        chunk = rows[start : start + 1000]
        stmt = insert(DriftMetric).returning(DriftMetric.id, sort_by_parameter_order=True)
        ids = session.execute(stmt, [
            {"drift_run_id": run_id, "site": m.site, "family": m.family, "feature": m.feature,
             "statistic": m.statistic, "value": m.value, "p_value": m.p_value,
             "threshold_warn": m.threshold_warn, "threshold_alert": m.threshold_alert,
             "status": m.status, "n_reference": m.n_reference, "n_recent": m.n_recent,
             "reference_from": m.windows.reference_from, "reference_to": m.windows.reference_to,
             "recent_from": m.windows.recent_from, "recent_to": m.windows.recent_to,
             "note": m.note}
            for m in chunk
        ]).scalars().all()
        stored.extend(zip(ids, chunk, strict=True))
    return run_id, stored


def insert_alerts(session: Session, *, drift_run_id: int, alerts: Sequence[tuple[int, Any]]
                  ) -> None:
    """One row per alert (``(metric row id, Alert)``), delivery ``pending``."""
    session.execute(insert(DriftAlert), [
        {"drift_run_id": drift_run_id, "drift_metric_id": mid, "site": a.site,
         "family": a.family, "feature": a.feature, "statistic": a.statistic,
         "value": a.value, "threshold": a.threshold, "delivery": "pending"}
        for mid, a in alerts
    ])


def set_alert_delivery(session: Session, *, drift_run_id: int, delivery: str) -> None:
    """What the webhook answered, on every alert of the run."""
    session.execute(update(DriftAlert).where(DriftAlert.drift_run_id == drift_run_id)
                    .values(delivery=delivery))
