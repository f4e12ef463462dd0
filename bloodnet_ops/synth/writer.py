"""Encoding rendered studies as CT Image Storage files, fast.

Each series is one template :class:`pydicom.Dataset` whose elements are encoded once (by pydicom,
so every VR is written correctly); per slice only the instance UID, instance number, position,
slice location and pixel data are encoded, by hand, and spliced in tag order. That is ~50x faster
than ``dcmwrite`` per file and byte-for-byte what ``dcmwrite`` would produce.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom import Dataset
from pydicom.datadict import tag_for_keyword
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from bloodnet_ops.synth.study import RenderedStudy

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
IMPLEMENTATION_VERSION = "BLOODNET_SYNTH1"
_PIXEL_TAG = 0x7FE00010

#: Per-slice attributes, encoded for every file.
DYNAMIC = ("SOPInstanceUID", "InstanceNumber", "ImagePositionPatient", "SliceLocation")


def ds_str(v: float) -> str:
    """A DS value: at most 4 decimals, no trailing zeros, never longer than 16 characters."""
    s = f"{v:.4f}".rstrip("0").rstrip(".")
    return "0" if s in ("", "-0") else s


def _text_element(tag: int, vr: str, value: str, implicit: bool) -> bytes:
    raw = value.encode("ascii")
    if len(raw) % 2:
        raw += b"\0" if vr == "UI" else b" "
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    if implicit:
        return head + struct.pack("<I", len(raw)) + raw
    return head + vr.encode() + struct.pack("<H", len(raw)) + raw


def _pixel_element(pixels: bytes, implicit: bool) -> bytes:
    head = struct.pack("<HH", 0x7FE0, 0x0010)
    if implicit:
        return head + struct.pack("<I", len(pixels))
    return head + b"OW\0\0" + struct.pack("<I", len(pixels))


def file_meta(sop_uid: str, transfer_syntax: str) -> bytes:
    """Preamble, magic and the group-2 file meta information (always explicit VR LE)."""
    def el(tag: int, vr: str, value: str) -> bytes:
        return _text_element(tag, vr, value, implicit=False)

    body = (
        struct.pack("<HH", 0x0002, 0x0001) + b"OB\0\0" + struct.pack("<I", 2) + b"\0\1"
        + el(0x00020002, "UI", CT_IMAGE_STORAGE)
        + el(0x00020003, "UI", sop_uid)
        + el(0x00020010, "UI", transfer_syntax)
        + el(0x00020012, "UI", PYDICOM_IMPLEMENTATION_UID)
        + el(0x00020013, "SH", IMPLEMENTATION_VERSION)
    )
    group_len = struct.pack("<HH", 0x0002, 0x0000) + b"UL" + struct.pack("<HI", 4, len(body))
    return b"\0" * 128 + b"DICM" + group_len + body


class SeriesEncoder:
    """Encodes the instances of one series from a template dataset."""

    def __init__(self, template: Dataset, *, implicit_vr: bool) -> None:
        self.implicit = implicit_vr
        self.transfer_syntax = ImplicitVRLittleEndian if implicit_vr else ExplicitVRLittleEndian
        dyn_tags = sorted(tag_for_keyword(k) for k in DYNAMIC)  # type: ignore[misc]
        fp = DicomBytesIO()
        fp.is_little_endian = True
        fp.is_implicit_VR = implicit_vr
        static: list[tuple[int, bytes]] = []
        for elem in template:
            if int(elem.tag) in dyn_tags or int(elem.tag) == _PIXEL_TAG:
                continue
            start = fp.tell()
            write_data_element(fp, elem)
            static.append((int(elem.tag), bytes(fp.getvalue()[start:])))
        # Chunks of static bytes between the dynamic tags, so a slice is a handful of joins.
        self._chunks: list[bytes] = []
        i = 0
        for t in dyn_tags:
            j = i
            while j < len(static) and static[j][0] < t:
                j += 1
            self._chunks.append(b"".join(b for _, b in static[i:j]))
            i = j
        self._tail = b"".join(b for _, b in static[i:])
        self._dyn_tags = dyn_tags

    def encode(self, *, sop_uid: str, number: int, position: Sequence[float],
               slice_location: float | None, pixels: bytes) -> bytes:
        """One file: meta, static elements, the per-slice ones, pixel data."""
        imp = self.implicit
        values = {
            0x00080018: _text_element(0x00080018, "UI", sop_uid, imp),
            0x00200013: _text_element(0x00200013, "IS", str(number), imp),
            0x00200032: _text_element(0x00200032, "DS", "\\".join(ds_str(v) for v in position),
                                      imp),
            0x00201041: b"" if slice_location is None else _text_element(
                0x00201041, "DS", ds_str(slice_location), imp),
        }
        parts = [file_meta(sop_uid, self.transfer_syntax)]
        for chunk, tag in zip(self._chunks, self._dyn_tags, strict=True):
            parts.append(chunk)
            parts.append(values[tag])
        parts.append(self._tail)
        parts.append(_pixel_element(pixels, imp))
        parts.append(pixels)
        return b"".join(parts)


@dataclass
class SeriesOut:
    """What was written for one series."""

    series_uid: str
    kind: str  #: localizer | soft | bone
    paths: list[Path] = field(default_factory=list)
    sop_uids: list[str] = field(default_factory=list)
    positions: list[float] = field(default_factory=list)  #: z of each written slice, in order


def base_dataset(st: RenderedStudy) -> Dataset:
    """Patient, study, equipment and frame-of-reference attributes shared by all series."""
    plan, prof = st.plan, st.profile
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.StudyDate = plan.study_date
    ds.StudyTime = plan.study_time
    ds.AccessionNumber = plan.accession
    ds.Modality = "CT"
    ds.Manufacturer = prof.manufacturer
    ds.InstitutionName = plan.site
    ds.ReferringPhysicianName = ""
    ds.StationName = f"{prof.key.split('-')[0].upper()}CT{plan.index % 3 + 1}"
    ds.StudyDescription = "CT HEAD WO CONTRAST"
    ds.ManufacturerModelName = prof.model
    ds.PatientName = plan.patient_name
    ds.PatientID = plan.patient_id
    year = int(plan.study_date[:4]) - plan.patient_age
    ds.PatientBirthDate = f"{year:04d}0101"
    ds.PatientSex = plan.patient_sex
    ds.PatientAge = f"{plan.patient_age:03d}Y"
    ds.BodyPartExamined = "HEAD"
    ds.KVP = ds_str(st.kvp)
    ds.DeviceSerialNumber = str(zlib.crc32(prof.key.encode()) % 90000 + 10000)
    ds.SoftwareVersions = prof.software
    ds.ProtocolName = "HEAD ROUTINE"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = plan.study_uid
    ds.StudyID = str(1000 + plan.index)
    ds.FrameOfReferenceUID = plan.frame_uid
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = prof.bits_stored
    ds.HighBit = prof.bits_stored - 1
    ds.PixelRepresentation = prof.pixel_representation
    ds.RescaleIntercept = ds_str(prof.intercept)
    ds.RescaleSlope = ds_str(prof.slope)
    ds.RescaleType = "HU"
    if prof.manufacturer.startswith("GE"):
        ds.add_new(0x00090010, "LO", "GEMS_IDEN_01")
        ds.add_new(0x00091001, "LO", "CT_LIGHTSPEED" if "Light" in prof.model else "CT_OPTIMA")
    return ds


def _series_time(plan_time: str, minutes: int) -> str:
    h, m, s = int(plan_time[:2]), int(plan_time[2:4]), int(plan_time[4:6])
    t = (h * 3600 + m * 60 + s + minutes * 60) % 86400
    return f"{t // 3600:02d}{t // 60 % 60:02d}{t % 60:02d}"


def _apply(ds: Dataset, overrides: Mapping[str, object]) -> None:
    for kw, val in overrides.items():
        if val is None:
            if kw in ds:
                delattr(ds, kw)
        else:
            setattr(ds, kw, val)


def series_template(st: RenderedStudy, kind: str, overrides: Mapping[str, object]) -> Dataset:
    """The full static header of one series (everything but the per-slice elements)."""
    prof, plan, geo = st.profile, st.plan, st.geometry
    ds = base_dataset(st)
    number = {"localizer": 1, "soft": 2, "bone": 3}[kind]
    ds.SeriesNumber = number
    ds.AcquisitionNumber = 1 if kind != "localizer" else 0
    time = _series_time(plan.study_time, 0 if kind == "localizer" else 1)
    ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = plan.study_date
    ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = time
    names = prof.names
    t = ds_str(geo.thickness)
    if kind == "localizer":
        loc = st.localizer
        ds.SeriesInstanceUID = plan.localizer_uid
        ds.SeriesDescription = names[0]
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        ds.ImageOrientationPatient = ["0", "1", "0", "0", "0", "-1"]
        ds.PixelSpacing = [ds_str(loc.spacing), ds_str(loc.spacing)]
        ds.SliceThickness = "1"
        ds.Rows, ds.Columns = loc.hu.shape
        ds.ConvolutionKernel = prof.soft_kernel
        ds.XRayTubeCurrent = 30
        ds.ExposureTime = 3500
        ds.WindowCenter, ds.WindowWidth = "40", "400"
        del ds.RescaleType  # a scout is not calibrated in HU
    else:
        ds.SeriesInstanceUID = plan.soft_uid if kind == "soft" else plan.bone_uid
        ds.SeriesDescription = names[1 if kind == "soft" else 2].format(t=t)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        if prof.manufacturer == "SIEMENS":
            ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "CT_SOM5 SPI"]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.PixelSpacing = [ds_str(geo.pixel_spacing), ds_str(geo.pixel_spacing)]
        ds.SliceThickness = t
        ds.Rows = ds.Columns = geo.matrix
        ds.ReconstructionDiameter = ds_str(geo.fov)
        ds.DataCollectionDiameter = "500"
        ds.GantryDetectorTilt = "0"
        ds.TableHeight = ds_str(150.0 - geo.recon_centre[1])
        ds.RotationDirection = "CW"
        ds.XRayTubeCurrent = int(st.tube_ma)
        ds.ExposureTime = 1000
        ds.ConvolutionKernel = prof.soft_kernel if kind == "soft" else prof.bone_kernel
        if kind == "soft":
            wc, ww = (["40", "600"], ["80", "2800"]) if prof.two_windows else ("40", "80")
        else:
            c, w = prof.bone_window
            wc, ww = ([ds_str(c), "40"], [ds_str(w), "80"]) if prof.two_windows else (
                ds_str(c), ds_str(w))
        ds.WindowCenter, ds.WindowWidth = wc, ww
    if prof.padding is not None:
        ds.add_new(0x00280120, "US" if prof.pixel_representation == 0 else "SS", prof.padding)
    _apply(ds, overrides)
    return ds


def write_series(
    st: RenderedStudy,
    kind: str,
    folder: Path,
    *,
    overrides: Mapping[str, object] | None = None,
    skip: Iterable[int] = (),
) -> SeriesOut:
    """Encode and write one series under ``folder`` (created). ``skip`` drops slice indices
    (ascending-z indices) to make a slice gap."""
    prof, geo, plan = st.profile, st.geometry, st.plan
    template = series_template(st, kind, overrides or {})
    enc = SeriesEncoder(template, implicit_vr=prof.implicit_vr)
    folder.mkdir(parents=True, exist_ok=True)
    out = SeriesOut(series_uid=str(template.SeriesInstanceUID), kind=kind)
    if kind == "localizer":
        stored = prof.to_stored(st.localizer.hu)
        sop = plan.uid("localizer", 1)
        data = enc.encode(sop_uid=sop, number=1, position=st.localizer.origin,
                          slice_location=None, pixels=stored.tobytes())
        path = folder / f"{sop}.dcm"
        path.write_bytes(data)
        out.paths.append(path)
        out.sop_uids.append(sop)
        return out
    vol = st.soft if kind == "soft" else st.bone
    stored = prof.to_stored(vol)
    stored[:, st.outside] = prof.dtype.type(prof.outside)
    nz = vol.shape[0]
    skipped = set(skip)
    order = range(nz - 1, -1, -1) if prof.descending else range(nz)
    number = 0
    for k in order:
        if k in skipped:
            continue
        number += 1
        z = float(geo.positions[k])
        sop = plan.uid(kind, k)
        data = enc.encode(
            sop_uid=sop, number=number, position=(geo.x0, geo.y0, z),
            slice_location=z if prof.slice_location else None,
            pixels=np.ascontiguousarray(stored[k]).tobytes(),
        )
        path = folder / f"{sop}.dcm"
        path.write_bytes(data)
        out.paths.append(path)
        out.sop_uids.append(sop)
        out.positions.append(z)
    return out
