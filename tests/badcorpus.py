"""A corpus of good and bad head-CT studies, written with pydicom directly.

Independent of :mod:`bloodnet_ops.synth` on purpose, and with other conventions, so the validator
is not only tested against the generator it grew up with:

- GE-like default: unsigned 16-bit, BitsStored 12, RescaleIntercept -1024, explicit VR, padding
  outside the scan circle declared as PixelPaddingValue 0 (stored units);
- InstanceNumber *descending* with z, file names random hex, all objects in one flat folder, no
  InstitutionName;
- each study: a coronal LOCALIZER, the soft-tissue axial series (kernel STANDARD, brain window)
  and a BONE-kernel axial series (bone window);
- variants: signed pixels with intercept 0 and padding -2000 (implicit VR, no body part but a
  German description), slope 0.5, RLE Lossless, and one bad study per reason code of DESIGN.md.

The phantom is a crude ellipsoid head: scalp, a 1000 HU skull, grey/white matter, ventricles,
air around it, in a 64² matrix at 3.5 mm (a 224 mm field of view) and 5 mm slices.
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    MRImageStorage,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from bloodnet_ops.reasons import Reason, Verdict

_ROOT = "1.2.826.0.1.3680043.10.999."  # a private test root, never a real scanner's


def uid(tag: str) -> str:
    """A deterministic UID per tag, so test failures are reproducible."""
    return generate_uid(prefix=_ROOT, entropy_srcs=[tag])


# --------------------------------------------------------------------------- phantom
def head_hu(matrix: int, z_mm: float, rng: np.random.Generator, *, pixel_mm: float = 3.5,
            noise: float = 6.0) -> np.ndarray:
    """HU of one axial slice at height ``z_mm`` (0 = centre of the head)."""
    c = (matrix - 1) / 2
    yy, xx = np.mgrid[0:matrix, 0:matrix]
    y = (yy - c) * pixel_mm
    x = (xx - c) * pixel_mm
    a, b, h = 75.0, 92.0, 95.0  # semi-axes in mm: left-right, front-back, head-foot
    scale = max(0.0, 1 - (z_mm / h) ** 2)
    img = np.full((matrix, matrix), -1000.0)
    if scale > 0:
        s = math.sqrt(scale)
        r = np.sqrt((x / (a * s)) ** 2 + (y / (b * s)) ** 2)
        img[r <= 1.0] = 40.0  # scalp
        img[r <= 0.95] = 1000.0  # skull
        img[r <= 0.86] = 38.0  # grey matter
        img[r <= 0.65] = 28.0  # white matter
        vent = ((x / 12.0) ** 2 + ((y + 8) / 28.0) ** 2) <= 1.0
        img[vent & (r <= 0.6) & (abs(z_mm) < 35)] = 6.0
    img = img + rng.normal(0.0, noise, img.shape)
    return img


def _fov_mask(matrix: int) -> np.ndarray:
    c = (matrix - 1) / 2
    yy, xx = np.mgrid[0:matrix, 0:matrix]
    return (yy - c) ** 2 + (xx - c) ** 2 > (matrix / 2) ** 2


# --------------------------------------------------------------------------- DICOM writing
@dataclass
class Profile:
    """How a 'vendor' stores HU."""

    signed: bool = False
    bits_stored: int = 12
    intercept: float = -1024.0
    slope: float = 1.0
    padding: int | None = 0  #: stored value outside the scan circle (None: no padding)
    implicit: bool = False
    manufacturer: str = "GE MEDICAL SYSTEMS"

    def encode(self, hu: np.ndarray, outside: np.ndarray) -> np.ndarray:
        stored = np.round((hu - self.intercept) / self.slope)
        if self.signed:
            lo, hi = -(1 << (self.bits_stored - 1)), (1 << (self.bits_stored - 1)) - 1
            stored = np.clip(stored, lo, hi).astype(np.int16)
        else:
            stored = np.clip(stored, 0, (1 << self.bits_stored) - 1).astype(np.uint16)
        if self.padding is not None:
            stored[outside] = self.padding
        return stored


GE = Profile()
SIGNED = Profile(signed=True, bits_stored=16, intercept=0.0, padding=-2000, implicit=True,
                 manufacturer="SIEMENS")
SLOPE_HALF = Profile(bits_stored=16, slope=0.5, intercept=-1024.0, padding=None,
                     manufacturer="Philips")


@dataclass
class SeriesSpec:
    """One series to write; the defaults are the diagnostic soft-tissue axial series."""

    n: int = 24
    spacing: float = 5.0
    matrix: int = 64
    pixel_mm: float = 3.5
    kernel: str = "STANDARD"
    description: str = "Head 5mm STND"
    window: tuple[float, float] = (40.0, 80.0)
    image_type: str = "ORIGINAL\\PRIMARY\\AXIAL"
    orientation: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    tilt_deg: float = 0.0
    profile: Profile = field(default_factory=Profile)
    modality: str = "CT"
    sop_class: str = CTImageStorage
    body_part: str = "HEAD"
    study_description: str = "CT HEAD WO CONTRAST"
    contrast: str | None = None
    noise: float = 6.0


def make_series(study: str, series: str, spec: SeriesSpec, *, seed: int = 0) -> list[Dataset]:
    """Datasets of one series, slice z ascending; InstanceNumber descending (GE-like)."""
    rng = np.random.default_rng(seed)
    outside = _fov_mask(spec.matrix)
    z0 = -(spec.n - 1) * spec.spacing / 2
    t = math.radians(spec.tilt_deg)
    orientation = spec.orientation
    if spec.tilt_deg:
        orientation = (1.0, 0.0, 0.0, 0.0, math.cos(t), math.sin(t))
    row = np.array(orientation[:3])
    col = np.array(orientation[3:])
    normal = np.cross(row, col)
    out = []
    for i in range(spec.n):
        z = z0 + i * spec.spacing
        hu = head_hu(spec.matrix, z, rng, pixel_mm=spec.pixel_mm, noise=spec.noise)
        stored = spec.profile.encode(hu, outside)
        half = (spec.matrix - 1) / 2 * spec.pixel_mm
        centre = np.array([0.0, 0.0, z]) if spec.tilt_deg else normal * z
        origin = centre - row * half - col * half
        ds = _dataset(study, series, f"{series}.{i}", spec, stored)
        ds.ImagePositionPatient = [f"{v:.4f}" for v in origin]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in orientation]
        ds.InstanceNumber = spec.n - i
        ds.SliceLocation = f"{z:.2f}"
        out.append(ds)
    return out


def _dataset(study: str, series: str, sop_tag: str, spec: SeriesSpec,
             stored: np.ndarray) -> Dataset:
    p = spec.profile
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = spec.sop_class
    meta.MediaStorageSOPInstanceUID = uid(sop_tag)
    meta.TransferSyntaxUID = ImplicitVRLittleEndian if p.implicit else ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = spec.sop_class
    ds.SOPInstanceUID = uid(sop_tag)
    ds.StudyInstanceUID = uid(study)
    ds.SeriesInstanceUID = uid(series)
    ds.FrameOfReferenceUID = uid(study + ".for")
    ds.Modality = spec.modality
    ds.Manufacturer = p.manufacturer
    ds.PatientID = "BAD-" + hashlib.sha1(study.encode()).hexdigest()[:6]
    ds.PatientName = "Corpus^Bad"
    ds.AccessionNumber = "ACC" + hashlib.sha1(study.encode()).hexdigest()[:6]
    ds.StudyDate = "20240102"
    ds.StudyDescription = spec.study_description
    ds.SeriesDescription = spec.description
    if spec.body_part:
        ds.BodyPartExamined = spec.body_part
    ds.ImageType = spec.image_type.split("\\")
    ds.ConvolutionKernel = spec.kernel
    ds.KVP = "120"
    ds.SliceThickness = f"{spec.spacing:g}"
    ds.GantryDetectorTilt = f"{spec.tilt_deg:g}"
    if spec.contrast is not None:
        ds.ContrastBolusAgent = spec.contrast
    ds.SeriesNumber = 2
    ds.PixelSpacing = [f"{spec.pixel_mm:g}", f"{spec.pixel_mm:g}"]
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = p.bits_stored
    ds.HighBit = p.bits_stored - 1
    ds.PixelRepresentation = 1 if p.signed else 0
    ds.RescaleIntercept = f"{p.intercept:g}"
    ds.RescaleSlope = f"{p.slope:g}"
    ds.RescaleType = "HU"
    ds.WindowCenter = f"{spec.window[0]:g}"
    ds.WindowWidth = f"{spec.window[1]:g}"
    if p.padding is not None:
        ds.PixelPaddingValue = p.padding
    ds.PixelData = stored.tobytes()
    return ds


def to_bytes(ds: Dataset) -> bytes:
    buf = BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def localizer(study: str, spec: SeriesSpec | None = None) -> list[Dataset]:
    """One coronal scout image (ImageType LOCALIZER)."""
    base = spec or SeriesSpec()
    s = SeriesSpec(**{**base.__dict__, "n": 1, "kernel": "STANDARD", "description": "Scout",
                      "image_type": "ORIGINAL\\PRIMARY\\LOCALIZER",
                      "orientation": (1.0, 0.0, 0.0, 0.0, 0.0, -1.0), "tilt_deg": 0.0})
    return make_series(study, study + ".loc", s, seed=1)


def bone(study: str, spec: SeriesSpec | None = None) -> list[Dataset]:
    base = spec or SeriesSpec()
    s = SeriesSpec(**{**base.__dict__, "kernel": "BONE", "description": "Head 5mm BONE",
                      "window": (500.0, 2000.0), "noise": 25.0})
    return make_series(study, study + ".bone", s, seed=2)


# --------------------------------------------------------------------------- the corpus
@dataclass
class Case:
    """One study (or loose object) of the corpus and what the validator must say about it."""

    name: str
    verdict: Verdict
    reasons: list[Reason]
    objects: dict[str, bytes]  #: key → bytes
    study: str | None = None  #: study tag (None for unreadable loose objects)

    @property
    def study_uid(self) -> str | None:
        return uid(self.study) if self.study else None


def _keyed(datasets: list[Dataset], rng: np.random.Generator,
           encode: Callable[[Dataset], bytes] = to_bytes) -> dict[str, bytes]:
    # flat layout, random names: nothing may be read from keys
    return {f"{rng.bytes(8).hex()}.dcm" if i % 3 else rng.bytes(6).hex(): encode(ds)
            for i, ds in enumerate(datasets)}


def _study(name: str, spec: SeriesSpec, *, extras: bool = True,
           mutate: Callable[[list[Dataset]], list[Dataset]] | None = None,
           encode: Callable[[Dataset], bytes] = to_bytes) -> list[Dataset]:
    main = make_series(name, name + ".soft", spec)
    if mutate is not None:
        main = mutate(main)
    out = list(main)
    if extras:
        out += localizer(name, spec) + bone(name, spec)
    return out


def as_enhanced(datasets: list[Dataset]) -> Dataset:
    """One Enhanced CT multi-frame object from a classic series (frames in the given order)."""
    first = datasets[0]
    ds = copy.deepcopy(first)
    ds.SOPClassUID = EnhancedCTImageStorage
    ds.file_meta.MediaStorageSOPClassUID = EnhancedCTImageStorage
    ds.SOPInstanceUID = uid(str(first.SeriesInstanceUID) + ".enhanced")
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    shared = Dataset()
    measures, orient, transform = Dataset(), Dataset(), Dataset()
    measures.PixelSpacing = first.PixelSpacing
    measures.SliceThickness = first.SliceThickness
    orient.ImageOrientationPatient = first.ImageOrientationPatient
    transform.RescaleIntercept = first.RescaleIntercept
    transform.RescaleSlope = first.RescaleSlope
    transform.RescaleType = "HU"
    shared.PixelMeasuresSequence = [measures]
    shared.PlaneOrientationSequence = [orient]
    shared.PixelValueTransformationSequence = [transform]
    ds.SharedFunctionalGroupsSequence = [shared]
    frames = []
    for d in datasets:
        item, pos = Dataset(), Dataset()
        pos.ImagePositionPatient = d.ImagePositionPatient
        item.PlanePositionSequence = [pos]
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = frames
    for kw in ("PixelSpacing", "SliceThickness", "ImageOrientationPatient", "ImagePositionPatient",
               "RescaleIntercept", "RescaleSlope", "RescaleType", "InstanceNumber",
               "SliceLocation"):
        if kw in ds:
            delattr(ds, kw)
    ds.NumberOfFrames = len(datasets)
    ds.PixelData = b"".join(d.PixelData for d in datasets)
    return ds


def _rle(ds: Dataset) -> bytes:
    if str(ds.ImageType[2]) == "AXIAL" and "STANDARD" in str(ds.ConvolutionKernel):
        ds = copy.deepcopy(ds)
        ds.compress(RLELossless)
    return to_bytes(ds)


def _garbage_j2k(ds: Dataset) -> bytes:
    """Claims JPEG 2000 Lossless with fragments that are not a codestream."""
    if "STANDARD" not in str(ds.ConvolutionKernel) or str(ds.ImageType[2]) != "AXIAL":
        return to_bytes(ds)
    ds = copy.deepcopy(ds)
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    from pydicom.encaps import encapsulate

    ds.PixelData = encapsulate([b"\x00\x01garbage-not-j2k" * 40])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    buf = BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


@lru_cache(maxsize=2)
def build_corpus(seed: int = 11) -> list[Case]:
    """Every case of the corpus (small: 64² matrices, ~24 slices). Cached: treat as read-only."""
    rng = np.random.default_rng(seed)
    cases: list[Case] = []
    ok, reject = Verdict.ACCEPT, Verdict.REJECT
    warn = Verdict.ACCEPT_WITH_WARNING

    def add(name: str, verdict: Verdict, reasons: list[Reason], datasets: list[Dataset],
            encode: Callable[[Dataset], bytes] = to_bytes) -> None:
        cases.append(Case(name, verdict, reasons, _keyed(datasets, rng, encode), name))

    add("good_ge", ok, [], _study("good_ge", SeriesSpec()))
    add("good_signed", ok, [], _study("good_signed", SeriesSpec(
        profile=SIGNED, body_part="", study_description="CT SCHAEDEL NATIV",
        kernel="H31s", description="Kopf 5.0 H31s")))
    add("good_slope", ok, [], _study("good_slope", SeriesSpec(profile=SLOPE_HALF,
                                                              kernel="UB", body_part="BRAIN")))
    add("good_rle", ok, [], _study("good_rle", SeriesSpec()), encode=_rle)
    add("good_thin_no_extras", ok, [], _study("good_thin_no_extras", SeriesSpec(
        n=60, spacing=2.0), extras=False))

    add("good_enhanced_ct", ok, [], _study(
        "good_enhanced_ct", SeriesSpec(),
        mutate=lambda d: [as_enhanced([d[i] for i in np.random.default_rng(3).permutation(24)])]))
    add("not_ct_mr", reject, [Reason.NOT_CT], _study("not_ct_mr", SeriesSpec(
        modality="MR", sop_class=MRImageStorage), extras=False))
    add("not_ct_sc", reject, [Reason.NOT_CT], _study("not_ct_sc", SeriesSpec(
        modality="OT", sop_class=SecondaryCaptureImageStorage), extras=False))
    add("not_ct_dose_screen", reject, [Reason.NOT_CT], _study("not_ct_dose_screen", SeriesSpec(
        n=2, modality="CT", sop_class=SecondaryCaptureImageStorage,
        image_type="DERIVED\\SECONDARY\\OTHER", description="Dose Report"), extras=False))
    add("good_canon", ok, [], _study("good_canon", SeriesSpec(
        profile=Profile(signed=True, bits_stored=16, intercept=-1024.0, padding=-2000,
                        manufacturer="TOSHIBA"), kernel="FC21", body_part="",
        study_description="", description="Brain 5.0 FC21")))
    add("good_no_anatomy_text", ok, [], _study("good_no_anatomy_text", SeriesSpec(
        body_part="", study_description="", description="5.0 mm", kernel="Hr38",
        profile=SIGNED)))
    add("not_head", reject, [Reason.NOT_HEAD], _study("not_head", SeriesSpec(
        body_part="CHEST", study_description="CT CHEST", description="Chest 5mm")))
    add("no_axial_series", reject, [Reason.NO_AXIAL_SERIES], localizer("no_axial_series"))
    add("non_axial", reject, [Reason.NON_AXIAL_ORIENTATION], _study("non_axial", SeriesSpec(
        orientation=(0.0, 1.0, 0.0, 0.0, 0.0, -1.0), description="Head SAG"), extras=False))
    add("too_few_slices", reject, [Reason.TOO_FEW_SLICES],
        _study("too_few_slices", SeriesSpec(n=5)))

    def odd_spacing(dss: list[Dataset]) -> list[Dataset]:
        dss[7].PixelSpacing = ["3.0", "3.0"]
        return dss

    add("inconsistent_geometry", reject, [Reason.INCONSISTENT_GEOMETRY],
        _study("inconsistent_geometry", SeriesSpec(), mutate=odd_spacing))
    def odd_matrix(dss: list[Dataset]) -> list[Dataset]:
        small = make_series("inconsistent_matrix", "inconsistent_matrix.small",
                            SeriesSpec(n=1, matrix=32, pixel_mm=7.0), seed=5)[0]
        small.ImagePositionPatient = dss[10].ImagePositionPatient
        small.SeriesInstanceUID = dss[10].SeriesInstanceUID
        dss[10] = small
        return dss

    add("inconsistent_matrix", reject, [Reason.INCONSISTENT_GEOMETRY],
        _study("inconsistent_matrix", SeriesSpec(), mutate=odd_matrix))

    def odd_orientation(dss: list[Dataset]) -> list[Dataset]:
        dss[12].ImageOrientationPatient = ["0", "1", "0", "0", "0", "-1"]
        return dss

    add("inconsistent_orientation", reject, [Reason.INCONSISTENT_GEOMETRY],
        _study("inconsistent_orientation", SeriesSpec(), mutate=odd_orientation))
    add("slice_gap", reject, [Reason.SLICE_GAP],
        _study("slice_gap", SeriesSpec(), mutate=lambda d: d[:10] + d[12:]))

    def conflicting_copy(dss: list[Dataset]) -> list[Dataset]:
        twin = copy.deepcopy(dss[5])
        twin.ImagePositionPatient = dss[9].ImagePositionPatient
        return [*dss, twin]

    add("duplicate_conflict", reject, [Reason.DUPLICATE_INSTANCE],
        _study("duplicate_conflict", SeriesSpec(), mutate=conflicting_copy))

    def pixel_only_copy(dss: list[Dataset]) -> list[Dataset]:
        twin = copy.deepcopy(dss[6])
        arr = np.frombuffer(twin.PixelData, np.uint16).copy()
        arr[:100] = 2000
        twin.PixelData = arr.tobytes()
        return [*dss, twin]

    add("duplicate_pixels_differ", reject, [Reason.DUPLICATE_INSTANCE],
        _study("duplicate_pixels_differ", SeriesSpec(), mutate=pixel_only_copy))
    add("duplicate_resent", warn, [Reason.DUPLICATE_INSTANCE],
        _study("duplicate_resent", SeriesSpec(), mutate=lambda d: [*d, d[4], d[8]]))

    def no_rescale(dss: list[Dataset]) -> list[Dataset]:
        for ds in dss:
            del ds.RescaleIntercept
            del ds.RescaleSlope
        return dss

    add("missing_rescale", reject, [Reason.MISSING_RESCALE],
        _study("missing_rescale", SeriesSpec(), mutate=no_rescale))

    def intercept_zero(dss: list[Dataset]) -> list[Dataset]:
        for ds in dss:
            ds.RescaleIntercept = "0"  # stored values are HU + 1024: air lands near 0
        return dss

    add("hu_offset", reject, [Reason.HU_OUT_OF_RANGE],
        _study("hu_offset", SeriesSpec(), mutate=intercept_zero))

    def intercept_high_undeclared_padding(dss: list[Dataset]) -> list[Dataset]:
        # intercept 1024 too high (air ~ +24 HU, brain ~ 1,050 HU) while the -2048 fill, with no
        # PixelPaddingValue, reads -1024 and would pass for air
        for ds in dss:
            del ds.PixelPaddingValue
            ds.RescaleIntercept = "1024"
        return dss

    add("hu_offset_padded", reject, [Reason.HU_OUT_OF_RANGE], _study(
        "hu_offset_padded", SeriesSpec(pixel_mm=5.0, profile=Profile(  # 320 mm field: much air
            signed=True, bits_stored=16, intercept=0.0, padding=-2048, manufacturer="TOSHIBA")),
        mutate=intercept_high_undeclared_padding))
    wrap = Profile(bits_stored=12, intercept=0.0, padding=None)

    def wrapped(dss: list[Dataset]) -> list[Dataset]:
        # RSNA-2019 quirk: signed 12-bit values written as unsigned 12-bit (air -> 3096)
        for ds in dss:
            v = np.frombuffer(ds.PixelData, np.uint16).astype(np.int32)
            ds.PixelData = (v & 0x0FFF).astype(np.uint16).tobytes()
        return dss

    add("hu_wraparound", reject, [Reason.HU_OUT_OF_RANGE], _study(
        "hu_wraparound", SeriesSpec(profile=Profile(signed=True, bits_stored=12, intercept=0.0,
                                                    padding=None)),
        mutate=lambda d: _as_unsigned(wrapped(d), wrap)))
    add("pixel_decode_failed", reject, [Reason.PIXEL_DECODE_FAILED],
        _study("pixel_decode_failed", SeriesSpec()), encode=_garbage_j2k)
    add("contrast", warn, [Reason.CONTRAST_ENHANCED],
        _study("contrast", SeriesSpec(contrast="OMNIPAQUE 350")))
    add("contrast_none_text", ok, [], _study("contrast_none_text", SeriesSpec(contrast="NONE")))
    add("gantry_tilt", warn, [Reason.GANTRY_TILT],
        _study("gantry_tilt", SeriesSpec(tilt_deg=18.0)))

    good = to_bytes(make_series("loose", "loose.s", SeriesSpec(n=1))[0])
    loose = {
        "notes/readme.txt": b"this is not DICOM\n",
        "empty.dcm": b"",
        "truncated_pixels.dcm": good[: len(good) - 3000],
        "truncated_header.dcm": good[:300],
        "random.bin": rng.bytes(5000),
        "DICM_only.dcm": b"\0" * 128 + b"DICM",
    }
    for key, data in loose.items():
        cases.append(Case(f"unreadable:{key}", reject, [Reason.UNREADABLE], {key: data}))
    return cases


def _as_unsigned(dss: list[Dataset], profile: Profile) -> list[Dataset]:
    for ds in dss:
        ds.PixelRepresentation = 0
        ds.BitsStored = profile.bits_stored
        ds.HighBit = profile.bits_stored - 1
        ds.RescaleIntercept = "0"
    return dss


def write_corpus(folder: Path, cases: list[Case]) -> None:
    """All objects of ``cases`` into ``folder`` (flat, except the loose text file)."""
    for case in cases:
        for key, data in case.objects.items():
            path = folder / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
