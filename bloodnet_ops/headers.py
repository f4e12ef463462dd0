"""Header-only DICOM parsing: the first ranged GET of an object becomes a :class:`SliceHeader`.

The validator reads headers first (DESIGN.md §3). ``dcmread(BytesIO(prefix),
stop_before_pixels=True)`` parses a prefix that ends anywhere after the header; pydicom rewinds the
buffer to the start of the pixel data element when it stops there, so the buffer position tells
whether the whole header was in the prefix. When it was not (a long header: private blocks,
embedded icons, enhanced multi-frame functional groups) the object is fetched once in full.

pydicom reads truncated data silently (a short last value, then end of file), so truncation is
detected here explicitly:

- an image object whose parse never reaches the pixel data element;
- a native (uncompressed) pixel data element whose declared length runs past the object's size
  (checked from the prefix alone, because the element header sits in it);
- an encapsulated pixel data element without its sequence delimiter (checked when the whole
  object is at hand).

Everything that is not a parseable DICOM object with Study/Series/SOP Instance UIDs becomes an
:class:`UnreadableObject` with reason ``unreadable``. Nothing here raises for bad input, and
details never carry header values (no PHI), only what went wrong.
"""

from __future__ import annotations

import logging
import math
import struct
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from typing import Any

from bloodnet_ops.header_values import compact
from bloodnet_ops.reasons import Reason
from bloodnet_ops.records import ObjectRef, SliceHeader, UnreadableObject
from bloodnet_ops.storage import HEADER_BYTES, Source

log = logging.getLogger(__name__)

DEFLATED_TS = "1.2.840.10008.1.2.1.99"
IMPLICIT_LE_TS = "1.2.840.10008.1.2"
EXPLICIT_LE_TS = "1.2.840.10008.1.2.1"
EXPLICIT_BE_TS = "1.2.840.10008.1.2.2"

#: (7FE0,0010) Pixel Data, (7FE0,0008) Float Pixel Data, (7FE0,0009) Double Float Pixel Data.
_PIXEL_TAGS = {(0x7FE0, 0x0010), (0x7FE0, 0x0008), (0x7FE0, 0x0009)}
#: VRs whose explicit encoding has 2 reserved bytes and a 4-byte length.
_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN", b"SQ", b"UT", b"UC", b"UR"}
_SEQ_DELIMITER = b"\xfe\xff\xdd\xe0"
_VALID_VRS = {
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"OB",
    b"OD", b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM",
    b"UC", b"UI", b"UL", b"UN", b"UR", b"US", b"UT", b"UV",
}


def quiet_pydicom() -> None:
    """Silence pydicom's value warnings and decoder tracebacks (they can quote header values,
    i.e. PHI, and bad objects are reported as verdicts anyway). For CLIs and task entry points;
    importing pydicom resets its logger level, so this imports it first."""
    import warnings

    import pydicom  # noqa: F401

    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", module=r"pydicom(\..*)?")


class NotDicomError(ValueError):
    """The bytes do not start like a DICOM file, with or without the 128-byte preamble."""


def _looks_like_bare_dataset(buf: bytes) -> bool:
    """True when ``buf`` starts like a DICOM data set written without the preamble and 'DICM'.

    Some writers omit the Part 10 preamble (and sometimes the whole file meta group). We accept
    such a stream only when its first element is a plausible little-endian tag of group 0x0002
    (file meta) or 0x0008 (the first group of almost every data set), with either a valid explicit
    VR or a sane implicit length, so that arbitrary bytes are never parsed with ``force=True``.
    """
    if len(buf) < 8:
        return False
    vr = buf[4:6]
    group, elem = struct.unpack(">HH", buf[:4])
    if group == 0x0008 and elem <= 0x2000 and vr in _VALID_VRS:
        return True  # (retired) explicit VR big endian: pydicom detects it from the group
    group, elem = struct.unpack("<HH", buf[:4])
    if group not in (0x0002, 0x0008) or elem > 0x2000:
        return False
    if vr in _VALID_VRS:
        return True
    (length,) = struct.unpack("<I", buf[4:8])
    return length < 1 << 16  # implicit VR: the first elements are short


