"""Drift injected into one site from a given night (``generate_dataset(drift_site=...)``).

Kinds (:data:`DRIFT_KINDS`):

- ``scanner``: the site's scanners are replaced by a new one (:func:`.vendors.new_scanner_for`):
  another manufacturer, model, kernels and RescaleIntercept, thin slices, often another kVp;
- ``thin-slices``: the same scanners reconstruct 2 mm slices (a protocol change);
- ``population``: another case mix: :data:`POPULATION_POSITIVE_RATE` of the studies positive,
  larger bleeds (the largest of :data:`POPULATION_BLEED_DRAWS` lesion sets) and older patients.

Only plans change, never a study's seed, so a study that is not drifted is byte for byte what the
same seed writes without drift. :class:`DriftRecord` (``DIR/drift.json``) says what changed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from bloodnet_ops.synth.plan import StudyPlan
from bloodnet_ops.synth.vendors import BY_KEY, VendorProfile, new_scanner_for, thin_variant

DRIFT_KINDS: tuple[str, ...] = ("scanner", "population", "thin-slices")
#: Share of a drifted site's studies that are positive under ``population`` drift.
POPULATION_POSITIVE_RATE = 0.8
#: Lesion sets drawn per positive study under ``population`` drift (the largest is kept).
POPULATION_BLEED_DRAWS = 3
#: Years added to the patients' ages under ``population`` drift (capped at 99).
POPULATION_AGE_SHIFT = 10


def parse_date(value: dt.date | str) -> dt.date:
    """A date from a ``date`` or a ``YYYY-MM-DD`` / ``YYYYMMDD`` string."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    text = str(value).strip()
    for fmt in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return dt.datetime.strptime(text, fmt).date()
        except ValueError:
            pass
    raise ValueError(f"drift_from must be a date YYYY-MM-DD, got {value!r}")


@dataclass(frozen=True)
class DriftSpec:
    """Which site drifts, from which StudyDate on (inclusive), and how."""

    site: str
    start: dt.date
    kind: str = "scanner"

    def __post_init__(self) -> None:
        if self.kind not in DRIFT_KINDS:
            raise ValueError(f"drift kind must be one of {', '.join(DRIFT_KINDS)}, "
                             f"got {self.kind!r}")


def _acquisition(profiles: list[VendorProfile]) -> dict[str, list[Any]]:
    """The acquisition fields a profile fixes, as sorted lists (for the record)."""
    return {
        "profiles": sorted({p.key for p in profiles}),
        "manufacturers": sorted({p.manufacturer for p in profiles}),
        "models": sorted({p.model for p in profiles}),
        "kernels": sorted({p.soft_kernel for p in profiles}),
        "intercepts": sorted({p.intercept for p in profiles}),
        "slice_thicknesses": sorted({t for p in profiles for t in p.thicknesses}),
        "kvps": sorted({k for p in profiles for k in p.kvps}),
    }


@dataclass
class DriftRecord:
    """What was injected: written as ``DIR/drift.json``."""

    site: str
    start: str  #: first drifted StudyDate, YYYY-MM-DD
    kind: str
    first_night: str  #: the data set's first and last StudyDate, YYYY-MM-DD
    last_night: str
    studies: list[str] = field(default_factory=list)  #: drifted study UIDs, in plan order
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["n_studies"] = len(self.studies)
        return doc


def apply_drift(
    plans: list[StudyPlan], spec: DriftSpec, *, seed: int,
    site_scanners: tuple[VendorProfile, ...],
) -> tuple[list[StudyPlan], DriftRecord]:
    """Change the plans of ``spec.site``'s studies dated ``spec.start`` or later.

    Parameters
    ----------
    plans
        The data set's plans (:func:`.plan.plan_studies`).
    spec
        Site, first night and kind.
    seed
        The data set's seed: ``population`` drift draws from its own stream of it.
    site_scanners
        The site's own scanner profiles (what a new scanner must differ from).

    Raises
    ------
    ValueError
        For an unknown site, or a start not after the data set's first night or after its last
        (no reference to drift from, or nothing drifted).
    """
    sites = sorted({p.site for p in plans})
    if spec.site not in sites:
        raise ValueError(f"drift site {spec.site!r} is not one of {', '.join(sites)}")
    days = sorted({dt.datetime.strptime(p.study_date, "%Y%m%d").date() for p in plans})
    if not days[0] < spec.start <= days[-1]:
        raise ValueError(
            f"drift_from {spec.start} must be after the first night {days[0]} and on or before "
            f"the last {days[-1]} (use more nights, or another date)"
        )
    start = spec.start.strftime("%Y%m%d")
    chosen = [i for i, p in enumerate(plans) if p.site == spec.site and p.study_date >= start]
    before_profiles = list(site_scanners)
    record = DriftRecord(spec.site, spec.start.isoformat(), spec.kind, days[0].isoformat(),
                         days[-1].isoformat(), [plans[i].study_uid for i in chosen],
                         before=_acquisition(before_profiles))
    out = list(plans)
    if spec.kind == "scanner":
        new = new_scanner_for(site_scanners)
        for i in chosen:
            out[i] = replace(out[i], profile_key=new.key)
        record.after = _acquisition([new])
    elif spec.kind == "thin-slices":
        for i in chosen:
            out[i] = replace(out[i], profile_key=thin_variant(BY_KEY[out[i].profile_key]).key)
        record.after = _acquisition([thin_variant(p) for p in site_scanners])
    else:
        # Its own stream: the base plan's draws, and so every other study, stay as they were.
        rng = np.random.default_rng([seed, 0xD21F7])
        for i in chosen:
            pl = out[i]
            positive = bool(rng.random() < POPULATION_POSITIVE_RATE)
            out[i] = replace(
                pl, positive=positive, lead=pl.lead if positive else None,
                strong_mimics=pl.strong_mimics and not positive,
                patient_age=min(99, pl.patient_age + POPULATION_AGE_SHIFT),
                bleed_draws=POPULATION_BLEED_DRAWS if positive else 1,
            )
        site_before = [plans[i] for i in chosen]
        record.after = {
            "positive_rate": POPULATION_POSITIVE_RATE,
            "bleed_draws": POPULATION_BLEED_DRAWS,
            "age_shift": POPULATION_AGE_SHIFT,
            "planned_positives_before": sum(p.positive for p in site_before),
            "planned_positives_after": sum(out[i].positive for i in chosen),
        }
    return out, record
