"""Shared plumbing of the real-data loaders: group DICOM files by UID, load HU, prepare.

Real archives do not follow our layout, so files are grouped by (StudyInstanceUID,
SeriesInstanceUID) from their headers, never by folder. HU come from
:func:`bloodnet_ops.hu.load_series_files`, the same loader as inference.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

#: RSNA-2019's known export fault: unsigned 12-bit pixels with an intercept above this value,
#: where negative stored values wrapped around by 4096 (air reads ≈ +3000 HU).
WRAP_INTERCEPT = -100.0
#: HU above which a voxel of such a series is taken as wrapped (real tissue stays far below).
WRAP_HU = 2800.0


@dataclass(slots=True)
class SeriesFiles:
    """The files of one series and the header fields the loaders need."""

    study_uid: str
    series_uid: str
    patient_id: str
    patient_name: str
    description: str
    kernel: str
    thickness: float | None
    image_type: tuple[str, ...]
    wrapped: bool  #: the RSNA unsigned-12-bit fault applies
    files: list[Path] = field(default_factory=list)
    sop_uids: list[str] = field(default_factory=list)


def index_series(root: Path, *, skip_suffixes: Iterable[str] = (".csv", ".json", ".txt")
                 ) -> dict[str, SeriesFiles]:
    """Every DICOM series under ``root`` by SeriesInstanceUID (header-only reads)."""
    import pydicom

    tags = ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "PatientID", "PatientName",
            "SeriesDescription", "ConvolutionKernel", "SliceThickness", "ImageType",
            "BitsStored", "PixelRepresentation", "RescaleIntercept"]
    skip = set(skip_suffixes)
    out: dict[str, SeriesFiles] = {}
    for path in sorted(Path(root).rglob("*")):
        if not path.is_file() or path.suffix.lower() in skip:
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=tags)
            series_uid = str(ds.SeriesInstanceUID)
        except Exception:  # noqa: BLE001 - not DICOM, or no UIDs: not a slice we can use
            log.debug("skipped non-DICOM file %s", path.name)
            continue
        s = out.get(series_uid)
        if s is None:
            kernel = ds.get("ConvolutionKernel", "")
            wrapped = (int(ds.get("BitsStored", 16)) == 12
                       and int(ds.get("PixelRepresentation", 0)) == 0
                       and float(ds.get("RescaleIntercept", -1024)) > WRAP_INTERCEPT)
            s = out[series_uid] = SeriesFiles(
                study_uid=str(ds.get("StudyInstanceUID", "")),
                series_uid=series_uid,
                patient_id=str(ds.get("PatientID", "")),
                patient_name=str(ds.get("PatientName", "")),
                description=str(ds.get("SeriesDescription", "")),
                kernel=" ".join(kernel) if isinstance(kernel, list | tuple) else str(kernel),
                thickness=float(ds.SliceThickness) if ds.get("SliceThickness") else None,
                image_type=tuple(str(v) for v in ds.get("ImageType", [])),
                wrapped=wrapped,
            )
        s.files.append(path)
        s.sop_uids.append(str(ds.get("SOPInstanceUID", "")))
    return out


def load_hu(series: SeriesFiles, *, fix_wraparound: bool = True):
    """HUVolume of a series; undoes RSNA's 12-bit wrap-around when the header shows the fault."""
    from bloodnet_ops.hu import load_series_files

    vol = load_series_files(series.files)
    if fix_wraparound and series.wrapped:
        vol.hu[vol.hu > WRAP_HU] -= 4096.0
    return vol


_SOFT_KERNEL_HINTS = ("soft", "std", "standard", "plain", "brain", "h3", "h4", "fc2", "j40",
                      "ub", "b3", "b4", "hr4")
_SHARP_KERNEL_HINTS = ("bone", "sharp", "lung", "h6", "h7", "b6", "b7", "fc3", "fc8", "edge")


def pick_diagnostic(candidates: list[SeriesFiles], *, min_slices: int = 10) -> SeriesFiles | None:
    """The axial soft-tissue series closest to 5 mm: no localizers, no bone kernels."""
    def score(s: SeriesFiles) -> tuple:
        text = f"{s.description} {s.kernel}".lower()
        sharp = any(h in text for h in _SHARP_KERNEL_HINTS)
        soft = any(h in text for h in _SOFT_KERNEL_HINTS)
        thick = abs((s.thickness or 5.0) - 5.0)
        return (sharp, not soft, thick, -len(s.files))

    usable = [s for s in candidates if len(s.files) >= min_slices
              and "LOCALIZER" not in s.image_type]
    return min(usable, key=score) if usable else None


def slab_labels(per_slice: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Slice labels (z,) → slab labels (len(groups),): a slab is positive if any slice is."""
    starts = np.concatenate([[0], np.cumsum(groups)[:-1]])
    return np.maximum.reduceat(np.asarray(per_slice, dtype=np.float32), starts)
