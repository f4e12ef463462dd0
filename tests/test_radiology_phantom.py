"""The independent radiology phantom (bench/radiology_phantom.py): outputs, labels, validator.

One small data set (5 studies at 256^2, one per vendor profile) is generated once through the
command line; a second, two-study run with two workers checks determinism.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "radiology_phantom.py"
BLOODNET = Path(sys.executable).with_name("bloodnet")
SEED, N, RATE = 45, 5, "0.6"  # seed 45 draws every vendor profile, 2 positives, 3 negatives
UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def _load():
    spec = importlib.util.spec_from_file_location("radiology_phantom", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["radiology_phantom"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


rp = _load()


def _generate(out: Path, studies: int, workers: int = 1, sheet: Path | None = None) -> None:
    cmd = [sys.executable, str(SCRIPT), "--out", str(out), "--studies", str(studies),
           "--seed", str(SEED), "--matrix", "256", "--sites", "5", "--positive-rate", RATE,
           "--workers", str(workers)]
    if sheet:
        cmd += ["--sheet", str(sheet)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rp") / "set"
    _generate(out, N, sheet=out.parent / "sheet.png")
    return out


def _rows(out: Path, name: str = "labels.csv") -> list[dict]:
    with open(out / name, newline="") as fh:
        return list(csv.DictReader(fh))


def _series(out: Path) -> dict[str, list]:
    """Axial datasets per SeriesInstanceUID, sorted by ImagePositionPatient z."""
    series: dict[str, list] = {}
    for p in out.rglob("*"):
        if not p.is_file() or p.suffix in (".csv", ".npz", ".png"):
            continue
        ds = pydicom.dcmread(p)
        if "AXIAL" in ds.ImageType:
            series.setdefault(ds.SeriesInstanceUID, []).append(ds)
    for v in series.values():
        v.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    return series


def _hu(datasets) -> np.ndarray:
    return np.stack([d.pixel_array.astype(np.float64) * float(d.RescaleSlope)
                     + float(d.RescaleIntercept) for d in datasets])


def _digest(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in out.rglob("*") if p.is_file() and p.suffix != ".csv"}


def test_outputs_and_headers(dataset):
    rows = _rows(dataset)
    assert list(rows[0]) == ["study_uid", "site", "ich", "subtypes", "volume_ml", "series_uid"]
    assert list(_rows(dataset, "extras.csv")[0]) == ["study_uid", "mimics", "thickness_mm",
                                                     "matrix", "noise_sd"]
    assert len(rows) == N
    assert {r["site"] for r in rows} <= {s.name for s in rp.SITES}
    assert (dataset.parent / "sheet.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for p in dataset.rglob("*"):
        if p.is_file() and p.suffix not in (".csv", ".npz"):
            ds = pydicom.dcmread(p, stop_before_pixels=True)
            assert ds.Modality == "CT" and ds.SOPClassUID == rp.CT_IMAGE
            assert ds.InstitutionName == p.relative_to(dataset).parts[0]
            for u in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID):
                assert len(u) <= 64 and UID_RE.match(u)
    assert {r["site"] for r in rows} == {s.name for s in rp.SITES}


def test_labels_and_masks_consistent(dataset):
    series = _series(dataset)
    for r in _rows(dataset):
        m = np.load(dataset / "masks" / f"{r['study_uid']}.npz")
        lab, z = m["label"], m["z"]
        ds = series[r["series_uid"]]
        assert lab.dtype == np.uint8 and lab.shape == (len(ds), ds[0].Rows, ds[0].Columns)
        assert np.allclose(z, [float(d.ImagePositionPatient[2]) for d in ds], atol=1e-3)
        assert np.all(np.diff(z) > 0)
        assert ds[0].StudyInstanceUID == r["study_uid"]
        dx, dy = (float(v) for v in ds[0].PixelSpacing)
        vox = dx * dy * float(ds[0].SliceThickness) / 1000.0
        vol = float((lab > 0).sum()) * vox
        assert float(r["volume_ml"]) == pytest.approx(vol, rel=0.05, abs=1e-3)
        codes = {rp.SUBTYPES[c - 1] for c in np.unique(lab) if c}
        assert set(filter(None, r["subtypes"].split(";"))) == codes
        assert int(r["ich"]) == int(bool(codes))


def test_validator_accepts_every_series(dataset):
    proc = subprocess.run([str(BLOODNET), "validate", str(dataset), "--json"],
                          check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    studies = {r["study_uid"]: r for r in report if r.get("study_uid")}
    for r in _rows(dataset):
        got = studies[r["study_uid"]]
        assert got["verdict"] in ("accept", "accept_with_warning"), got
        assert got["series_uid"] == r["series_uid"]
    others = [r for r in report if not r.get("study_uid")]
    assert all(Path(r["key"]).suffix in (".csv", ".npz") for r in others)


@pytest.mark.parametrize("index", [1, 3])  # LOWMOOR slope 0.5 / ORRIN signed 12 bit implicit
def test_hu_round_trip(dataset, index):
    ph = rp.render_study(SEED, index, 256, 5, float(RATE))
    row = _rows(dataset)[index]
    ds = _series(dataset)[row["series_uid"]]
    assert ph.site.name == row["site"] == ds[0].InstitutionName
    hu = _hu(ds)
    assert hu.shape == ph.hu.shape
    assert np.max(np.abs(hu - ph.hu)) <= max(0.5 * ph.site.slope, 0.5) + 1e-3
    inside = hu > -1100
    assert np.median(hu[inside & (hu < -500)]) == pytest.approx(-1000, abs=30)  # air
    assert ds[0].file_meta.TransferSyntaxUID == (
        pydicom.uid.ImplicitVRLittleEndian if ph.site.implicit
        else pydicom.uid.ExplicitVRLittleEndian)


def test_blood_is_dense_and_negatives_are_empty(dataset):
    series = _series(dataset)
    blood, npos = [], 0
    for r in _rows(dataset):
        lab = np.load(dataset / "masks" / f"{r['study_uid']}.npz")["label"]
        if r["ich"] == "0":
            assert not lab.any()
            continue
        npos += 1
        hu = _hu(series[r["series_uid"]])
        blood.append(hu[lab > 0])
    assert npos >= 2
    assert np.mean(np.concatenate(blood)) > 40.0
    assert sum(np.mean(b) > 40.0 for b in blood) >= npos / 2


def test_deterministic_and_worker_independent(dataset, tmp_path):
    out = tmp_path / "again"
    _generate(out, 2, workers=2)
    again, first = _digest(out), _digest(dataset)
    assert again and all(first.get(k) == v for k, v in again.items())
    assert _rows(out) == _rows(dataset)[:2]
    assert _rows(out, "extras.csv") == _rows(dataset, "extras.csv")[:2]
