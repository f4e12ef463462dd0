"""Grouping by DICOM UIDs and selection of the diagnostic series of each study.

Studies and series are found from StudyInstanceUID / SeriesInstanceUID only, never from keys or
folders. In each study the series to score is chosen like this:

1. *CT series*: Modality CT and a CT SOP class (CT Image, Enhanced CT, Legacy Converted
   Enhanced CT). A study without one is ``not_ct`` (MR, CR, secondary captures, also those with
   Modality CT such as dose screens, RT objects, dose SRs).
2. *Candidates*: CT series that carry pixels and are not localizers (ImageType LOCALIZER, a
   scout/topogram/surview/scanogram description, or a non-axial series of one or two images) and
   not derived reformats (DERIVED\\SECONDARY, MPR, MIP, MinIP, VRT, curved or projection images).
   None left: ``no_axial_series``.
3. *Ranking* (first difference wins):
   a. more than one slice (a lone axial image is never preferred to a stack);
   b. ORIGINAL before DERIVED\\PRIMARY;
   c. soft-tissue before unknown before sharp/bone reconstruction (:func:`kernel_sharpness`): the
      model is trained on soft-tissue kernels, so a bone series is never substituted for a
      diagnostic series that exists but is broken or oblique;
   d. axial before non-axial;
   e. more slices, then thinner slices (more z information for the 2.5D model);
   f. SeriesInstanceUID, so the choice is deterministic.
4. The chosen series is ``non_axial_orientation`` when its slice normal is more than
   :data:`MAX_AXIAL_ANGLE_DEG` from the patient z axis. Up to that angle it is axial with gantry
   tilt (scanners tilt up to about 30 degrees), which the validator reports as a warning.

Slices are sorted by ImagePositionPatient · normal (normal = row × column cosines), ascending;
never by InstanceNumber or key.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from bloodnet_ops.reasons import Reason
from bloodnet_ops.records import SeriesSelection, SliceHeader

CT_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
        "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image Storage
        "1.2.840.10008.5.1.4.1.1.2.2",  # Legacy Converted Enhanced CT Image Storage
    }
)

#: Largest angle (degrees) between the slice normal and patient z that is still axial. Gantry
#: tilt goes up to ~30°; a coronal or sagittal series is at 90°.
MAX_AXIAL_ANGLE_DEG = 40.0
#: Below this angle (degrees) a series is straight axial (cosines are rounded by writers).
STRAIGHT_ANGLE_DEG = 1.0

_LOCALIZER_WORDS = re.compile(
    r"SCOUT|TOPOGRAM|TOPO\b|SURVIEW|SCANOGRAM|LOCALI[SZ]ER|LOCATOR|PILOT|\bSCANO", re.IGNORECASE
)
_DERIVED_FLAGS = frozenset(
    {"MPR", "MIP", "MINIP", "REFORMATTED", "PROJECTION IMAGE", "VOLUME", "VRT", "CURVED",
     "VOLUME_RENDER", "3D", "MAXIMUM", "MINIMUM", "AVERAGE", "CPR"}
)
_DERIVED_WORDS = re.compile(r"\b(MIP|MINIP|MPR|VRT|CPR|REFORMAT\w*|MAXIP)\b", re.IGNORECASE)

# Kernel vocabularies (ConvolutionKernel; several values are joined with "\").
_SHARP_WORDS = re.compile(
    r"BONE|LUNG|EDGE|SHARP|ULTRA|DETAIL|KNOCHEN|OSSE|HIGH.?RES|\bHR\b|INNER.?EAR|FELSENBEIN"
    r"|TEMPORAL|PETROUS|\bYC\b|\bYD\b|\bYE\b|\bYF\b",
    re.IGNORECASE,
)
_SOFT_WORDS = re.compile(
    r"STANDARD|STND|\bSTD\b|SOFT|SMOOTH|BRAIN|HEAD|NEURO|CEREB|HIRN|WEICHTEIL|PARENCHYM|\bSTD",
    re.IGNORECASE,
)
_SIEMENS = re.compile(r"^([A-Z][a-z]?)(\d{2})([a-z]?)")  # H31s, Hr40, Br64, J70h, Qr40f
_CANON = re.compile(r"^FC(\d{2})", re.IGNORECASE)  # FC21, FC30, FC52, FC81
_PHILIPS_SOFT = frozenset({"A", "B", "C", "UA", "UB", "UC", "YA", "YB", "EA"})
_PHILIPS_SHARP = frozenset({"D", "E", "EB", "EC", "ED", "L", "LA", "YC", "YD", "YE", "YF"})


def kernel_class(kernel: str) -> int:
    """-1 soft tissue, +1 sharp (bone/lung), 0 unknown, from ConvolutionKernel alone.

    Siemens ``Hxx``/``Jxx``/``Brxx``/``Qrxx``: sharp from 60 up (H60s, Hr64, J70h; U90u), soft
    up to 49 (H31s, Hr40, Qr40). GE: BONE, BONEPLUS, LUNG, EDGE, DETAIL, ULTRA vs STANDARD,
    SOFT. Canon/Toshiba ``FCnn``: FC01-FC29 body/brain, FC30+ bone, lung and inner ear.
    Philips: A/B/C/UA/UB/UC soft, D/E/L/Y-sharp sharp.
    """
    votes = 0
    for part in (p.strip() for p in kernel.split("\\")):
        if not part:
            continue
        m = _CANON.match(part)
        if m:
            votes += 1 if int(m.group(1)) >= 30 else -1
            continue
        m = _SIEMENS.match(part)
        if m:
            number = int(m.group(2))
            votes += 1 if number >= 60 else (-1 if number < 50 else 0)
            continue
        up = part.upper()
        if up in _PHILIPS_SOFT:
            votes -= 1
        elif up in _PHILIPS_SHARP or _SHARP_WORDS.search(part):
            votes += 1
        elif _SOFT_WORDS.search(part):
            votes -= 1
    return (votes > 0) - (votes < 0)


def kernel_sharpness(headers: Sequence[SliceHeader]) -> int:
    """Soft (-1) / unknown (0) / sharp (+1) for a series, from kernel, description and window.

    The kernel counts double; the series description (``BONE``, ``Knochen``, ``lung`` vs
    ``brain``, ``soft``) and the display window (centre >= 200 HU is a bone window, <= 100 a
    brain window) count once each, so a vendor whose kernel names we do not know is still
    classified by what the scanner wrote beside it.
    """
    h = headers[0]
    votes = 2 * kernel_class(h.kernel)
    desc = h.series_description
    if desc:
        if _SHARP_WORDS.search(desc):
            votes += 1
        elif _SOFT_WORDS.search(desc):
            votes -= 1
    wc = h.window_center
    if wc is not None:
        votes += 1 if wc >= 200 else (-1 if wc <= 100 else 0)
    return (votes > 0) - (votes < 0)


# --------------------------------------------------------------------------- geometry
def slice_normal(orientation: Sequence[float] | None) -> np.ndarray | None:
    """Unit normal (row × column) of an ImageOrientationPatient, or ``None`` if degenerate."""
    if orientation is None or len(orientation) != 6:
        return None
    n = np.cross(np.asarray(orientation[:3], float), np.asarray(orientation[3:], float))
    norm = float(np.linalg.norm(n))
    return n / norm if norm > 1e-3 else None


def axial_angle_deg(orientation: Sequence[float] | None) -> float | None:
    """Angle in degrees between the slice normal and the patient z axis (0 = straight axial)."""
    n = slice_normal(orientation)
    if n is None:
        return None
    return math.degrees(math.acos(min(1.0, abs(float(n[2])))))


def projections(headers: Sequence[SliceHeader], normal: np.ndarray | None = None) -> np.ndarray:
    """ImagePositionPatient · normal of each slice (NaN where the position is missing)."""
    if normal is None:
        normal = next(
            (n for h in headers if (n := slice_normal(h.orientation)) is not None),
            np.array([0.0, 0.0, 1.0]),
        )
    out = np.full(len(headers), np.nan)
    for i, h in enumerate(headers):
        if h.position is not None:
            out[i] = float(np.dot(h.position, normal))
    return out


def sort_slices(headers: Sequence[SliceHeader]) -> list[SliceHeader]:
    """Slices ascending along the slice normal; slices without a position go last (by key)."""
    proj = projections(headers)
    order = sorted(
        range(len(headers)),
        key=lambda i: (math.isnan(proj[i]), 0.0 if math.isnan(proj[i]) else proj[i],
                       headers[i].key),
    )
    return [headers[i] for i in order]


# --------------------------------------------------------------------------- grouping
def group_by_study(
    headers: Iterable[SliceHeader],
) -> dict[str, dict[str, list[SliceHeader]]]:
    """study UID → series UID → headers (deterministic order: sorted UIDs, then keys)."""
    studies: dict[str, dict[str, list[SliceHeader]]] = {}
    for h in headers:
        studies.setdefault(h.study_uid, {}).setdefault(h.series_uid, []).append(h)
    return {
        st: {se: sorted(hs, key=lambda h: h.key) for se, hs in sorted(series.items())}
        for st, series in sorted(studies.items())
    }


@dataclass(frozen=True, slots=True)
class Duplicates:
    """SOPInstanceUIDs seen more than once in a series, split by whether the copies agree."""

    unique: list[SliceHeader]  #: one header per SOP UID (the first by key)
    resent: frozenset[str]  #: SOP UIDs whose copies look identical (same ETag or same header)
    conflicting: frozenset[str]  #: SOP UIDs whose copies differ (size or header fields)
    extra_keys: dict[str, list[str]]  #: SOP UID → keys of the dropped copies


def _content_signature(h: SliceHeader) -> tuple:
    # every header field except where the object lives; same size + same signature = a re-send
    return (h.size, h.position, h.orientation, h.rows, h.columns, h.pixel_spacing,
            h.rescale_slope, h.rescale_intercept, h.instance_number, h.transfer_syntax,
            h.series_uid, h.bits_stored, h.pixel_representation, h.kernel, h.image_type)


def find_duplicates(headers: Sequence[SliceHeader]) -> Duplicates:
    """Group copies of one SOP instance. Identical size and header fields mean a re-sent object
    (warn, keep one); anything else is a conflict (reject). ETags are not trusted here: a local
    source's ETag is (size, mtime), which two different files can share. Copies with identical
    headers but different pixels are caught by the pipeline, which compares their bytes."""
    by_sop: dict[str, list[SliceHeader]] = {}
    for h in headers:
        by_sop.setdefault(h.sop_uid, []).append(h)
    unique, resent, conflicting, extra = [], set(), set(), {}
    for sop, copies in by_sop.items():
        copies = sorted(copies, key=lambda h: h.key)
        unique.append(copies[0])
        if len(copies) == 1:
            continue
        extra[sop] = [c.key for c in copies[1:]]
        first = copies[0]
        same = all(_content_signature(c) == _content_signature(first) for c in copies[1:])
        (resent if same else conflicting).add(sop)
    return Duplicates(unique, frozenset(resent), frozenset(conflicting), extra)


# --------------------------------------------------------------------------- selection
@dataclass(frozen=True, slots=True)
class SeriesFacts:
    """What selection needs to know about one series."""

    series_uid: str
    n_slices: int
    is_ct: bool
    has_pixels: bool
    localizer: bool
    derived: bool  #: a reformat / projection: never scored
    derived_primary: bool  #: DERIVED\\PRIMARY: scored only when nothing ORIGINAL exists
    sharpness: int
    angle: float | None
    thickness: float | None

    @property
    def axial(self) -> bool:
        return self.angle is None or self.angle <= MAX_AXIAL_ANGLE_DEG

    def rank(self) -> tuple:
        return (
            self.n_slices < 2,
            self.derived_primary,
            self.sharpness,
            not self.axial,
            -self.n_slices,
            self.thickness if self.thickness else 1e9,
            self.series_uid,
        )


def is_ct(h: SliceHeader) -> bool:
    """A CT *image*: Modality CT and a CT SOP class. A secondary capture or dose screen with
    Modality CT, or an MR object with a CT class, is not."""
    return h.modality == "CT" and h.sop_class_uid in CT_SOP_CLASSES


def series_facts(series_uid: str, headers: Sequence[SliceHeader]) -> SeriesFacts:
    h = headers[0]
    image_type = {v for x in headers for v in x.image_type}
    n_frames = sum(x.number_of_frames for x in {x.sop_uid: x for x in headers}.values())
    angles = [a for x in headers if (a := axial_angle_deg(x.orientation)) is not None]
    angle = float(np.median(angles)) if angles else None
    non_axial = angle is not None and angle > MAX_AXIAL_ANGLE_DEG
    localizer = (
        "LOCALIZER" in image_type
        or bool(_LOCALIZER_WORDS.search(h.series_description))
        or (non_axial and n_frames <= 2)
    )
    first = h.image_type[0] if h.image_type else ""
    second = h.image_type[1] if len(h.image_type) > 1 else ""
    derived = (
        (first == "DERIVED" and second == "SECONDARY")
        or bool(image_type & _DERIVED_FLAGS)
        or bool(_DERIVED_WORDS.search(h.series_description))
    )
    thick = [x.slice_thickness for x in headers if x.slice_thickness]
    return SeriesFacts(
        series_uid=series_uid,
        n_slices=n_frames,
        is_ct=any(is_ct(x) for x in headers),
        has_pixels=any(x.has_pixel_data for x in headers),
        localizer=localizer,
        derived=derived,
        derived_primary=first == "DERIVED" and not derived,
        sharpness=kernel_sharpness(headers),
        angle=angle,
        thickness=float(np.median(thick)) if thick else None,
    )


def select_series(study_uid: str, series: dict[str, list[SliceHeader]]) -> SeriesSelection:
    """Choose the diagnostic series of one study (see the module docstring for the ranking)."""
    facts = [series_facts(uid, hs) for uid, hs in series.items()]
    candidates = list(series)
    ct = [f for f in facts if f.is_ct and f.has_pixels]
    if not ct:
        return SeriesSelection(study_uid, None, [], candidates, [Reason.NOT_CT])
    usable = [f for f in ct if not f.localizer and not f.derived]
    if not usable:
        return SeriesSelection(study_uid, None, [], candidates, [Reason.NO_AXIAL_SERIES])
    best = min(usable, key=SeriesFacts.rank)
    reasons = [] if best.axial else [Reason.NON_AXIAL_ORIENTATION]
    return SeriesSelection(
        study_uid, best.series_uid, sort_slices(series[best.series_uid]), candidates, reasons
    )
