"""The independent hold-out phantom (bench/holdout_phantom.py): our validator accepts its DICOM,
labels agree with masks and pixels, and every vendor convention reads back to the right HU.
Four studies at 128² (one per site) keep it quick."""

from __future__ import annotations

import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pytest
from scipy import ndimage
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import holdout_phantom as hp

SEED, N, MATRIX = 3, 4, 128


@pytest.fixture(scope="module")
def holdout(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, str]]]:
    root = tmp_path_factory.mktemp("holdout")
    hp.generate(root, studies=N, seed=SEED, matrix=MATRIX, sites=4, positive_rate=0.5,
                progress=False)
    with (root / "labels.csv").open(newline="") as fh:
        return root, list(csv.DictReader(fh))


def _series(root: Path) -> dict[str, list[pydicom.Dataset]]:
    out: dict[str, list[pydicom.Dataset]] = defaultdict(list)
    for p in root.rglob("*"):
        if p.is_file() and "masks" not in p.parts and p.suffix not in (".csv", ".npz"):
            ds = pydicom.dcmread(p)
            out[ds.SeriesInstanceUID].append(ds)
    return out


def _hu(ds: pydicom.Dataset) -> np.ndarray:
    arr = ds.pixel_array
    hu = arr.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    if "PixelPaddingValue" in ds:  # compared in stored units, before the rescale
        hu[arr == ds.PixelPaddingValue] = -1024.0
    return hu


def test_validator_accepts_every_study(holdout: tuple[Path, list[dict[str, str]]]) -> None:
    from bloodnet_ops.cli import app

    root, labels = holdout
    res = CliRunner().invoke(app, ["validate", str(root), "--json"])
    assert res.exit_code == 0, res.output
    docs = json.loads(res.stdout)
    studies = {d["study_uid"]: d for d in docs if d["study_uid"]}
    assert set(studies) == {r["study_uid"] for r in labels}
    for r in labels:
        d = studies[r["study_uid"]]
        assert (d["verdict"], d["reasons"]) == ("accept", []), d
        assert d["series_uid"] == r["series_uid"] and d["site"] == r["site"]
    # only the side files are unreadable objects
    side = sorted(d["key"] for d in docs if d["study_uid"] is None)
    assert side == sorted(["labels.csv", "extras.csv",
                           *[f"masks/{r['study_uid']}.npz" for r in labels]])


