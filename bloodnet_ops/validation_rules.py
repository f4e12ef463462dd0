"""The facts the validation suites check, derived from headers and HU measurements.

great-expectations checks row-wise expectations over tables; this module turns a selected series
into a per-slice table whose columns already carry the series-level facts (slice count, spacing
ratio to the median, geometry agreement, ...), so that every rule is a plain GX expectation and
failures map back to studies through the ``study_uid`` column. Thresholds are named constants.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from bloodnet_ops.records import SeriesSelection, SliceHeader
from bloodnet_ops.series import (
    STRAIGHT_ANGLE_DEG,
    Duplicates,
    axial_angle_deg,
    find_duplicates,
    projections,
    slice_normal,
    sort_slices,
)

#: Fewest slices that can cover a head. A routine head CT has 25-40 slices of 4-5 mm or 120+
#: thin slices; fewer than 10 is a partial export or a single-level study.
MIN_SLICES = 10
#: Shortest z coverage (n × spacing) in mm. The brain is 90-110 mm from the skull base to the
#: vertex (the whole head ~180 mm); a stack shorter than 50 mm cannot show most of it.
MIN_EXTENT_MM = 50.0
#: A step between neighbouring slices more than this multiple of the median step is a gap (one
#: missing slice doubles the step); less than :data:`MIN_STEP_RATIO` is an extra, irregular slice.
MAX_STEP_RATIO = 1.5
MIN_STEP_RATIO = 0.5
#: Positions closer than this (mm) along the normal are the same position.
SAME_POSITION_MM = 0.01
#: GantryDetectorTilt (degrees) above which a series counts as tilted.
TILT_TAG_DEG = 0.5

NATIVE_TRANSFER_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.2",
        "1.2.840.10008.1.2.1.99",
    }
)

# placeholders some scanners write instead of leaving ContrastBolusAgent empty: a whole-value
# "none" word, or a phrase that starts with a negation ("NO CONTRAST", "ohne KM", "sans PDC")
_NO_CONTRAST = re.compile(
    r"^(NONE|NO|N/?A|NIL|NULL|NON|NATIVE?|NATIF|0|-+|\.|UNENHANCED|PLAIN|"
    r"NOT[ _-]?(APPLICABLE|GIVEN|USED))$"
    r"|^(NO|NONE|WITHOUT|OHNE|KEIN\w*|SANS|SIN)\b",
    re.IGNORECASE,
)

# Anatomy vocabularies (BodyPartExamined defined terms, plus what vendors write in free text,
# English, German, French, Spanish, Italian, Dutch).
_HEAD_BODY_PART = re.compile(
    r"HEAD|BRAIN|SKULL|CRAN|CEREB|ENCEPH|NEURO|KOPF|SCH(A|AE|Ä)DEL|HIRN|CERVEAU|CABEZA|TESTA|"
    r"HOOFD|HERSEN|TETE|TÊTE",
    re.IGNORECASE,
)
_OTHER_BODY_PART = re.compile(
    r"CHEST|THORAX|LUNG|ABDOM|\bABD\b|PELVI|BECKEN|LIVER|KIDNEY|RENAL|SPINE|WIRBEL|HEART|CARD|"
    r"CORONAR|AORT|EXTREMIT|KNEE|HIP|SHOULDER|ARM|LEG|FOOT|HAND|ANKLE|WRIST|ELBOW|BREAST|"
    r"WHOLEBODY|WHOLE BODY|TORSO|PROSTAT|BLADDER|COLON|BOWEL|PANCREA|NECK|HALS|CSPINE|TSPINE|"
    r"LSPINE|SACRUM|FEMUR|TIBIA|HUMERUS|CLAVICLE|RIB|STERNUM|ORBIT|SINUS|FACE|MANDIBLE|DENT",
    re.IGNORECASE,
)
# in free text, other regions count only as whole words ("RIB" not in "distribution", "DENT"
# not in "accident")
_OTHER_TEXT = re.compile(
    r"\b(CHEST|THORAX|THORACIC|LUNGS?|ABDOMEN|ABDOMINAL|ABD|PELVIS|PELVIC|BECKEN|LIVER|KIDNEYS?|"
    r"RENAL|SPINE|[CTL]-?SPINE|WIRBELS\w*|HEART|CARDIAC|CORONARY|AORTA|AORTIC|KNEE|HIP|SHOULDER|"
    r"EXTREMITY|ANKLE|WRIST|ELBOW|HAND|FOOT|BREAST|WHOLE.?BODY|TORSO|PROSTATE|BLADDER|COLON|"
    r"PANCREAS|NECK|HALS|SINUS(ES)?|ORBITS?|FACIAL|MANDIBLE|DENTAL|FEMUR|TIBIA|HUMERUS)\b",
    re.IGNORECASE,
)
_HEAD_TEXT = re.compile(
    r"\bHEAD|BRAIN|SKULL|CRANI|CRANE|CEREB|ENCEPH|NEURO|KOPF|SCH(A|AE|Ä)DEL|\bHIRN|\bCCT\b|"
    r"\bNCCT\b|CERVEAU|CABEZA|\bTESTA\b|HOOFD|HERSEN|\bSTROKE\b|\bICH\b|HEMORRHAG|HAEMORRHAG",
    re.IGNORECASE,
)


def anatomy(headers: list[SliceHeader]) -> str:
    """``head``, ``other`` or ``unknown`` from BodyPartExamined, then descriptions.

    A body part that names a head (HEAD, BRAIN, SKULL, HEADNECK, ...) wins; one that names
    another region (CHEST, ABDOMEN, ...) is ``other`` whatever the descriptions say; an empty or
    unrecognised body part defers to the study/series description and protocol name.
    """
    parts = {h.body_part for h in headers if h.body_part}
    for part in parts:
        if _HEAD_BODY_PART.search(part):
            return "head"
    for part in parts:
        if _OTHER_BODY_PART.search(part):
            return "other"
    texts = {t for h in headers for t in (h.study_description, h.series_description,
                                           h.protocol_name) if t}
    if any(_HEAD_TEXT.search(t) for t in texts):
        return "head"
    if any(_OTHER_TEXT.search(t) for t in texts):
        return "other"
    return "unknown"


def has_contrast(agent: str) -> bool:
    """ContrastBolusAgent present and not a 'none' placeholder that some scanners write."""
    text = agent.strip().strip("\\").strip()
    return bool(text) and not _NO_CONTRAST.match(text)


@lru_cache(maxsize=64)
def transfer_syntax_decodable(uid: str) -> bool:
    """True when pydicom has a working decoder (native, RLE, or gdcm/pylibjpeg plugins)."""
    if uid in NATIVE_TRANSFER_SYNTAXES:
        return True
    try:
        from pydicom.pixels import get_decoder

        return bool(get_decoder(uid).is_available)
    except Exception:  # noqa: BLE001 - unknown or private UID: nothing can decode it
        return False


def _mode(values: list) -> object:
    return Counter(values).most_common(1)[0][0] if values else None


def _round(v: tuple[float, ...] | None, nd: int) -> tuple[float, ...] | None:
    return tuple(round(x, nd) for x in v) if v is not None else None


def _frames(slices: list[SliceHeader]) -> list[SliceHeader]:
    """Enhanced CT: one pseudo-slice per frame (same key, its own position), so slice count,
    spacing and gaps are judged per frame exactly as for a classic series."""
    if all(h.number_of_frames == 1 for h in slices):
        return slices
    out = []
    for h in slices:
        if h.number_of_frames > 1 and len(h.frame_positions) == h.number_of_frames:
            out.extend(replace(h, position=p, sop_uid=f"{h.sop_uid}#{i + 1}", number_of_frames=1,
                               frame_positions=())
                       for i, p in enumerate(h.frame_positions))
        elif h.number_of_frames > 1:
            out.append(replace(h, position=None))  # frames without positions: no geometry
        else:
            out.append(h)
    return sort_slices(out)


def _pick_copies(slices: list[SliceHeader], dups: Duplicates) -> list[SliceHeader]:
    """One header per SOP instance. For conflicting copies keep the one that fits the rest of the
    series (its own position, the common matrix), so the study is rejected for the duplicate
    alone and not also for a gap or a clash that only the dropped copy would explain."""
    keep = {h.sop_uid: h for h in dups.unique}
    if dups.conflicting:
        others = [h for h in slices if h.sop_uid not in dups.conflicting]
        taken = {_round(h.position, 2) for h in others}
        matrix = _mode([(h.rows, h.columns) for h in others])
        for sop in dups.conflicting:
            copies = [h for h in slices if h.sop_uid == sop]
            keep[sop] = min(copies, key=lambda h: (_round(h.position, 2) in taken,
                                                   (h.rows, h.columns) != matrix, h.key))
    chosen = {id(h) for h in keep.values()}
    return [h for h in slices if id(h) in chosen]


@dataclass(slots=True)
class HeaderRow:
    """One slice of a selected series, as the header suite sees it (one field per rule column;
    ``validation`` checks at import that every rule names a field)."""

    study_uid: str
    key: str
    modality: str | None
    sop_class_uid: str | None
    anatomy: str
    axial_angle_deg: float  #: the series' angle (one odd slice is inconsistent geometry)
    geometry_consistent: bool
    rescale_present: bool
    n_slices: int
    extent_mm: float
    step_ratio: float
    duplicate_conflict: bool
    duplicate_resent: bool
    contrast_agent: bool
    tilted: bool
    tilt_deg: float
    transfer_syntax: str | None
    decodable: bool


@dataclass(slots=True)
class HURow:
    """One study's HU measurements, as the HU suite sees them (``None``: not measured)."""

    study_uid: str
    decoded: bool = False
    air_peak: float | None = None
    tissue_median: float | None = None
    outside_fraction: float | None = None
    duplicate_bytes_differ: bool = False
    lung_fraction: float | None = None