def _parse(buf: bytes) -> tuple[Any, int | None]:
    """Parse ``buf`` up to the pixel data. Returns the data set and the byte offset of the pixel
    data element in ``buf`` (``None`` when the parse ended before reaching one)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    fp = BytesIO(buf)
    try:
        ds = pydicom.dcmread(fp, stop_before_pixels=True, force=False)
    except InvalidDicomError:
        if not _looks_like_bare_dataset(buf):
            raise NotDicomError("no DICM prefix and no plausible data set at offset 0") from None
        fp = BytesIO(buf)
        ds = pydicom.dcmread(fp, stop_before_pixels=True, force=True)
    if _transfer_syntax(ds) == DEFLATED_TS:
        # the data set was inflated into a private buffer: offsets in ``buf`` are meaningless
        return ds, None
    pos = fp.tell()
    if pos + 8 > len(buf):
        return ds, None
    little = _is_little_endian(ds)
    group, elem = struct.unpack("<HH" if little else ">HH", buf[pos : pos + 4])
    return ds, pos if (group, elem) in _PIXEL_TAGS else None


def _is_little_endian(ds: Any) -> bool:
    enc = getattr(ds, "original_encoding", (None, None))
    return enc[1] is not False


def _transfer_syntax(ds: Any) -> str:
    meta = getattr(ds, "file_meta", None)
    ts = str(meta.get("TransferSyntaxUID", "") or "") if meta is not None else ""
    if ts:
        return ts.strip()
    implicit, little = getattr(ds, "original_encoding", (True, True))
    if little is False:
        return EXPLICIT_BE_TS
    return IMPLICIT_LE_TS if implicit is not False else EXPLICIT_LE_TS


def pixel_element_span(
    buf: bytes, offset: int, *, implicit: bool, little_endian: bool = True
) -> tuple[int, int | None]:
    """Header length and value length (``None`` = undefined, i.e. encapsulated) of the pixel data
    element whose tag starts at ``offset`` in ``buf``."""
    endian = "<" if little_endian else ">"
    vr = buf[offset + 4 : offset + 6]
    if not (b"AA" <= vr <= b"ZZ"):
        implicit = True  # as pydicom does: a writer switched to implicit VR for this element
    if implicit:
        (length,) = struct.unpack(endian + "I", buf[offset + 4 : offset + 8])
        header = 8
    elif vr in _LONG_VRS:  # explicit VR with a 4-byte length
        (length,) = struct.unpack(endian + "I", buf[offset + 8 : offset + 12])
        header = 12
    else:  # explicit VR with a 2-byte length (not conformant for pixels, but seen)
        (length,) = struct.unpack(endian + "H", buf[offset + 6 : offset + 8])
        header = 8
    return header, None if length == 0xFFFFFFFF else length


def _truncation(buf: bytes, offset: int, size: int, ds: Any, *, whole: bool) -> str | None:
    """Why the pixel data element at ``offset`` is cut short, or ``None`` if it looks complete."""
    implicit, little = getattr(ds, "original_encoding", (True, True))
    try:
        header, length = pixel_element_span(
            buf, offset, implicit=implicit is not False, little_endian=little is not False
        )
    except struct.error:  # the element header itself is not all there
        return "pixel data element header cut short" if whole else None
    if length is None:
        if whole and buf.rfind(_SEQ_DELIMITER, offset + header) < 0:
            return "encapsulated pixel data without sequence delimiter"
        return None
    if offset + header + length > size:
        return "pixel data runs past the end of the object"
    return None


def _is_image_object(ds: Any) -> bool:
    """An image IOD (it must carry pixel data), as opposed to SR, RT plans, presentation states."""
    if "Rows" in ds or "BitsAllocated" in ds:
        return True
    try:
        from pydicom.uid import UID

        return UID(str(ds.get("SOPClassUID", "") or "")).name.endswith("Image Storage")
    except Exception:  # noqa: BLE001 - an odd UID is not an image class
        return False


# --------------------------------------------------------------------------- value extraction
def _value(ds: Any, keyword: str) -> Any:
    try:
        return ds.get(keyword)
    except Exception:  # noqa: BLE001 - malformed values are treated as absent
        return None


def _str(ds: Any, keyword: str) -> str:
    v = _value(ds, keyword)
    if v is None:
        return ""
    if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue":
        return "\\".join(str(x).strip() for x in v)
    return str(v).strip()


def _float(v: Any) -> float | None:
    if v is None or v == "":
        return None
    if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue":
        v = v[0] if len(v) else None
        if v is None:
            return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _int(v: Any) -> int | None:
    f = _float(v)
    return int(f) if f is not None else None


def _floats(v: Any, n: int) -> tuple[float, ...] | None:
    if v is None:
        return None
    try:
        vals = tuple(float(x) for x in v)
    except (TypeError, ValueError):
        return None
    if len(vals) != n or not all(math.isfinite(x) for x in vals):
        return None
    return vals


def functional_value(ds: Any, seq: str, keyword: str) -> Any:
    """A value from the shared, else the first per-frame functional group (enhanced objects)."""
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        try:
            items = ds.get(groups)
            item = items[0] if items else None
            inner = item.get(seq) if item is not None else None
            if inner:
                v = inner[0].get(keyword)
                if v is not None:
                    return v
        except Exception:  # noqa: BLE001 - a malformed functional group is treated as absent
            log.debug("unreadable functional group %s/%s", groups, seq)
    return None


def attribute(ds: Any, keyword: str, seq: str | None = None) -> Any:
    """A top-level value, else (enhanced objects) the same keyword in functional group ``seq``."""
    v = _value(ds, keyword)
    if v is None and seq is not None:
        v = functional_value(ds, seq, keyword)
    return v


def header_from_dataset(ref: ObjectRef, ds: Any, *, has_pixel_data: bool) -> SliceHeader:
    """Build a :class:`SliceHeader` from a parsed data set (classic or enhanced CT).

    Repeated values are shared (:func:`share`); nothing of ``ds`` is kept."""
    image_type = tuple(x.upper() for x in _str(ds, "ImageType").split("\\") if x)
    orientation = _floats(attribute(ds, "ImageOrientationPatient", "PlaneOrientationSequence"), 6)
    position = _floats(attribute(ds, "ImagePositionPatient", "PlanePositionSequence"), 3)
    spacing = _floats(attribute(ds, "PixelSpacing", "PixelMeasuresSequence"), 2)
    slope = _float(attribute(ds, "RescaleSlope", "PixelValueTransformationSequence"))
    intercept = _float(attribute(ds, "RescaleIntercept", "PixelValueTransformationSequence"))
    thickness = _float(attribute(ds, "SliceThickness", "PixelMeasuresSequence"))
    kernel = _str(ds, "ConvolutionKernel")
    if not kernel:
        kernel = str(functional_value(ds, "CTReconstructionSequence", "ConvolutionKernel") or "")
    sop_uid = _str(ds, "SOPInstanceUID")
    if not sop_uid and getattr(ds, "file_meta", None) is not None:
        sop_uid = str(ds.file_meta.get("MediaStorageSOPInstanceUID", "") or "").strip()
    sop_class = _str(ds, "SOPClassUID")
    if not sop_class and getattr(ds, "file_meta", None) is not None:
        sop_class = str(ds.file_meta.get("MediaStorageSOPClassUID", "") or "").strip()
    padding = _value(ds, "PixelPaddingValue")
    frames = max(1, _int(_value(ds, "NumberOfFrames")) or 1)
    return compact(SliceHeader(
        key=ref.key,
        etag=ref.etag,
        size=ref.size,
        study_uid=_str(ds, "StudyInstanceUID"),
        series_uid=_str(ds, "SeriesInstanceUID"),
        sop_uid=sop_uid,
        sop_class_uid=sop_class,
        modality=_str(ds, "Modality").upper(),
        transfer_syntax=_transfer_syntax(ds),
        body_part=_str(ds, "BodyPartExamined"),
        study_description=_str(ds, "StudyDescription"),
        series_description=_str(ds, "SeriesDescription"),
        image_type=image_type,
        patient_id=_str(ds, "PatientID"),
        accession_number=_str(ds, "AccessionNumber"),
        institution=_str(ds, "InstitutionName"),
        manufacturer=_str(ds, "Manufacturer"),
        manufacturer_model=_str(ds, "ManufacturerModelName"),
        kernel=kernel.strip(),
        kvp=_float(_value(ds, "KVP")),
        slice_thickness=thickness,
        rows=_int(_value(ds, "Rows")),
        columns=_int(_value(ds, "Columns")),
        pixel_spacing=spacing,  # type: ignore[arg-type]
        orientation=orientation,
        position=position,  # type: ignore[arg-type]
        instance_number=_int(_value(ds, "InstanceNumber")),
        rescale_slope=slope,
        rescale_intercept=intercept,
        bits_allocated=_int(_value(ds, "BitsAllocated")),
        bits_stored=_int(_value(ds, "BitsStored")),
        pixel_representation=_int(_value(ds, "PixelRepresentation")),
        padding_value=_int(padding) if not isinstance(padding, bytes) else None,
        photometric=_str(ds, "PhotometricInterpretation"),
        samples_per_pixel=_int(_value(ds, "SamplesPerPixel")),
        number_of_frames=frames,
        contrast_agent=_str(ds, "ContrastBolusAgent"),
        gantry_tilt=_float(_value(ds, "GantryDetectorTilt")),
        study_date=_str(ds, "StudyDate"),
        has_pixel_data=has_pixel_data,
        protocol_name=_str(ds, "ProtocolName"),
        window_center=_float(_value(ds, "WindowCenter")),
        frame_positions=_frame_positions(ds) if frames > 1 else (),
    ))


def _frame_positions(ds: Any) -> tuple[tuple[float, float, float], ...]:
    """ImagePositionPatient of every frame of an enhanced multi-frame object (empty if any frame
    lacks one: the series then fails the geometry check instead of being guessed)."""
    out = []
    for item in _value(ds, "PerFrameFunctionalGroupsSequence") or []:
        try:
            pos = _floats(item.PlanePositionSequence[0].ImagePositionPatient, 3)
        except Exception:  # noqa: BLE001 - a frame without a usable position
            pos = None
        if pos is None:
            return ()
        out.append(pos)
    return tuple(out)  # type: ignore[arg-type]


def _unreadable(ref: ObjectRef, detail: str) -> UnreadableObject:
    return UnreadableObject(ref.key, ref.etag, ref.size, Reason.UNREADABLE, detail)


def read_header(
    ref: ObjectRef, first_bytes: bytes, fetch_full: Callable[[], bytes]
) -> SliceHeader | UnreadableObject:
    """Parse one object's header from its first bytes; never raises for bad content.

    Parameters
    ----------
    ref
        The object (its ``size`` decides whether ``first_bytes`` is the whole object).
    first_bytes
        The result of the ranged GET, normally :data:`storage.HEADER_BYTES` long.
    fetch_full
        Called at most once, when the header does not fit in ``first_bytes``.
    """
    try:
        return _read_header(ref, first_bytes, fetch_full)
    except Exception as exc:  # noqa: BLE001 - bad input must never stop a night (incl. deep
        # recursion from pathological sequence nesting)
        return _unreadable(ref, f"could not parse: {type(exc).__name__}")


def _read_header(
    ref: ObjectRef, first_bytes: bytes, fetch_full: Callable[[], bytes]
) -> SliceHeader | UnreadableObject:
    if ref.size == 0:
        return _unreadable(ref, "empty object")
    buf = first_bytes
    whole = len(buf) >= ref.size
    if not buf:
        buf, whole = fetch_full(), True
        if not buf:
            return _unreadable(ref, "empty object")
    try:
        ds, offset = _parse(buf)
    except NotDicomError:
        return _unreadable(ref, "not DICOM")
    except Exception as exc:  # noqa: BLE001 - may just be a prefix cut mid-element
        if whole:
            return _unreadable(ref, f"could not parse: {type(exc).__name__}")
        ds, offset = None, None
    if offset is None and not whole:
        # the prefix ended before the pixel data: one full GET, parsed the same way
        buf, whole = fetch_full(), True
        try:
            ds, offset = _parse(buf)
        except NotDicomError:
            return _unreadable(ref, "not DICOM")
        except Exception as exc:  # noqa: BLE001
            return _unreadable(ref, f"could not parse: {type(exc).__name__}")
    assert ds is not None
    size = len(buf) if whole else ref.size
    if _transfer_syntax(ds) == DEFLATED_TS:
        has_pixels = _deflated_has_pixels(buf)
    else:
        has_pixels = offset is not None
        if offset is not None:
            why = _truncation(buf, offset, size, ds, whole=whole)
            if why:
                return _unreadable(ref, f"truncated: {why}")
    if not has_pixels and _is_image_object(ds):
        return _unreadable(ref, "truncated: image object without pixel data")
    header = header_from_dataset(ref, ds, has_pixel_data=has_pixels)
    for name, value in (
        ("StudyInstanceUID", header.study_uid),
        ("SeriesInstanceUID", header.series_uid),
        ("SOPInstanceUID", header.sop_uid),
    ):
        if not value:
            return _unreadable(ref, f"DICOM object without {name}")
    return header


def _deflated_has_pixels(buf: bytes) -> bool:
    """Deflated data sets are rare; parse the whole object to see whether pixels are there."""
    import pydicom

    ds = pydicom.dcmread(BytesIO(buf), force=True)
    return any(t in ds for t in (0x7FE00010, 0x7FE00008, 0x7FE00009))


def fetch_error(exc: Exception) -> str | None:
    """A storage error that means "this object cannot be read" (gone, a folder, no permission),
    as opposed to an outage, which must propagate rather than quarantine good data."""
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, PermissionError)):
        return f"could not fetch: {type(exc).__name__}"
    code = getattr(exc, "response", {}) or {}
    code = code.get("Error", {}).get("Code") if isinstance(code, dict) else None
    if code in {"NoSuchKey", "404", "InvalidRange", "416", "AccessDenied", "403"}:
        return f"could not fetch: {code}"
    return None


def read_object_header(
    source: Source, ref: ObjectRef, *, header_bytes: int = HEADER_BYTES
) -> SliceHeader | UnreadableObject:
    """Ranged GET of ``header_bytes`` then :func:`read_header` (with one full GET if needed)."""
    try:
        first = source.get_range(ref.key, min(header_bytes, ref.size)) if ref.size else b""
        return read_header(ref, first, lambda: source.get(ref.key))
    except Exception as exc:
        why = fetch_error(exc)
        if why is None:
            raise
        return _unreadable(ref, why)


def read_headers(
    source: Source,
    objects: Sequence[ObjectRef],
    *,
    workers: int = 16,
    header_bytes: int = HEADER_BYTES,
) -> list[SliceHeader | UnreadableObject]:
    """Headers of many objects, in the order given. S3 round trips overlap in a thread pool
    (parsing holds the GIL, but the GETs dominate on an object store)."""
    if workers <= 1 or len(objects) < 4:
        return [read_object_header(source, r, header_bytes=header_bytes) for r in objects]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hdr") as pool:
        return list(
            pool.map(lambda r: read_object_header(source, r, header_bytes=header_bytes), objects)
        )
