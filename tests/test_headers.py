"""Header-only parsing from the first ranged GET: prefixes, long headers, odd files, no crash."""

from __future__ import annotations

import copy
from io import BytesIO

import numpy as np
import pydicom
import pytest
from badcorpus import GE, SIGNED, SeriesSpec, _garbage_j2k, make_series, to_bytes
from pydicom.dataset import Dataset

from bloodnet_ops.headers import read_header, read_headers
from bloodnet_ops.reasons import Reason
from bloodnet_ops.records import ObjectRef, SliceHeader, UnreadableObject
from bloodnet_ops.storage import HEADER_BYTES, LocalSource


def _one(**kw) -> Dataset:
    return make_series("hdr-study", "hdr-series", SeriesSpec(n=1, **kw))[0]


class _Fetch:
    """fetch_full stand-in that counts calls (the data is real; only the GET is local)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.calls = data, 0

    def __call__(self) -> bytes:
        self.calls += 1
        return self.data


def _read(data: bytes, prefix: int = HEADER_BYTES, key: str = "k") -> tuple[object, int]:
    fetch = _Fetch(data)
    ref = ObjectRef(key, "etag", len(data))
    return read_header(ref, data[:prefix], fetch), fetch.calls


def test_prefix_is_enough_for_a_ct_header() -> None:
    data = to_bytes(_one(matrix=128))
    assert len(data) > HEADER_BYTES
    h, calls = _read(data)
    assert isinstance(h, SliceHeader) and calls == 0
    assert h.modality == "CT" and h.rows == 128 and h.has_pixel_data
    assert h.rescale_intercept == -1024.0 and h.bits_stored == 12 and h.padding_value == 0
    assert h.orientation == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    assert h.kernel == "STANDARD" and h.image_type == ("ORIGINAL", "PRIMARY", "AXIAL")
    assert h.window_center == 40.0 and h.body_part == "HEAD"


def test_long_header_triggers_exactly_one_full_get() -> None:
    ds = _one(matrix=128)
    ds.add_new(0x00291010, "OB", b"\x01" * (HEADER_BYTES + 5000))  # a big private block
    data = to_bytes(ds)
    h, calls = _read(data)
    assert isinstance(h, SliceHeader) and calls == 1 and h.has_pixel_data


def test_signed_implicit_vr_and_padding_value() -> None:
    h, _ = _read(to_bytes(_one(profile=SIGNED)))
    assert isinstance(h, SliceHeader)
    assert h.pixel_representation == 1 and h.padding_value == -2000
    assert h.transfer_syntax == pydicom.uid.ImplicitVRLittleEndian


def test_file_without_preamble_or_meta_is_read() -> None:
    ds = _one()
    del ds.file_meta
    buf = BytesIO()
    pydicom.dcmwrite(buf, ds, implicit_vr=True, little_endian=True)  # bare data set
    h, _ = _read(buf.getvalue())
    assert isinstance(h, SliceHeader), h
    assert h.study_uid == ds.StudyInstanceUID and h.has_pixel_data


@pytest.mark.parametrize(
    ("name", "data", "detail"),
    [
        ("empty", b"", "empty object"),
        ("text", b"hello, not a DICOM file\n" * 10, "not DICOM"),
        ("preamble only", b"\0" * 128 + b"DICM", "without StudyInstanceUID"),
    ],
)
def test_unreadable_objects(name: str, data: bytes, detail: str) -> None:
    h, _ = _read(data)
    assert isinstance(h, UnreadableObject) and h.reason == Reason.UNREADABLE
    assert detail in h.detail


def test_truncated_pixel_data_is_detected_from_the_prefix_alone() -> None:
    full = to_bytes(_one(matrix=128))
    cut = full[: len(full) - 1000]
    fetch = _Fetch(cut)
    h = read_header(ObjectRef("k", "e", len(cut)), cut[:HEADER_BYTES], fetch)
    assert isinstance(h, UnreadableObject) and "truncated" in h.detail
    assert fetch.calls == 0  # the element length in the prefix already says it


def test_truncated_inside_the_header() -> None:
    full = to_bytes(_one())
    h, _ = _read(full[:700])
    assert isinstance(h, UnreadableObject)


def test_encapsulated_without_delimiter_is_truncated() -> None:
    ds = _one()
    data = _garbage_j2k(ds)
    ok, _ = _read(data)
    assert isinstance(ok, SliceHeader)  # undecodable, but complete: the HU stage decides
    cut, _ = _read(data[:-40])
    assert isinstance(cut, UnreadableObject) and "delimiter" in cut.detail


def test_image_without_pixel_data_is_truncated() -> None:
    ds = _one()
    del ds.PixelData
    h, _ = _read(to_bytes(ds))
    assert isinstance(h, UnreadableObject) and "without pixel data" in h.detail


def test_non_image_object_without_pixels_is_a_header() -> None:
    ds = Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.67"  # X-Ray Radiation Dose SR
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.StudyInstanceUID = "1.2.3.4"
    ds.SeriesInstanceUID = "1.2.3.4.6"
    ds.Modality = "SR"
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    h, _ = _read(to_bytes(ds))
    assert isinstance(h, SliceHeader) and not h.has_pixel_data and h.modality == "SR"


def test_missing_study_uid_is_unreadable_without_phi_in_the_detail() -> None:
    ds = _one()
    del ds.StudyInstanceUID
    h, _ = _read(to_bytes(ds))
    assert isinstance(h, UnreadableObject) and "StudyInstanceUID" in h.detail
    assert str(ds.PatientName) not in h.detail and ds.PatientID not in h.detail


def test_enhanced_ct_functional_groups() -> None:
    ds = _one()
    ds.SOPClassUID = pydicom.uid.EnhancedCTImageStorage
    shared = Dataset()
    measures, orient, transform = Dataset(), Dataset(), Dataset()
    measures.PixelSpacing = ["0.5", "0.5"]
    measures.SliceThickness = "1"
    orient.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    transform.RescaleIntercept = "-1024"
    transform.RescaleSlope = "1"
    shared.PixelMeasuresSequence = [measures]
    shared.PlaneOrientationSequence = [orient]
    shared.PixelValueTransformationSequence = [transform]
    frame, pos = Dataset(), Dataset()
    pos.ImagePositionPatient = ["0", "0", "10"]
    frame.PlanePositionSequence = [pos]
    for kw in ("PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient",
               "RescaleIntercept", "RescaleSlope", "SliceThickness"):
        delattr(ds, kw)
    ds.SharedFunctionalGroupsSequence = [shared]
    ds.PerFrameFunctionalGroupsSequence = [frame]
    h, _ = _read(to_bytes(ds))
    assert isinstance(h, SliceHeader)
    assert h.pixel_spacing == (0.5, 0.5) and h.position == (0.0, 0.0, 10.0)
    assert h.rescale_intercept == -1024.0 and h.orientation == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_never_raises_on_mutated_files() -> None:
    rng = np.random.default_rng(5)
    good = to_bytes(_one(matrix=32))
    for i in range(300):
        data = bytearray(good)
        if i % 3 == 0:
            data = data[: int(rng.integers(0, len(data)))]
        else:
            for pos in rng.integers(0, min(len(data), 1200), size=int(rng.integers(1, 20))):
                data[int(pos)] = int(rng.integers(0, 256))
        prefix = int(rng.integers(0, len(data) + 1))
        fetch = _Fetch(bytes(data))
        h = read_header(ObjectRef(f"m{i}", "e", len(data)), bytes(data[:prefix]), fetch)
        assert isinstance(h, (SliceHeader, UnreadableObject))
        assert fetch.calls <= 1


def test_read_headers_keeps_order_and_reads_only_the_prefix(tmp_path) -> None:
    datasets = make_series("hdr-study", "hdr-series", SeriesSpec(n=6, matrix=128, profile=GE))
    for i, ds in enumerate(datasets):
        (tmp_path / f"{i:02d}").write_bytes(to_bytes(ds))
    (tmp_path / "junk.txt").write_text("x")

    class Counting(LocalSource):
        def __post_init__(self) -> None:
            super().__post_init__()
            self.ranged = 0
            self.full = 0

        def get_range(self, key: str, length: int) -> bytes:
            self.ranged += 1
            return super().get_range(key, length)

        def get(self, key: str) -> bytes:
            self.full += 1
            return super().get(key)

    src = Counting(tmp_path)
    refs = list(src.list())
    out = read_headers(src, refs, workers=4)
    assert [o.key for o in out] == [r.key for r in refs]
    assert sum(isinstance(o, SliceHeader) for o in out) == 6
    assert src.ranged == 7 and src.full == 0
    # a key deleted between listing and reading is accounted for, not an error
    (tmp_path / "00").unlink()
    again = read_headers(src, refs[:1], workers=1)
    assert isinstance(again[0], UnreadableObject) and "fetch" in again[0].detail


def test_copy_with_new_sop_is_a_different_instance() -> None:
    ds = _one()
    twin = copy.deepcopy(ds)
    twin.SOPInstanceUID = "1.2.3.999"
    a, _ = _read(to_bytes(ds))
    b, _ = _read(to_bytes(twin))
    assert isinstance(a, SliceHeader) and isinstance(b, SliceHeader)
    assert a.sop_uid != b.sop_uid and a.series_uid == b.series_uid
