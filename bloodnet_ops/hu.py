"""Fast HU volume loading: the hot path between object storage and the model.

Uncompressed little-endian objects (nearly all CT archives) take a lean path: a small tag scanner
walks the top-level data set once (struct over the bytes, no element objects), stops at Pixel
Data, and the pixel values are a ``numpy.frombuffer`` view over the object bytes, written straight
into one preallocated float32 volume. Anything else (compressed transfer syntaxes, big endian,
deflate, multi-frame, float pixels, or anything the scanner does not recognise) goes through
pydicom, whose ``pixel_array`` uses gdcm / pylibjpeg / its RLE decoder.

HU rules, in this order, for every vendor profile:

1. stored values are masked to ``BitsStored`` (unsigned) or sign-extended from ``BitsStored``
   (signed, so a 12-bit two's complement value reads right whether or not the writer extended it);
2. ``PixelPaddingValue`` (and ``PixelPaddingRangeLimit``) are compared in *stored* units, before
   the rescale (DICOM PS3.3 C.7.5.1.1.2);
3. ``HU = stored * RescaleSlope + RescaleIntercept`` in float32;
4. padded voxels become :data:`PADDING_HU` (-1024, air).

The RSNA-2019 "unsigned 12-bit with intercept > -100" wrap-around is *not* corrected here: a
loader that silently reinterprets pixels would hide a scanner or export fault. The validator
rejects such series (``hu_out_of_range``: air lands near +3000 HU) and says so in the check.

Slices are sorted by ``ImagePositionPatient · normal`` (normal = row × column direction),
ascending; the slice spacing is the median step of those projections, never SliceThickness.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np

#: HU written into padded voxels (outside the reconstruction circle): air.
PADDING_HU = -1024.0

_NATIVE_TS = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}
_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN", b"SQ", b"UT", b"UC", b"UR"}

# tags read by the lean scanner (group << 16 | element)
_T_SOP_UID = 0x00080018
_T_THICKNESS = 0x00180050
_T_IPP = 0x00200032
_T_IOP = 0x00200037
_T_SPP = 0x00280002
_T_PHOTOMETRIC = 0x00280004
_T_FRAMES = 0x00280008
_T_ROWS = 0x00280010
_T_COLS = 0x00280011
_T_SPACING = 0x00280030
_T_BITS_ALLOC = 0x00280100
_T_BITS_STORED = 0x00280101
_T_PIXREP = 0x00280103
_T_PAD = 0x00280120
_T_PAD_LIMIT = 0x00280121
_T_INTERCEPT = 0x00281052
_T_SLOPE = 0x00281053
_WANTED = {
    _T_SOP_UID, _T_THICKNESS, _T_IPP, _T_IOP, _T_SPP, _T_PHOTOMETRIC, _T_FRAMES, _T_ROWS,
    _T_COLS, _T_SPACING, _T_BITS_ALLOC, _T_BITS_STORED, _T_PIXREP, _T_PAD, _T_PAD_LIMIT,
    _T_INTERCEPT, _T_SLOPE,
}
_PIXEL_DATA = 0x7FE00010
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQ_END = 0xFFFEE0DD


@dataclass(slots=True)
class HUVolume:
    """A CT series in Hounsfield units.

    Attributes
    ----------
    hu
        float32 array of shape (z, y, x) in HU; padding is :data:`PADDING_HU`.
    spacing
        (dz, dy, dx) in mm: dz from the slice positions, (dy, dx) = PixelSpacing (row, column).
    positions
        float64 array of shape (z,): ImagePositionPatient · normal in mm, ascending.
    sop_uids
        SOPInstanceUID of each slice, in z order.
    padding
        Optional boolean (z, y, x) mask of padded voxels (only when asked for).
    """

    hu: np.ndarray
    spacing: tuple[float, float, float]
    positions: np.ndarray
    sop_uids: list[str]
    padding: np.ndarray | None = field(default=None, repr=False)


class PixelDecodeError(ValueError):
    """The pixel data of a slice could not be decoded (unsupported or corrupt)."""


@dataclass(slots=True)
class _Slice:
    """One frame to place in the volume: where its stored values come from and how to rescale."""

    sop_uid: str
    rows: int
    cols: int
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    spacing: tuple[float, float] | None
    thickness: float | None
    slope: float
    intercept: float
    bits_stored: int
    signed: bool
    padding: tuple[int, int] | None  #: inclusive stored-value range that is padding
    blob: Any = None  #: bytes to view (lean path) ...
    offset: int = 0
    dtype: Any = None
    array: np.ndarray | None = None  #: ... or an already decoded frame (pydicom path)


# --------------------------------------------------------------------------- lean tag scanner
def _skip_undefined(buf: bytes, pos: int, explicit: bool, depth: int = 0) -> int:
    """Position just after the delimiter of an undefined-length value (SQ or item) at ``pos``."""
    if depth > 16:
        raise ValueError("sequence nesting too deep")
    unpack = struct.unpack_from
    n = len(buf)
    while pos + 8 <= n:
        group, elem = unpack("<HH", buf, pos)
        tag = group << 16 | elem
        if tag in (_SEQ_END, _ITEM_END):
            return pos + 8
        if group == 0xFFFE:  # item: fixed 8-byte header, length in 4 bytes
            (length,) = unpack("<I", buf, pos + 4)
            pos += 8
            if length == 0xFFFFFFFF:
                pos = _skip_undefined(buf, pos, explicit, depth + 1)
            else:
                pos += length
            continue
        hdr, length = _element_length(buf, pos, explicit)
        pos += hdr
        if length == 0xFFFFFFFF:
            pos = _skip_undefined(buf, pos, explicit, depth + 1)
        else:
            pos += length
    raise ValueError("undefined-length value without delimiter")


def _element_length(buf: bytes, pos: int, explicit: bool) -> tuple[int, int]:
    if explicit:
        vr = buf[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            return 12, struct.unpack_from("<I", buf, pos + 8)[0]
        if b"AA" <= vr <= b"ZZ":
            return 8, struct.unpack_from("<H", buf, pos + 6)[0]
        # not a VR: this writer switched to implicit VR for the element (pydicom does the same)
    return 8, struct.unpack_from("<I", buf, pos + 4)[0]


def _scan(buf: bytes) -> tuple[dict[int, bytes], int, int] | None:
    """Walk a Part 10 little-endian native object up to Pixel Data.

    Returns (wanted raw values, pixel value offset, pixel value length) or ``None`` when the
    object is anything the lean path does not handle (then pydicom takes over).
    """
    if len(buf) < 144 or buf[128:132] != b"DICM":
        return None
    unpack = struct.unpack_from
    pos, ts = 132, ""
    while pos + 8 <= len(buf):  # file meta: always explicit VR little endian
        group, elem = unpack("<HH", buf, pos)
        if group != 0x0002:
            break
        hdr, length = _element_length(buf, pos, True)
        if elem == 0x0010:
            ts = buf[pos + hdr : pos + hdr + length].decode("ascii", "replace").strip("\0 ")
        pos += hdr + length
    if ts not in _NATIVE_TS:
        return None
    explicit = ts == "1.2.840.10008.1.2.1"
    values: dict[int, bytes] = {}
    n = len(buf)
    while pos + 8 <= n:
        group, elem = unpack("<HH", buf, pos)
        tag = group << 16 | elem
        hdr, length = _element_length(buf, pos, explicit)
        if tag == _PIXEL_DATA:
            if length == 0xFFFFFFFF or pos + hdr + length > n:
                return None
            return values, pos + hdr, length
        if group >= 0x7FE0 or group == 0xFFFE:
            return None  # float pixel data or a stray delimiter: not for the lean path
        pos += hdr
        if length == 0xFFFFFFFF:
            pos = _skip_undefined(buf, pos, explicit)
            continue
        if tag in _WANTED:
            values[tag] = buf[pos : pos + length]
        pos += length
    return None


def _us(raw: bytes | None) -> int | None:
    return struct.unpack_from("<H", raw)[0] if raw is not None and len(raw) >= 2 else None


def _ds(raw: bytes | None) -> list[float] | None:
    if raw is None:
        return None
    text = raw.decode("ascii", "replace").strip("\0 ")
    if not text:
        return None
    return [float(x) for x in text.split("\\")]


def _uid(raw: bytes | None) -> str:
    return raw.decode("ascii", "replace").strip("\0 ") if raw is not None else ""


def _lean_slice(blob: bytes) -> _Slice | None:
    scanned = _scan(blob)
    if scanned is None:
        return None
    v, offset, length = scanned
    rows, cols = _us(v.get(_T_ROWS)), _us(v.get(_T_COLS))
    bits_alloc, bits_stored = _us(v.get(_T_BITS_ALLOC)), _us(v.get(_T_BITS_STORED))
    pixrep, spp = _us(v.get(_T_PIXREP)) or 0, _us(v.get(_T_SPP)) or 1
    frames = _ds(v.get(_T_FRAMES))
    if not rows or not cols or bits_alloc not in (8, 16, 32) or spp != 1:
        return None
    if frames and int(frames[0]) != 1:
        return None
    if length < rows * cols * bits_alloc // 8:
        return None  # short pixel data: let pydicom produce a proper error
    slope, intercept = _ds(v.get(_T_SLOPE)), _ds(v.get(_T_INTERCEPT))
    if slope is None or intercept is None:
        return None  # not a rescaled CT slice: pydicom path raises a clear error
    signed = pixrep == 1
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits_alloc // 8}")
    padding = _padding_range(
        _pad_value(v.get(_T_PAD), signed), _pad_value(v.get(_T_PAD_LIMIT), signed)
    )
    ipp, iop, ps = _ds(v.get(_T_IPP)), _ds(v.get(_T_IOP)), _ds(v.get(_T_SPACING))
    thick = _ds(v.get(_T_THICKNESS))
    return _Slice(
        sop_uid=_uid(v.get(_T_SOP_UID)),
        rows=rows,
        cols=cols,
        position=tuple(ipp) if ipp and len(ipp) == 3 else None,  # type: ignore[arg-type]
        orientation=tuple(iop) if iop and len(iop) == 6 else None,
        spacing=(ps[0], ps[1]) if ps and len(ps) == 2 else None,
        thickness=thick[0] if thick else None,
        slope=slope[0],
        intercept=intercept[0],
        bits_stored=bits_stored or bits_alloc,
        signed=signed,
        padding=padding,
        blob=blob,
        offset=offset,
        dtype=dtype,
    )


def _pad_value(raw: bytes | None, signed: bool) -> int | None:
    if raw is None or len(raw) < 2:
        return None
    return struct.unpack_from("<h" if signed else "<H", raw)[0]


def _padding_range(value: int | None, limit: int | None) -> tuple[int, int] | None:
    if value is None:
        return None
    if limit is None:
        return value, value
    return min(value, limit), max(value, limit)


# --------------------------------------------------------------------------- pydicom path
def _pydicom_slices(item: Any) -> list[_Slice]:
    """Decode one object (bytes or Dataset) with pydicom; enhanced multi-frame objects give one
    slice per frame with per-frame position and rescale."""
    import pydicom

    from bloodnet_ops.headers import attribute, functional_value

    ds = item if isinstance(item, pydicom.Dataset) else pydicom.dcmread(BytesIO(item), force=True)
    if "PixelData" not in ds:
        raise PixelDecodeError("object has no (integer) Pixel Data")
    try:
        arr = ds.pixel_array
    except Exception as exc:
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "?")
        raise PixelDecodeError(f"cannot decode transfer syntax {ts}: {type(exc).__name__}") from exc
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[0] != frames:
        raise PixelDecodeError(f"unexpected pixel array shape {arr.shape}")
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    bits_stored = int(ds.get("BitsStored", 0) or 0) or arr.dtype.itemsize * 8
    pad = ds.get("PixelPaddingValue")
    limit = ds.get("PixelPaddingRangeLimit")
    padding = _padding_range(
        int(pad) if isinstance(pad, int) else None, int(limit) if isinstance(limit, int) else None
    )
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    sop = str(ds.get("SOPInstanceUID", ""))
    out = []
    for i in range(frames):
        def frame_value(seq: str, kw: str, i: int = i) -> Any:
            if per_frame is not None and i < len(per_frame) and seq in per_frame[i]:
                v = per_frame[i][seq][0].get(kw)
                if v is not None:
                    return v
            if frames == 1:
                return attribute(ds, kw, seq)
            return ds.get(kw) or functional_value(ds, seq, kw)

        ipp = frame_value("PlanePositionSequence", "ImagePositionPatient")
        iop = frame_value("PlaneOrientationSequence", "ImageOrientationPatient")
        ps = frame_value("PixelMeasuresSequence", "PixelSpacing")
        th = frame_value("PixelMeasuresSequence", "SliceThickness")
        slope = frame_value("PixelValueTransformationSequence", "RescaleSlope")
        intercept = frame_value("PixelValueTransformationSequence", "RescaleIntercept")
        if slope is None or intercept is None:
            raise PixelDecodeError("no RescaleSlope/RescaleIntercept")
        out.append(
            _Slice(
                sop_uid=sop if frames == 1 else f"{sop}#{i + 1}",
                rows=arr.shape[1],
                cols=arr.shape[2],
                position=_triple(ipp),
                orientation=tuple(float(x) for x in iop) if iop is not None else None,
                spacing=(float(ps[0]), float(ps[1])) if ps is not None else None,
                thickness=float(th) if th is not None else None,
                slope=float(slope),
                intercept=float(intercept),
                bits_stored=bits_stored,
                signed=signed,
                padding=padding,
                array=arr[i],
            )
        )
    return out


def _triple(v: Any) -> tuple[float, float, float] | None:
    if v is None or len(v) != 3:
        return None
    return float(v[0]), float(v[1]), float(v[2])


# --------------------------------------------------------------------------- assembly
def _normal(orientation: tuple[float, ...] | None) -> np.ndarray:
    if orientation is None:
        return np.array([0.0, 0.0, 1.0])
    row, col = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    n = np.cross(row, col)
    norm = float(np.linalg.norm(n))
    return n / norm if norm > 1e-6 else np.array([0.0, 0.0, 1.0])


def _stored_values(s: _Slice, scratch: dict[str, np.ndarray]) -> np.ndarray:
    """Stored values of a slice as an integer array with BitsStored applied."""
    if s.array is not None:
        raw = s.array
    else:
        raw = np.frombuffer(s.blob, dtype=s.dtype, count=s.rows * s.cols, offset=s.offset)
        raw = raw.reshape(s.rows, s.cols)
    bits = raw.dtype.itemsize * 8
    if raw.dtype.kind not in "iu" or s.bits_stored >= bits or s.bits_stored <= 0:
        return raw
    shift = bits - s.bits_stored
    if s.signed:
        lo, hi = -(1 << (s.bits_stored - 1)), (1 << (s.bits_stored - 1)) - 1
        if raw.dtype.kind == "i" and raw.min() >= lo and raw.max() <= hi:
            return raw  # already sign-extended (the common case): two fast reductions, no copy
        # sign-extend from BitsStored: correct whether or not the writer already extended
        signed_dtype = np.dtype(f"i{raw.dtype.itemsize}")
        buf = scratch.get("sx")
        if buf is None or buf.shape != raw.shape or buf.dtype != signed_dtype:
            buf = scratch["sx"] = np.empty(raw.shape, signed_dtype)
        np.left_shift(raw.view(signed_dtype), shift, out=buf)
        np.right_shift(buf, shift, out=buf)
        return buf
    mask = (1 << s.bits_stored) - 1
    if raw.dtype.kind == "u" and raw.max() <= mask:
        return raw  # no bits above BitsStored (the common case)
    buf = scratch.get("mask")
    if buf is None or buf.shape != raw.shape or buf.dtype != raw.dtype:
        buf = scratch["mask"] = np.empty(raw.shape, raw.dtype)
    np.bitwise_and(raw, raw.dtype.type(mask), out=buf)
    return buf


def _assemble(slices: list[_Slice], *, padding_mask: bool) -> HUVolume:
    if not slices:
        raise ValueError("no slices to load")
    seen: set[str] = set()
    unique = []
    for s in slices:  # a re-sent object (same SOP UID) is loaded once
        if s.sop_uid and s.sop_uid in seen:
            continue
        seen.add(s.sop_uid)
        unique.append(s)
    slices = unique
    rows, cols = slices[0].rows, slices[0].cols
    if any(s.rows != rows or s.cols != cols for s in slices):
        raise ValueError("slices have different matrix sizes")
    if any(s.position is None for s in slices):
        raise ValueError("a slice has no ImagePositionPatient")
    normal = _normal(slices[0].orientation)
    proj = np.array([float(np.dot(s.position, normal)) for s in slices])
    order = np.argsort(proj, kind="stable")
    positions = proj[order]
    dz = float(np.median(np.diff(positions))) if len(positions) > 1 else 0.0
    if not dz > 0:
        dz = slices[0].thickness or 1.0
    ps = slices[0].spacing or (1.0, 1.0)

    hu = np.empty((len(slices), rows, cols), dtype=np.float32)
    pad = np.zeros(hu.shape, dtype=bool) if padding_mask else None
    scratch: dict[str, np.ndarray] = {}
    for z, i in enumerate(order):
        s = slices[int(i)]
        stored = _stored_values(s, scratch)
        out = hu[z]
        if s.slope == 1.0:
            np.add(stored, np.float32(s.intercept), out=out, casting="unsafe")
        else:
            np.multiply(stored, np.float32(s.slope), out=out, casting="unsafe")
            out += np.float32(s.intercept)
        if s.padding is not None:
            lo, hi = s.padding
            m = stored == lo if lo == hi else (stored >= lo) & (stored <= hi)
            np.copyto(out, np.float32(PADDING_HU), where=m)
            if pad is not None:
                pad[z] = m
    return HUVolume(
        hu=hu,
        spacing=(abs(dz), float(ps[0]), float(ps[1])),
        positions=positions,
        sop_uids=[slices[int(i)].sop_uid for i in order],
        padding=pad,
    )


def _slices_of(item: bytes | Any) -> list[_Slice]:
    if isinstance(item, (bytes, bytearray, memoryview, mmap.mmap)):
        blob = item if isinstance(item, (bytes, mmap.mmap)) else bytes(item)
        try:
            lean = _lean_slice(blob)
        except (ValueError, struct.error, UnicodeDecodeError):
            lean = None  # odd encoding: pydicom knows better
        if lean is not None:
            return [lean]
        return _pydicom_slices(blob if isinstance(blob, bytes) else bytes(blob))
    return _pydicom_slices(item)


def load_series(blobs: Sequence[bytes | Any], *, padding_mask: bool = False) -> HUVolume:
    """Load one series into a :class:`HUVolume`.

    Parameters
    ----------
    blobs
        Whole DICOM objects (bytes) or parsed ``pydicom.Dataset``s with pixel data, any order.
    padding_mask
        Also return the boolean mask of padded voxels (``HUVolume.padding``).

    Raises
    ------
    PixelDecodeError
        A slice's pixel data cannot be decoded (unsupported transfer syntax, corrupt stream).
    ValueError
        The slices do not form one volume (mixed matrix sizes, missing positions).
    """
    slices: list[_Slice] = []
    for item in blobs:
        slices.extend(_slices_of(item))
    return _assemble(slices, padding_mask=padding_mask)


def load_series_files(paths: Iterable[str | Path], *, padding_mask: bool = False) -> HUVolume:
    """:func:`load_series` over files on disk. Files are memory-mapped, so the pixel values are
    read once, straight from the page cache into the volume (no intermediate copy)."""
    return load_series([_map(Path(p)) for p in paths], padding_mask=padding_mask)


def _map(path: Path) -> mmap.mmap | bytes:
    with open(path, "rb") as fh:
        try:
            return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except (ValueError, OSError):  # empty file, or a file system without mmap
            return fh.read()