@dataclass(slots=True)
class SeriesFactsTable:
    """Per-slice rows of one selected series, plus its study-level observations."""

    rows: list[HeaderRow]
    duplicates: Duplicates
    tilted: bool


def series_rows(sel: SeriesSelection, study_headers: list[SliceHeader]) -> SeriesFactsTable:
    """One row per (de-duplicated) slice of the selected series, ready for the header suite."""
    dups = find_duplicates(sel.slices)
    slices = _pick_copies(sel.slices, dups) if dups.extra_keys else list(sel.slices)
    slices = _frames(slices)
    n = len(slices)
    orient = _mode([_round(h.orientation, 3) for h in slices])
    matrix = _mode([(h.rows, h.columns) for h in slices])
    spacing = _mode([_round(h.pixel_spacing, 4) for h in slices])
    normal = slice_normal(orient)  # type: ignore[arg-type]
    proj = projections(slices, normal)
    finite = proj[np.isfinite(proj)]
    steps = np.diff(np.sort(finite)) if finite.size > 1 else np.array([])
    real_steps = steps[steps > SAME_POSITION_MM]
    median_step = float(np.median(real_steps)) if real_steps.size else 0.0
    extent = float(finite.max() - finite.min() + median_step) if finite.size else 0.0

    # per-slice step ratio: the step to the next slice up, relative to the median step
    ratio = np.ones(n)
    dup_pos = np.zeros(n, bool)
    order = np.argsort(np.where(np.isfinite(proj), proj, np.inf), kind="stable")
    for a, b in itertools.pairwise(order):
        if not (np.isfinite(proj[a]) and np.isfinite(proj[b])):
            continue
        step = proj[b] - proj[a]
        if step <= SAME_POSITION_MM:
            dup_pos[a] = dup_pos[b] = True
        elif median_step > 0:
            ratio[a] = step / median_step

    angle = axial_angle_deg(orient)  # type: ignore[arg-type]
    tilt_tag = max((abs(h.gantry_tilt) for h in slices if h.gantry_tilt is not None), default=0.0)
    shear = 0.0
    ends = [h.position for h in (slices[order[0]], slices[order[-1]])] if n > 1 else []
    if normal is not None and len(ends) == 2 and all(p is not None for p in ends):
        d = np.asarray(ends[1]) - np.asarray(ends[0])
        if np.linalg.norm(d) > 1.0:
            cosang = abs(float(np.dot(d, normal))) / float(np.linalg.norm(d))
            shear = math.degrees(math.acos(min(1.0, cosang)))
    tilted = bool(
        (angle is not None and angle > STRAIGHT_ANGLE_DEG)
        or tilt_tag > TILT_TAG_DEG
        or shear > STRAIGHT_ANGLE_DEG
    )
    anat = anatomy(slices + [h for h in study_headers if h.study_description][:1])
    rows = []
    for i, h in enumerate(slices):
        geometry_ok = (
            h.position is not None
            and h.orientation is not None
            and _round(h.orientation, 3) == orient
            and (h.rows, h.columns) == matrix
            and h.rows is not None
            and _round(h.pixel_spacing, 4) == spacing
            and h.pixel_spacing is not None
            and not dup_pos[i]
        )
        rows.append(HeaderRow(
            study_uid=sel.study_uid,
            key=h.key,
            modality=h.modality,
            sop_class_uid=h.sop_class_uid,
            anatomy=anat,
            axial_angle_deg=angle if angle is not None else math.nan,
            geometry_consistent=bool(geometry_ok),
            rescale_present=h.rescale_slope is not None and h.rescale_intercept is not None,
            n_slices=n,
            extent_mm=extent,
            step_ratio=float(ratio[i]),
            duplicate_conflict=h.sop_uid in dups.conflicting,
            duplicate_resent=h.sop_uid in dups.resent,
            contrast_agent=has_contrast(h.contrast_agent),
            tilted=tilted,
            tilt_deg=max(angle or 0.0, tilt_tag, shear),
            transfer_syntax=h.transfer_syntax,
            decodable=transfer_syntax_decodable(h.transfer_syntax)
            and (h.samples_per_pixel in (None, 1)),
        ))
    return SeriesFactsTable(rows, dups, tilted)