def test_labels_agree_with_masks_and_pixels(holdout: tuple[Path, list[dict[str, str]]]
                                            ) -> None:
    root, labels = holdout
    series = _series(root)
    assert sum(int(r["ich"]) for r in labels) == N // 2
    assert {r["site"] for r in labels} == {v.site for v in hp.VENDORS}
    for r in labels:
        m = np.load(root / "masks" / f"{r['study_uid']}.npz")
        label, z = m["label"], m["z"]
        slices = sorted(series[r["series_uid"]], key=lambda d: float(d.ImagePositionPatient[2]))
        assert label.shape == (len(slices), slices[0].Rows, slices[0].Columns)
        assert np.allclose(z, [float(d.ImagePositionPatient[2]) for d in slices], atol=1e-3)
        codes = {hp.SUBTYPES[c - 1] for c in np.unique(label) if c}
        subtypes = {s for s in r["subtypes"].split(";") if s}
        if r["ich"] == "0":
            assert not label.any() and not subtypes and float(r["volume_ml"]) == 0
            continue
        assert codes and codes <= subtypes
        assert 0.3 <= float(r["volume_ml"]) <= 80
        # the mask's voxel volume is the fine-grid volume, within partial-volume error
        sp = float(slices[0].PixelSpacing[0])
        mask_ml = label.astype(bool).sum() * sp * sp * float(slices[0].SliceThickness) / 1000
        assert 0.3 < mask_ml / float(r["volume_ml"]) < 3.0, (mask_ml, r["volume_ml"])
        # read back, the mask holds blood-density voxels (thin SAH and bleeds against the
        # skull are partial-volumed with CSF or bone, so not all of them)
        hu = np.stack([_hu(d) for d in slices])
        blood = hu[label > 0]
        dense = int(((blood >= 45) & (blood <= 100)).sum())
        assert dense >= min(10, blood.size // 4), (dense, blood.size)


@pytest.mark.parametrize("index", range(N))
def test_blood_range_only_where_labelled(index: int) -> None:
    """Noise-free render: blood-density voxels deep in the brain exist only in positives, and
    only inside the mask (mimics, sinuses, the skull base and the falx excepted)."""
    positive, vendor = hp.plan(N, SEED, 4, 0.5)[index]
    ph, r = hp.make_study(index, SEED, positive, vendor, MATRIX)
    F = hp.Fields(ph, r.grid)
    deep = F.cavity & (F.db > 6)
    if F.floor is not None:
        deep &= F.uz > F.floor + 8
    keep_out = ndimage.binary_dilation(r.mimic, iterations=2)
    dense = (r.clean >= 58) & (r.clean <= 95) & deep & ~keep_out
    if not positive:
        assert not r.label.any()
        assert int(dense.sum()) == 0
    else:
        assert r.label.any()
        blood = r.clean[r.label > 0]
        assert int(((blood >= 50) & (blood <= 95)).sum()) >= 3
        assert float(blood.max()) < 150  # a voxel dominated by bone is never labelled blood
        # outside the mask only its own partial-volume fringe reaches blood density
        fringe = ndimage.binary_dilation(r.label > 0, iterations=2)
        assert int((dense & ~fringe).sum()) == 0


def test_vendor_conventions_read_back_to_hu(holdout: tuple[Path, list[dict[str, str]]]
                                            ) -> None:
    root, labels = holdout
    series = _series(root)
    plan = hp.plan(N, SEED, 4, 0.5)
    for index, r in enumerate(labels):
        positive, v = plan[index]
        assert v.site == r["site"] and positive == (r["ich"] == "1")
        slices = series[r["series_uid"]]
        d0 = slices[0]
        assert d0.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert d0.SOPClassUID == pydicom.uid.CTImageStorage
        assert (d0.Modality, d0.BodyPartExamined, d0.InstitutionName) == ("CT", "HEAD", v.site)
        assert d0.PixelRepresentation == int(v.signed) and d0.BitsStored == v.bits_stored
        assert float(d0.RescaleSlope) == v.slope and float(d0.RescaleIntercept) == v.intercept
        assert ("PixelPaddingValue" in d0) == (v.padding is not None)
        lo, hi = v.stored_range()
        for d in slices:
            a = d.pixel_array
            assert lo <= int(a.min()) and int(a.max()) <= hi
        # slice order: InstanceNumber 1 at the vertex for the descending site
        by_inst = sorted(slices, key=lambda d: int(d.InstanceNumber))
        zs = [float(d.ImagePositionPatient[2]) for d in by_inst]
        assert zs == sorted(zs, reverse=v.descending)
        thick = float(d0.SliceThickness)
        assert 2.5 <= thick <= 5 and 24 <= len(slices) <= 40
        assert np.allclose(np.diff(sorted(zs)), thick, atol=1e-3)
        fov = float(d0.PixelSpacing[0]) * d0.Columns
        assert 215 <= fov <= 255
        # the stored pixels give back the generator's HU (to the quantisation of the slope)
        _, rendered = hp.make_study(index, SEED, positive, v, MATRIX)
        hu = np.stack([_hu(d) for d in sorted(slices,
                                              key=lambda d: float(d.ImagePositionPatient[2]))])
        want = np.clip(rendered.hu, lo * v.slope + v.intercept, hi * v.slope + v.intercept)
        inside = np.broadcast_to(rendered.inside, hu.shape)
        assert np.abs(hu - want)[inside].max() <= v.slope / 2 + 1e-3
        assert np.all(hu[~inside] == -1024.0)
        air = hu[inside & (hu < -500)]
        assert abs(float(np.median(air)) + 1000) < 30
        brain = hu[len(hu) // 2][(hu[len(hu) // 2] > 10) & (hu[len(hu) // 2] < 60)]
        assert 20 < float(np.median(brain)) < 45
