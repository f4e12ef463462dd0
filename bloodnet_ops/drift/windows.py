"""Reference and recent windows of nights, per site.

A *night* is a study's day: its DICOM StudyDate, else the day it was validated. The nights of a site
are the distinct days on which it sent studies, so a site that sends nothing at weekends still gets
K nights of data in its recent window.

- reference: the site's first ``reference_nights`` nights, or a pinned period
  ``[reference_from, reference_to]`` (e.g. the validation period of the deployed model);
- recent: the site's last ``recent_nights`` nights after the reference.

The two never overlap; a site without enough nights gets no windows (reported, not compared).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """How to choose the windows (the same for every site)."""

    reference_nights: int = 14
    recent_nights: int = 7
    reference_from: date | None = None  #: pin the reference period (both ends, inclusive)
    reference_to: date | None = None

    def __post_init__(self) -> None:
        if self.reference_nights < 1 or self.recent_nights < 1:
            raise ValueError(
                f"windows need at least one night, got reference_nights={self.reference_nights}, "
                f"recent_nights={self.recent_nights}"
            )
        if (self.reference_from is None) != (self.reference_to is None):
            raise ValueError("a pinned reference needs both reference_from and reference_to")
        if self.reference_from and self.reference_to and self.reference_from > self.reference_to:
            raise ValueError(
                f"reference_from {self.reference_from} is after reference_to {self.reference_to}"
            )

    @property
    def pinned(self) -> bool:
        return self.reference_from is not None


@dataclass(frozen=True, slots=True)
class Windows:
    """The chosen windows of one site (inclusive dates) and their nights."""

    reference_from: date
    reference_to: date
    recent_from: date
    recent_to: date
    reference: tuple[date, ...]
    recent: tuple[date, ...]

    def which(self, night: date) -> str | None:
        """``"reference"``, ``"recent"`` or None for a night outside both."""
        if self.reference_from <= night <= self.reference_to:
            return "reference"
        if self.recent_from <= night <= self.recent_to:
            return "recent"
        return None


def choose_windows(nights: Sequence[date], spec: WindowSpec) -> Windows | None:
    """The windows for one site's nights, or None when there are not enough nights."""
    days = sorted(set(nights))
    if spec.pinned:
        reference = [d for d in days if spec.reference_from <= d <= spec.reference_to]
        after = [d for d in days if d > spec.reference_to]
    else:
        reference = days[: spec.reference_nights]
        after = days[spec.reference_nights :]
    recent = after[-spec.recent_nights :]
    if not reference or not recent:
        return None
    return Windows(reference[0], reference[-1], recent[0], recent[-1], tuple(reference),
                   tuple(recent))
