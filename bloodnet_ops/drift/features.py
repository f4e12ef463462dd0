"""What the drift monitor compares, per site: one :class:`StudyPoint` per validated study.

Read from the results database: the newest validation of each study (verdict, reasons, the
selected series' acquisition metadata, the HU statistics of that validation) and the newest finding
of the monitored model version (probability, decision).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

from sqlalchemy import Date, and_, cast, func, or_, select
from sqlalchemy.orm import Session

from bloodnet_ops.db.models import Finding, HUStatsRow, Series, Study, ValidationResult
from bloodnet_ops.drift.windows import Windows

#: Acquisition metadata compared as categories (numbers are rounded first: scanners report
#: 0.48828125 mm and 0.488281 for the same spacing).
METADATA_FEATURES = ("manufacturer", "model", "kernel", "slice_thickness", "kvp", "pixel_spacing")
#: HU statistics of accepted studies, compared as distributions.
HU_FEATURES = ("air_peak", "brain_median", "p01", "p99", "mean", "std")
ACCEPTED = ("accept", "accept_with_warning")
#: Study UIDs per IN (...) query.
CHUNK = 5000


@dataclass(frozen=True, slots=True)
class StudyPoint:
    """One study's drift-relevant values."""

    site: str
    night: date
    verdict: str
    reasons: tuple[str, ...]
    metadata: dict[str, str | None]
    hu: dict[str, float | None] | None  #: None when rejected or not measured
    probability: float | None  #: None when not scored by the monitored model
    positive: bool | None


def _category(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value).strip() or None


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
            metadata={f: _category(r[f]) for f in METADATA_FEATURES},
            hu=hu,
            probability=score[0] if score else None,
            positive=score[1] if score else None,
        ))
    return points

