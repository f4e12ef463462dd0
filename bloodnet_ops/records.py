"""Typed records that cross module boundaries (storage → headers → series → validation → DB/CLI).

They hold only what the pipeline uses, never a pydicom ``Dataset``, so the wire format stays
inside :mod:`bloodnet_ops.headers` and :mod:`bloodnet_ops.hu`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from bloodnet_ops.reasons import Reason, Verdict


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """One object under a source: a file in a folder or an S3 object."""

    key: str  #: key relative to the source root (S3 key without the prefix, or relative path)
    etag: str  #: S3 ETag, or size+mtime hash for local files; the manifest's change detector
    size: int  #: bytes


@dataclass(frozen=True, slots=True)
class SliceHeader:
    """The header fields of one DICOM instance that the pipeline needs (no pixels, no PHI beyond IDs
    that are pseudonymised before they reach the database)."""

    key: str
    etag: str
    size: int
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    modality: str
    transfer_syntax: str
    body_part: str = ""
    study_description: str = ""
    series_description: str = ""
    image_type: tuple[str, ...] = ()
    patient_id: str = ""
    accession_number: str = ""
    institution: str = ""
    manufacturer: str = ""
    manufacturer_model: str = ""
    kernel: str = ""
    kvp: float | None = None
    slice_thickness: float | None = None
    rows: int | None = None
    columns: int | None = None
    pixel_spacing: tuple[float, float] | None = None
    orientation: tuple[float, ...] | None = None  #: ImageOrientationPatient, 6 values
    position: tuple[float, float, float] | None = None  #: ImagePositionPatient
    instance_number: int | None = None
    rescale_slope: float | None = None
    rescale_intercept: float | None = None
    bits_allocated: int | None = None
    bits_stored: int | None = None
    pixel_representation: int | None = None
    padding_value: int | None = None
    photometric: str = ""
    samples_per_pixel: int | None = None
    number_of_frames: int = 1
    contrast_agent: str = ""
    gantry_tilt: float | None = None
    study_date: str = ""
    has_pixel_data: bool = True
    protocol_name: str = ""  #: ProtocolName (anatomy hint when BodyPartExamined is empty)
    window_center: float | None = None  #: first WindowCenter (a bone-window series has ~300-800)
    #: per-frame ImagePositionPatient of a multi-frame (Enhanced CT) object; empty otherwise
    frame_positions: tuple[tuple[float, float, float], ...] = ()


@dataclass(frozen=True, slots=True)
class UnreadableObject:
    """An object that could not be parsed as DICOM (accounted for, never dropped)."""

    key: str
    etag: str
    size: int
    reason: Reason
    detail: str = ""


@dataclass(slots=True)
class CheckResult:
    """One expectation's outcome, stored so dashboards can show *why* a study was rejected."""

    suite: str
    expectation: str
    column: str | None
    success: bool
    observed: Any = None
    reason: Reason | None = None


@dataclass(slots=True)
class HUStats:
    """Per-study HU statistics of the selected series (drift and validation both use them)."""

    air_peak: float | None
    brain_median: float | None
    p01: float
    p99: float
    min: float
    max: float
    mean: float
    std: float


@dataclass(slots=True)
class SeriesSelection:
    """The series chosen for scoring in one study, slices sorted along the slice normal."""

    study_uid: str
    series_uid: str | None
    slices: list[SliceHeader]  #: sorted by ImagePositionPatient · normal (foot → head)
    candidates: list[str] = field(default_factory=list)  #: every series UID in the study
    reasons: list[Reason] = field(default_factory=list)  #: selection-level problems


@dataclass(slots=True)
class StudyResult:
    """One verdict per study: the ``validate`` half of the JSON contract."""

    study_uid: str
    series_uid: str | None
    site: str
    verdict: Verdict
    reasons: list[Reason]
    keys: list[str]  #: every object key that belongs to this study (all series)
    series_keys: list[str]  #: keys of the selected series, sorted along z
    patient_id: str = ""  #: raw; pseudonymised before persistence, never printed in JSON
    accession_number: str = ""
    study_date: str = ""
    manufacturer: str = ""
    manufacturer_model: str = ""
    kernel: str = ""
    kvp: float | None = None
    slice_thickness: float | None = None
    pixel_spacing: float | None = None
    n_slices: int = 0
    checks: list[CheckResult] = field(default_factory=list)
    hu: HUStats | None = None
    detail: str = ""  #: why a rejected study was rejected, beyond its codes (no PHI); DB only

    def contract(self) -> dict[str, Any]:
        """The DESIGN.md §3 JSON object for ``validate`` (no model fields, no PHI)."""
        return {
            "study_uid": self.study_uid,
            "series_uid": self.series_uid,
            "site": self.site,
            "verdict": self.verdict.value,
            "reasons": [r.value for r in self.reasons],
        }


@dataclass(slots=True)
class ValidationReport:
    """Everything found under a source: every object is in exactly one study or in ``unreadable``."""

    studies: list[StudyResult]
    unreadable: list[UnreadableObject]
    objects: list[ObjectRef]

    def accounted_keys(self) -> set[str]:
        keys = {u.key for u in self.unreadable}
        for s in self.studies:
            keys.update(s.keys)
        return keys


@dataclass(slots=True)
class StudyFinding:
    """The model's output for one study (the ``predict`` half of the JSON contract)."""

    study_uid: str
    series_uid: str
    probability: float
    positive: bool
    volume_ml: float
    subtypes: dict[str, float] = field(default_factory=dict)
    n_slices: int = 0
    load_seconds: float = 0.0
    infer_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def unreadable_contract(obj: UnreadableObject) -> dict[str, Any]:
    """The JSON object for an object that could not be read (``study_uid`` is null)."""
    return {
        "study_uid": None,
        "series_uid": None,
        "site": None,
        "key": obj.key,
        "verdict": Verdict.REJECT.value,
        "reasons": [obj.reason.value],
        "detail": obj.detail,
    }
