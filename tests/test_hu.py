"""HU loading: every vendor profile gives the same HU, padding is masked before the rescale, and the
lean path agrees with pydicom's own decoding."""

from __future__ import annotations

import copy
from io import BytesIO

import numpy as np
import pydicom
import pytest
from badcorpus import GE, SIGNED, Profile, SeriesSpec, make_series, to_bytes
from pydicom.uid import RLELossless

from bloodnet_ops import hu as hu_mod
from bloodnet_ops.hu import PADDING_HU, PixelDecodeError, load_series, load_series_files
from bloodnet_ops.hu_stats import measure

PROFILES = {
    "ge_unsigned12_m1024_pad0": GE,
    "siemens_signed16_0_pad-2000": SIGNED,
    "philips_unsigned16_slope0.5": Profile(bits_stored=16, slope=0.5, padding=None),
    "toshiba_unsigned16_m1000": Profile(bits_stored=16, intercept=-1000.0, padding=None),
    "signed12_m1024_pad-2000": Profile(signed=True, bits_stored=12, intercept=-1024.0,
                                       padding=-2000),
    "unsigned16_implicit_0": Profile(bits_stored=16, intercept=0.0, padding=None, signed=True,
                                     implicit=True),
}


def _expected_hu(ds: pydicom.Dataset) -> np.ndarray:
    """HU computed the slow, obvious way from pydicom's decoded stored values."""
    stored = ds.pixel_array.astype(np.float64)
    out = stored * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    if "PixelPaddingValue" in ds:
        out[ds.pixel_array == ds.PixelPaddingValue] = PADDING_HU
    return out


def _series(profile: Profile, n: int = 12, **kw) -> list[pydicom.Dataset]:
    return make_series("hu-study", "hu-series", SeriesSpec(n=n, profile=profile, **kw), seed=3)


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_every_vendor_profile_gives_the_expected_hu(name: str) -> None:
    datasets = _series(PROFILES[name])
    blobs = [to_bytes(ds) for ds in datasets]
    vol = load_series(blobs)
    assert vol.hu.dtype == np.float32 and vol.hu.shape == (12, 64, 64)
    # make_series writes z ascending, so the volume order equals the dataset order
    expected = np.stack([_expected_hu(pydicom.dcmread(BytesIO(b))) for b in blobs])
    np.testing.assert_array_equal(vol.hu, expected.astype(np.float32))
    # the phantom's air reads as air and its brain as brain whatever the profile
    centre = vol.hu[6, 32, 32]
    assert 0 <= centre <= 60, centre
    assert abs(float(vol.hu[6, 2, 32]) + 1000) < 40 or vol.hu[6, 2, 32] == PADDING_HU


def test_profiles_agree_with_each_other() -> None:
    vols = [load_series([to_bytes(d) for d in _series(p)]).hu for p in PROFILES.values()]
    # tissue only: air below -1000 is clipped differently by each stored range (-1024, -1000)
    tissue = vols[0] > -900
    for v in vols[1:]:
        diff = np.abs(v[tissue] - vols[0][tissue])
        assert diff.max() <= 0.5  # same phantom; slope 0.5 quantises to half HU


def test_padding_is_compared_in_stored_units_before_the_rescale() -> None:
    ds = _series(Profile(bits_stored=16, intercept=-1024.0, padding=3000), n=1)[0]
    # stored 3000 would be +1976 HU after the rescale: it must become air, not bone
    vol = load_series([to_bytes(ds)], padding_mask=True)
    assert vol.padding is not None and vol.padding[0, 0, 0]
    assert vol.hu[0, 0, 0] == PADDING_HU
    assert not vol.padding[0, 32, 32]


def test_padding_range_limit() -> None:
    ds = _series(Profile(signed=True, bits_stored=16, intercept=0.0, padding=None), n=1)[0]
    arr = ds.pixel_array.copy()
    arr[:4, :] = -3000
    arr[4:8, :] = -2100
    ds.PixelData = arr.tobytes()
    ds.PixelPaddingValue = -3000
    ds.PixelPaddingRangeLimit = -2000
    vol = load_series([to_bytes(ds)], padding_mask=True)
    assert (vol.hu[0, :8] == PADDING_HU).all()
    assert vol.padding[0, :8].all() and not vol.padding[0, 8:].all()


def test_signed_12_bit_values_written_without_sign_extension() -> None:
    ds = _series(Profile(signed=True, bits_stored=12, intercept=0.0, padding=None), n=1)[0]
    expected = ds.pixel_array.astype(np.float32)  # the writer's values, properly extended
    raw = np.frombuffer(ds.PixelData, np.int16).astype(np.int32) & 0x0FFF  # 12-bit two's compl.
    ds.PixelData = raw.astype(np.uint16).tobytes()
    vol = load_series([to_bytes(ds)])
    np.testing.assert_array_equal(vol.hu[0], expected)
    assert vol.hu[0].min() < -900  # air stayed negative


def test_unsigned_high_bits_above_bits_stored_are_masked() -> None:
    ds = _series(GE, n=1)[0]
    clean = load_series([to_bytes(ds)]).hu
    dirty = np.frombuffer(ds.PixelData, np.uint16) | 0xF000  # overlay bits in the high nibble
    ds.PixelData = dirty.astype(np.uint16).tobytes()
    np.testing.assert_array_equal(load_series([to_bytes(ds)]).hu, clean)


