"""Reason codes and verdicts: a stable contract stored in PostgreSQL and shown on dashboards.

The string values are part of DESIGN.md §3. Never rename one; add new codes only with a migration note.
"""

from __future__ import annotations

from enum import StrEnum


class Verdict(StrEnum):
    ACCEPT = "accept"
    ACCEPT_WITH_WARNING = "accept_with_warning"
    REJECT = "reject"


class Reason(StrEnum):
    UNREADABLE = "unreadable"
    NOT_CT = "not_ct"
    NOT_HEAD = "not_head"
    NO_AXIAL_SERIES = "no_axial_series"
    NON_AXIAL_ORIENTATION = "non_axial_orientation"
    TOO_FEW_SLICES = "too_few_slices"
    INCONSISTENT_GEOMETRY = "inconsistent_geometry"
    SLICE_GAP = "slice_gap"
    DUPLICATE_INSTANCE = "duplicate_instance"
    MISSING_RESCALE = "missing_rescale"
    HU_OUT_OF_RANGE = "hu_out_of_range"
    PIXEL_DECODE_FAILED = "pixel_decode_failed"
    CONTRAST_ENHANCED = "contrast_enhanced"
    GANTRY_TILT = "gantry_tilt"


#: Codes that only ever warn. ``duplicate_instance`` warns when the duplicates are byte-identical
#: (a re-sent object) and rejects when their content differs.
WARNING_ONLY: frozenset[Reason] = frozenset({Reason.CONTRAST_ENHANCED, Reason.GANTRY_TILT})

DESCRIPTIONS: dict[Reason, str] = {
    Reason.UNREADABLE: "not DICOM, truncated, or empty object",
    Reason.NOT_CT: "modality or SOP class is not CT",
    Reason.NOT_HEAD: "body part or anatomy is not a head",
    Reason.NO_AXIAL_SERIES: "only localizers, or no usable axial series",
    Reason.NON_AXIAL_ORIENTATION: "the series is not axial",
    Reason.TOO_FEW_SLICES: "too few slices to cover a head",
    Reason.INCONSISTENT_GEOMETRY: "mixed matrix, pixel spacing or orientation within the series",
    Reason.SLICE_GAP: "missing slices (a spacing jump)",
    Reason.DUPLICATE_INSTANCE: "the same SOPInstanceUID twice with different content",
    Reason.MISSING_RESCALE: "no RescaleSlope/Intercept, so HU cannot be trusted",
    Reason.HU_OUT_OF_RANGE: "air is not near -1000 HU, or values lie outside the physical range",
    Reason.PIXEL_DECODE_FAILED: "the transfer syntax could not be decoded",
    Reason.CONTRAST_ENHANCED: "ContrastBolusAgent is present",
    Reason.GANTRY_TILT: "the series is tilted; slices are handled in patient space",
}


def verdict_for(reasons: list[Reason], *, rejecting: set[Reason] | None = None) -> Verdict:
    """Combine reasons into one verdict.

    ``rejecting`` lists the reasons that reject; by default every reason not in
    :data:`WARNING_ONLY` rejects.
    """
    if not reasons:
        return Verdict.ACCEPT
    if rejecting is None:
        rejecting = {r for r in reasons if r not in WARNING_ONLY}
    if any(r in rejecting for r in reasons):
        return Verdict.REJECT
    return Verdict.ACCEPT_WITH_WARNING
