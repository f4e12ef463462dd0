"""What the drift monitor compares, per site: one :class:`StudyPoint` per validated study.

Read from the results database (:func:`bloodnet_ops.db.drift.load_points`): the newest validation of each study (verdict, reasons, the
selected series' acquisition metadata, the HU statistics of that validation) and the newest finding
of the monitored model version (probability, decision).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

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


def category(value: object) -> str | None:
    """A metadata value as the category it is compared as (floats rounded)."""
    if value is None:
        return None
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value).strip() or None