def test_slices_sorted_by_position_not_instance_number_and_dz_from_positions() -> None:
    datasets = _series(GE, n=10, spacing=2.5)
    for ds in datasets:
        ds.SliceThickness = "5"  # thickness is not the spacing
    rng = np.random.default_rng(0)
    shuffled = [datasets[i] for i in rng.permutation(10)]
    vol = load_series([to_bytes(d) for d in shuffled])
    assert np.all(np.diff(vol.positions) > 0)
    assert vol.spacing == pytest.approx((2.5, 3.5, 3.5))
    assert vol.sop_uids == [str(d.SOPInstanceUID) for d in datasets]


def test_tilted_series_sorted_along_the_normal() -> None:
    datasets = _series(GE, n=8, tilt_deg=20.0)
    vol = load_series([to_bytes(d) for d in reversed(datasets)])
    assert vol.sop_uids == [str(d.SOPInstanceUID) for d in datasets]
    assert vol.spacing[0] == pytest.approx(5.0 * np.cos(np.radians(20.0)), rel=1e-3)


def test_rle_and_dataset_inputs_match_the_lean_path() -> None:
    datasets = _series(GE, n=4)
    lean = load_series([to_bytes(d) for d in datasets])
    rle = []
    for ds in datasets:
        c = copy.deepcopy(ds)
        c.compress(RLELossless)
        rle.append(to_bytes(c))
    np.testing.assert_array_equal(load_series(rle).hu, lean.hu)
    parsed = [pydicom.dcmread(BytesIO(to_bytes(d))) for d in datasets]
    np.testing.assert_array_equal(load_series(parsed).hu, lean.hu)


def test_lean_path_is_taken_for_native_little_endian() -> None:
    for profile in (GE, SIGNED):
        blob = to_bytes(_series(profile, n=1)[0])
        assert hu_mod._lean_slice(blob) is not None


def test_big_endian_goes_through_pydicom() -> None:
    ds = _series(SIGNED, n=1)[0]
    expected = load_series([to_bytes(ds)]).hu
    big = ds.pixel_array.astype(">i2").tobytes()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRBigEndian
    ds.PixelData = big
    buf = BytesIO()
    pydicom.dcmwrite(buf, ds, little_endian=False, implicit_vr=False)
    assert hu_mod._lean_slice(buf.getvalue()) is None
    np.testing.assert_array_equal(load_series([buf.getvalue()]).hu, expected)


def test_load_series_files(tmp_path) -> None:
    paths = []
    for i, ds in enumerate(_series(GE, n=5)):
        p = tmp_path / f"x{i}"
        p.write_bytes(to_bytes(ds))
        paths.append(p)
    vol = load_series_files(reversed(paths))
    assert vol.hu.shape == (5, 64, 64)
    assert np.all(np.diff(vol.positions) > 0)


def test_mixed_matrix_and_garbage_codestream_raise_clear_errors() -> None:
    a, b = _series(GE, n=2)
    b2 = make_series("hu-study", "hu-series2", SeriesSpec(n=1, matrix=32), seed=1)[0]
    with pytest.raises(ValueError, match="matrix"):
        load_series([to_bytes(a), to_bytes(b2)])
    from badcorpus import _garbage_j2k

    with pytest.raises(PixelDecodeError):
        load_series([_garbage_j2k(b)])


def test_measure_on_the_phantom_and_undeclared_padding() -> None:
    datasets = _series(Profile(signed=True, bits_stored=16, intercept=-1024.0, padding=None),
                       n=20)
    outside = None
    for ds in datasets:  # fill outside the scan circle with -2000 stored (-3024 HU), undeclared
        arr = ds.pixel_array.copy()
        yy, xx = np.mgrid[0:64, 0:64]
        outside = (yy - 31.5) ** 2 + (xx - 31.5) ** 2 > 32**2
        arr[outside] = -2000
        ds.PixelData = arr.tobytes()
    vol = load_series([to_bytes(d) for d in datasets], padding_mask=True)
    m = measure(vol, stride=1)
    assert m.air_peak is not None and abs(m.air_peak + 1000) <= 20
    assert m.brain_median is not None and 0 <= m.brain_median <= 80
    assert m.outside_fraction == 0.0  # the -3024 fill is padding, not out-of-range tissue
    assert m.padding_fraction == pytest.approx(outside.mean(), abs=0.01)
    assert m.lung_fraction < 0.05


@pytest.mark.parametrize("ts", [RLELossless, pydicom.uid.JPEG2000Lossless,
                                pydicom.uid.JPEGLSLossless], ids=lambda u: u.name)
@pytest.mark.parametrize("profile", [GE, SIGNED], ids=["unsigned12", "signed16"])
def test_lossless_compressed_series_decode_to_the_same_hu(ts, profile) -> None:
    datasets = _series(profile, n=2)
    reference = load_series([to_bytes(d) for d in datasets]).hu
    compressed = []
    for ds in datasets:
        c = copy.deepcopy(ds)
        c.compress(ts)
        compressed.append(to_bytes(c))
    np.testing.assert_array_equal(load_series(compressed).hu, reference)


def test_enhanced_ct_frames_become_sorted_slices() -> None:
    from badcorpus import as_enhanced

    datasets = _series(GE, n=6)
    classic = load_series([to_bytes(d) for d in datasets])
    shuffled = [datasets[i] for i in (4, 0, 5, 2, 1, 3)]
    vol = load_series([to_bytes(as_enhanced(shuffled))])
    np.testing.assert_array_equal(vol.hu, classic.hu)
    np.testing.assert_allclose(vol.positions, classic.positions)
    assert vol.sop_uids[0].endswith("#2")  # frame 2 of the object is the lowest slice
