"""Grouping by UID, kernel classification across vendors, series ranking and slice order."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from bloodnet_ops.reasons import Reason
from bloodnet_ops.records import SliceHeader
from bloodnet_ops.series import (
    axial_angle_deg,
    find_duplicates,
    group_by_study,
    kernel_class,
    kernel_sharpness,
    select_series,
    sort_slices,
)

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)


def tilted(deg: float) -> tuple[float, ...]:
    t = math.radians(deg)
    return (1.0, 0.0, 0.0, 0.0, math.cos(t), math.sin(t))


def series(uid: str, n: int, *, orientation=AXIAL, kernel: str = "STANDARD",
           image_type=("ORIGINAL", "PRIMARY", "AXIAL"), modality: str = "CT",
           sop_class: str = "1.2.840.10008.5.1.4.1.1.2", description: str = "",
           window: float | None = None, thickness: float = 5.0, study: str = "1.2.3",
           step: float = 5.0) -> list[SliceHeader]:
    out = []
    normal = _normal(orientation)
    for i in range(n):
        out.append(SliceHeader(
            key=f"{uid}/{n - i:04d}", etag=f"e{uid}{i}", size=1000, study_uid=study,
            series_uid=uid, sop_uid=f"{uid}.{i}", sop_class_uid=sop_class, modality=modality,
            transfer_syntax="1.2.840.10008.1.2.1", image_type=tuple(image_type), kernel=kernel,
            series_description=description, window_center=window, slice_thickness=thickness,
            rows=64, columns=64, pixel_spacing=(0.5, 0.5), orientation=tuple(orientation),
            position=tuple(c * i * step for c in normal),  # type: ignore[arg-type]
            instance_number=n - i, rescale_slope=1.0, rescale_intercept=-1024.0,
        ))
    return out


def _normal(o):
    r, c = o[:3], o[3:]
    return (r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0])


@pytest.mark.parametrize(
    ("kernel", "expected"),
    [
        ("STANDARD", -1), ("SOFT", -1), ("BONE", 1), ("BONEPLUS", 1), ("LUNG", 1),
        ("EDGE", 1), ("DETAIL", 1),  # GE
        ("H31s", -1), ("H40s", -1), ("Hr38", -1), ("Qr40", -1), ("J30s", -1),
        ("H60s", 1), ("H70h", 1), ("Hr64", 1), ("J70h", 1), ("Br64", 1), ("U90u", 1),  # Siemens
        ("Hr40\\3", -1), ("Hr68\\3", 1),  # with ADMIRE strength
        ("FC21", -1), ("FC26", -1), ("FC30", 1), ("FC52", 1), ("FC81", 1),  # Canon/Toshiba
        ("UB", -1), ("B", -1), ("C", -1), ("D", 1), ("YC", 1), ("L", 1),  # Philips
        ("BRAIN", -1), ("Body Sharp", 1), ("", 0), ("XYZ", 0),
    ],
)
def test_kernel_class_across_vendors(kernel: str, expected: int) -> None:
    assert kernel_class(kernel) == expected


def test_description_and_window_decide_when_the_kernel_is_unknown() -> None:
    assert kernel_sharpness(series("a", 1, kernel="K1", description="Kopf Knochen")) == 1
    assert kernel_sharpness(series("a", 1, kernel="K1", window=600.0)) == 1
    assert kernel_sharpness(series("a", 1, kernel="K1", window=40.0)) == -1
    assert kernel_sharpness(series("a", 1, kernel="K1")) == 0


def _select(*all_series: list[SliceHeader]):
    grouped = group_by_study(h for s in all_series for h in s)
    assert len(grouped) == 1
    uid, by_series = next(iter(grouped.items()))
    return select_series(uid, by_series)


def test_soft_tissue_preferred_over_bone_with_more_slices() -> None:
    sel = _select(series("soft", 24), series("bone", 48, kernel="BONE", thickness=2.5),
                  series("loc", 1, orientation=CORONAL,
                         image_type=("ORIGINAL", "PRIMARY", "LOCALIZER")))
    assert sel.series_uid == "soft" and not sel.reasons
    assert set(sel.candidates) == {"soft", "bone", "loc"}


def test_more_then_thinner_slices_among_soft_series() -> None:
    sel = _select(series("thick", 24), series("thin", 120, thickness=1.0, step=1.0))
    assert sel.series_uid == "thin"


def test_derived_reformats_are_never_selected() -> None:
    mip = series("mip", 40, image_type=("DERIVED", "SECONDARY", "AXIAL", "MIP"))
    assert _select(mip, series("soft", 20)).series_uid == "soft"
    assert _select(mip).reasons == [Reason.NO_AXIAL_SERIES]


def test_derived_primary_is_used_only_without_an_original() -> None:
    dp = series("dp", 40, image_type=("DERIVED", "PRIMARY", "AXIAL"))
    assert _select(dp, series("orig", 20)).series_uid == "orig"
    assert _select(dp).series_uid == "dp"


def test_only_localizers() -> None:
    loc = series("loc", 1, orientation=CORONAL, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))
    lat = series("lat", 1, orientation=SAGITTAL, image_type=("ORIGINAL", "PRIMARY", "OTHER"),
                 description="Topogram 0.6 T20f")
    assert _select(loc, lat).reasons == [Reason.NO_AXIAL_SERIES]


def test_oblique_soft_series_is_not_replaced_by_axial_bone() -> None:
    sel = _select(series("sag", 30, orientation=SAGITTAL), series("bone", 30, kernel="BONE"))
    assert sel.series_uid == "sag" and sel.reasons == [Reason.NON_AXIAL_ORIENTATION]


@pytest.mark.parametrize(("deg", "axial"), [(0, True), (15, True), (30, True), (39, True),
                                            (50, False), (90, False)])
def test_gantry_tilt_is_axial_up_to_40_degrees(deg: float, axial: bool) -> None:
    assert axial_angle_deg(tilted(deg)) == pytest.approx(deg, abs=1e-6)
    sel = _select(series("s", 20, orientation=tilted(deg)))
    assert (sel.reasons == []) is axial


def test_not_ct() -> None:
    mr = series("mr", 20, modality="MR", sop_class="1.2.840.10008.5.1.4.1.1.4")
    assert _select(mr).reasons == [Reason.NOT_CT]
    sc = series("sc", 1, modality="OT", sop_class="1.2.840.10008.5.1.4.1.1.7")
    assert _select(sc).reasons == [Reason.NOT_CT]


def test_slices_sorted_along_the_normal_not_by_instance_number_or_key() -> None:
    s = series("s", 10)
    shuffled = [s[i] for i in (3, 7, 0, 9, 1, 5, 2, 8, 6, 4)]
    ordered = sort_slices(shuffled)
    assert [h.sop_uid for h in ordered] == [f"s.{i}" for i in range(10)]
    assert ordered[0].instance_number == 10  # InstanceNumber runs the other way
    flipped = [replace(h, orientation=(1.0, 0.0, 0.0, 0.0, -1.0, 0.0)) for h in shuffled]
    # normal now points to -z: ascending along the normal is descending in z
    assert [h.sop_uid for h in sort_slices(flipped)] == [f"s.{i}" for i in range(9, -1, -1)]


def test_grouping_ignores_keys() -> None:
    a = series("a", 3, study="1.9")
    moved = [replace(h, key=f"elsewhere/{i}") for i, h in enumerate(series("b", 3, study="1.9"))]
    grouped = group_by_study(a + moved)
    assert list(grouped) == ["1.9"] and set(grouped["1.9"]) == {"a", "b"}


def test_duplicates_resent_vs_conflicting() -> None:
    s = series("s", 5)
    resent = replace(s[1], key="copy-1", etag="other")  # same size and header: a re-send
    conflict = replace(s[2], key="copy-2", position=(0.0, 0.0, 99.0))
    d = find_duplicates([*s, resent, conflict])
    assert len(d.unique) == 5
    assert d.resent == {"s.1"} and d.conflicting == {"s.2"}
    assert d.extra_keys == {"s.1": ["s/0004"], "s.2": ["s/0003"]}  # first key kept
