"""The synthetic head-CT generator: layout, determinism, DICOM validity, HU, masks, vendor
variety, faults and reads. Small matrices (128²) keep it fast."""

from __future__ import annotations

import csv
import hashlib
from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from typer.testing import CliRunner

from bloodnet_ops.synth import SynthSummary, generate_dataset
from bloodnet_ops.synth.reads import StudyTruth, make_reads
from bloodnet_ops.synth.vendors import PROFILES

SUBTYPES = ("EDH", "SDH", "SAH", "IPH", "IVH")
CT = "1.2.840.10008.5.1.4.1.1.2"


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _dicoms(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.dcm") if p.stat().st_size > 0)


def _to_hu(ds: pydicom.Dataset) -> np.ndarray:
    arr = ds.pixel_array
    hu = arr.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    if "PixelPaddingValue" in ds:
        hu[arr == ds.PixelPaddingValue] = -1024.0
    return hu


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SynthSummary]:
    # 4 sites x 2 scanners cover all 7 vendor profiles; 5 positives cover all 5 subtypes.
    root = tmp_path_factory.mktemp("synth")
    summary = generate_dataset(root, studies=10, sites=4, seed=11, matrix=128, workers=1)
    return root, summary


@pytest.fixture(scope="module")
def headers(dataset: tuple[Path, SynthSummary]) -> dict[Path, pydicom.Dataset]:
    root, _ = dataset
    return {p: pydicom.dcmread(p) for p in _dicoms(root)}


def _series(headers: dict[Path, pydicom.Dataset]) -> dict[str, list[pydicom.Dataset]]:
    out: dict[str, list[pydicom.Dataset]] = defaultdict(list)
    for ds in headers.values():
        out[ds.SeriesInstanceUID].append(ds)
    return out


def test_summary_and_layout(dataset: tuple[Path, SynthSummary],
                            headers: dict[Path, pydicom.Dataset]) -> None:
    root, summary = dataset
    assert summary.counts["studies"] == 10
    assert summary.counts["positives"] == 5 and summary.counts["negatives"] == 5
    assert summary.sites == ["site-a", "site-b", "site-c", "site-d"]
    assert summary.counts["files"] == len(headers)
    assert summary.seconds > 0
    for path, ds in headers.items():
        site, study, series, name = path.relative_to(root).parts
        assert (site, study, series, name) == (ds.InstitutionName, ds.StudyInstanceUID,
                                              ds.SeriesInstanceUID, f"{ds.SOPInstanceUID}.dcm")
    labels = _csv(root / "labels.csv")
    assert list(labels[0]) == ["study_uid", "site", "ich", "subtypes", "volume_ml", "series_uid"]
    assert len(labels) == 10
    for row in labels:
        assert (root / "masks" / f"{row['study_uid']}.npz").is_file()
        assert (root / row["site"] / row["study_uid"] / row["series_uid"]).is_dir()


def test_same_seed_same_bytes_whatever_the_workers(tmp_path: Path) -> None:
    a = generate_dataset(tmp_path / "a", studies=3, sites=2, seed=5, matrix=128, workers=1)
    b = generate_dataset(tmp_path / "b", studies=3, sites=2, seed=5, matrix=128, workers=2)
    c = generate_dataset(tmp_path / "c", studies=3, sites=2, seed=6, matrix=128, workers=1)

    def digest(root: Path) -> dict[str, str]:
        return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in root.rglob("*") if p.is_file()}

    da, db, dc = digest(a.paths["root"]), digest(b.paths["root"]), digest(c.paths["root"])
    assert da == db
    assert len(da) >= 3 * (2 * 24 + 1) + 3  # files, masks, labels, reads
    dcm_a = {k for k in da if k.endswith(".dcm")}
    assert dcm_a and not dcm_a & set(dc), "another seed must give other UIDs"


def test_every_file_is_a_valid_ct_image(headers: dict[Path, pydicom.Dataset]) -> None:
    type1 = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID",
             "FrameOfReferenceUID", "Modality", "ImageType", "ImagePositionPatient",
             "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns", "BitsAllocated",
             "BitsStored", "HighBit", "PixelRepresentation", "SamplesPerPixel",
             "PhotometricInterpretation", "RescaleIntercept", "RescaleSlope")
    type2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
             "StudyTime", "AccessionNumber", "ReferringPhysicianName", "StudyID", "SeriesNumber",
             "InstanceNumber", "Manufacturer", "KVP", "SliceThickness", "PatientPosition")
    for path, ds in headers.items():
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.file_meta.TransferSyntaxUID in (ImplicitVRLittleEndian, ExplicitVRLittleEndian)
        assert ds.SOPClassUID == CT and ds.Modality == "CT"
        assert ds.BodyPartExamined == "HEAD"
        assert ds.StudyDescription == "CT HEAD WO CONTRAST"
        assert ds.PatientName.family_name == "SYNTH"
        for kw in (*type1, *type2):
            assert kw in ds, f"{kw} missing in {path.name}"
        assert ds.HighBit == ds.BitsStored - 1
        assert ds.pixel_array.shape == (ds.Rows, ds.Columns)


def test_three_series_per_study(headers: dict[Path, pydicom.Dataset]) -> None:
    by_study: dict[str, dict[str, list[pydicom.Dataset]]] = defaultdict(lambda: defaultdict(list))
    for ds in headers.values():
        by_study[ds.StudyInstanceUID][ds.SeriesInstanceUID].append(ds)
    assert len(by_study) == 10
    for series in by_study.values():
        assert len(series) == 3
        kinds = sorted(tuple(s[0].ImageType)[2] for s in series.values())
        assert kinds == ["AXIAL", "AXIAL", "LOCALIZER"]
        axial = [s for s in series.values() if s[0].ImageType[2] == "AXIAL"]
        kernels = {s[0].ConvolutionKernel for s in axial}
        assert len(kernels) == 2
        assert len({s[0].FrameOfReferenceUID for s in series.values()}) == 1
        for s in axial:
            assert [float(v) for v in s[0].ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
            assert 24 <= len(s) <= 48
            z = sorted(float(d.ImagePositionPatient[2]) for d in s)
            assert 115 <= z[-1] - z[0] + float(s[0].SliceThickness) <= 155
            assert np.allclose(np.diff(z), float(s[0].SliceThickness), atol=0.02)


def test_hounsfield_units_for_every_vendor(dataset: tuple[Path, SynthSummary],
                                          headers: dict[Path, pydicom.Dataset]) -> None:
    root, _ = dataset
    soft = {r["series_uid"] for r in _csv(root / "labels.csv")}
    seen = set()
    for uid, slices in _series(headers).items():
        if uid not in soft:
            continue
        slices.sort(key=lambda d: float(d.ImagePositionPatient[2]))
        mid = _to_hu(slices[int(len(slices) * 0.7)])
        inside = mid > -1024
        air = mid[inside & (mid < -500)]
        assert abs(float(np.median(air)) + 1000) < 30
        brain = mid[(mid > 0) & (mid < 80)]
        assert 20 <= float(np.median(brain)) <= 45
        assert mid.max() > 900  # the skull
        seen.add(slices[0].Manufacturer)
    assert len(seen) >= 5


def test_masks_align_with_the_diagnostic_series(dataset: tuple[Path, SynthSummary],
                                                headers: dict[Path, pydicom.Dataset]) -> None:
    root, _ = dataset
    series = _series(headers)
    for row in _csv(root / "labels.csv"):
        npz = np.load(root / "masks" / f"{row['study_uid']}.npz")
        mask, positions = npz["mask"], npz["positions"]
        slices = series[row["series_uid"]]
        z = sorted(float(d.ImagePositionPatient[2]) for d in slices)
        assert mask.dtype == np.uint8
        assert mask.shape == (len(slices), slices[0].Rows, slices[0].Columns)
        assert np.allclose(positions, z)
        codes = {int(c) for c in np.unique(mask) if c}
        assert codes <= {1, 2, 3, 4, 5}
        assert bool(codes) == (row["ich"] == "1")
        assert row["subtypes"] == ";".join(SUBTYPES[c - 1] for c in sorted(codes))
        dz, dy, dx = npz["spacing"]
        assert float(slices[0].PixelSpacing[0]) == pytest.approx(dy, abs=1e-3)
        assert float(row["volume_ml"]) == pytest.approx(np.count_nonzero(mask) * dz * dy * dx
                                                        / 1000, abs=2e-3)
        if codes:
            # Blood is dense where the mask says so, in the diagnostic series itself.
            by_z = {float(d.ImagePositionPatient[2]): d for d in slices}
            k = int(np.argmax((mask > 0).sum(axis=(1, 2))))
            hu = _to_hu(by_z[z[k]])
            assert float(np.median(hu[mask[k] > 0])) > 40


def test_each_subtype_appears(dataset: tuple[Path, SynthSummary]) -> None:
    root, summary = dataset
    found = set()
    for row in _csv(root / "labels.csv"):
        found |= set(filter(None, row["subtypes"].split(";")))
    assert found == set(SUBTYPES)
    assert all(summary.counts[s] >= 1 for s in SUBTYPES)


def test_vendor_variety(headers: dict[Path, pydicom.Dataset]) -> None:
    reps = {int(ds.PixelRepresentation) for ds in headers.values()}
    intercepts = {float(ds.RescaleIntercept) for ds in headers.values()}
    slopes = {float(ds.RescaleSlope) for ds in headers.values()}
    syntaxes = {ds.file_meta.TransferSyntaxUID for ds in headers.values()}
    bits = {int(ds.BitsStored) for ds in headers.values()}
    models = {ds.ManufacturerModelName for ds in headers.values()}
    assert reps == {0, 1}
    assert intercepts == {-1024.0, -1000.0, 0.0}
    assert 0.5 in slopes and 1.0 in slopes
    assert syntaxes == {ImplicitVRLittleEndian, ExplicitVRLittleEndian}
    assert bits == {12, 16}
    assert len(models) == len(PROFILES)
    padded = {("PixelPaddingValue" in ds) for ds in headers.values()}
    assert padded == {True, False}
    # Slice order: InstanceNumber 1 at the top for some vendors, at the bottom for others.
    orders = set()
    for slices in _series(headers).values():
        if slices[0].ImageType[2] != "AXIAL":
            continue
        first = min(slices, key=lambda d: int(d.InstanceNumber))
        top = max(float(d.ImagePositionPatient[2]) for d in slices)
        orders.add(float(first.ImagePositionPatient[2]) == top)
    assert orders == {True, False}


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("faulty")
    generate_dataset(root, studies=8, sites=2, seed=5, matrix=128, fault_rate=1.0, workers=1)
    return root


def test_fault_studies_are_written_as_recorded(faulty: Path) -> None:
    rows = _csv(faulty / "faults.csv")
    assert sorted(r["fault"] for r in rows) == sorted(
        ["slice_gap", "contrast", "not_head", "missing_rescale", "truncated", "non_dicom",
         "empty", "duplicate"])
    labels = {r["study_uid"] for r in _csv(faulty / "labels.csv")}
    assert {r["study_uid"] for r in rows} <= labels and len(labels) == 8
    broken = {faulty / r["key"] for r in rows if r["scope"] == "object"}
    for r in rows:
        study = next(faulty.glob(f"*/{r['study_uid']}"))
        good = [pydicom.dcmread(p) for p in study.rglob("*.dcm") if p not in broken]
        soft_uid = next(x["series_uid"] for x in _csv(faulty / "labels.csv")
                        if x["study_uid"] == r["study_uid"])
        soft = [d for d in good if d.SeriesInstanceUID == soft_uid and "PixelData" in d]
        fault, key = r["fault"], r["key"]
        if r["scope"] == "object":
            assert (faulty / key).is_file()
            assert r["expected_reason"] == "unreadable"
        if fault == "slice_gap":
            z = np.sort([float(d.ImagePositionPatient[2]) for d in soft])
            assert np.diff(z).max() > 1.5 * np.median(np.diff(z))
            assert r["expected_verdict"] == "reject"
        elif fault == "contrast":
            assert all("ContrastBolusAgent" in d for d in good)
            assert r["expected_verdict"] == "accept_with_warning"
        elif fault == "not_head":
            assert {d.BodyPartExamined for d in good} == {"CHEST"}
        elif fault == "missing_rescale":
            assert not any("RescaleIntercept" in d for d in soft)
        elif fault == "truncated":
            data = (faulty / key).read_bytes()
            assert 0 < len(data) < 2000
            with pytest.raises(Exception):  # noqa: B017 - any parse failure will do
                ds = pydicom.dcmread(faulty / key)
                _ = ds.pixel_array
        elif fault == "non_dicom":
            with pytest.raises(InvalidDicomError):
                pydicom.dcmread(faulty / key)
        elif fault == "empty":
            assert (faulty / key).stat().st_size == 0
        elif fault == "duplicate":
            dup = pydicom.dcmread(faulty / key)
            twins = [d for d in soft if d.SOPInstanceUID == dup.SOPInstanceUID]
            assert len(twins) == 2
            assert twins[0].PixelData != twins[1].PixelData
            assert r["expected_reason"] == "duplicate_instance"


def test_reads_csv(dataset: tuple[Path, SynthSummary]) -> None:
    root, summary = dataset
    reads = _csv(root / "reads.csv")
    assert list(reads[0]) == ["study_uid", "accession_number", "site", "read_date", "reader",
                              "ich", "subtypes", "report"]
    labels = {r["study_uid"]: r for r in _csv(root / "labels.csv")}
    assert len(reads) == len(labels) == summary.counts["reads"]
    for r in reads:
        assert r["accession_number"] and r["report"] and r["reader"].startswith("reader-")
        assert r["ich"] in ("0", "1")
        assert set(filter(None, r["subtypes"].split(";"))) <= set(SUBTYPES)
        if r["study_uid"]:
            assert r["study_uid"] in labels
            assert r["site"] == labels[r["study_uid"]]["site"]


def _truths(n: int) -> list[StudyTruth]:
    return [StudyTruth(f"1.2.3.{i}", f"A{i:05d}", "site-a", "20250303",
                       ("SDH",) if i % 2 else (), (), 0.0) for i in range(n)]


def test_reads_miss_positives_at_the_given_rate() -> None:
    truths = _truths(400)
    all_missed, c1 = make_reads(truths, seed=1, miss_rate=1.0, false_positive_rate=0.0)
    assert c1["reads_missed"] == 200
    assert all(r.ich == 0 for r in all_missed)
    none_missed, c2 = make_reads(truths, seed=1, miss_rate=0.0, false_positive_rate=0.0,
                                 no_uid_rate=0.1)
    assert c2["reads_missed"] == 0
    assert [r.ich for r in none_missed] == [1 if i % 2 else 0 for i in range(400)]
    assert 15 <= c2["reads_without_uid"] <= 65
    assert all(r.accession_number for r in none_missed if not r.study_uid)


def test_cli_writes_data_set_and_preview(tmp_path: Path) -> None:
    from bloodnet_ops.cli import app

    png = tmp_path / "sheet.png"
    res = CliRunner().invoke(app, ["synth", "--out", str(tmp_path / "d"), "--studies", "2",
                                   "--sites", "1", "--seed", "3", "--matrix", "128",
                                   "--workers", "1", "--preview", str(png), "--json"])
    assert res.exit_code == 0, res.output
    assert png.stat().st_size > 10_000
    assert (tmp_path / "d" / "labels.csv").is_file()
    from PIL import Image

    with Image.open(png) as im:
        assert im.width == 9 * 256 and im.height > 6 * 256
    bad = CliRunner().invoke(app, ["synth", "--studies", "2"])
    assert bad.exit_code != 0


# ---------------------------------------------------------------------------------------------
# drift injected into one site from a date (issue 5 item 6); tests/test_drift_injected.py shows
# the drift monitor catching it through the real pipeline.

DRIFT_ARGS = {"studies": 8, "sites": 2, "seed": 13, "matrix": 64, "nights": 3, "workers": 1}


@pytest.fixture(scope="module")
def drift_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, SynthSummary]:
    root = tmp_path_factory.mktemp("drift")
    generate_dataset(root / "base", **DRIFT_ARGS)
    summary = generate_dataset(root / "drift", **DRIFT_ARGS, drift_site="site-b",
                               drift_from="2025-03-04")
    return root / "base", root / "drift", summary


def _study_headers(root: Path) -> dict[str, dict[str, list[pydicom.Dataset]]]:
    """study → series → headers of a data set's DICOM files."""
    out: dict[str, dict[str, list[pydicom.Dataset]]] = defaultdict(lambda: defaultdict(list))
    for p in _dicoms(root):
        ds = pydicom.dcmread(p)
        out[ds.StudyInstanceUID][ds.SeriesInstanceUID].append(ds)
    return out


def test_scanner_drift_changes_only_the_site_from_the_date(
        drift_pair: tuple[Path, Path, SynthSummary]) -> None:
    import json

    from bloodnet_ops.synth.vendors import BY_KEY

    base, drifted, summary = drift_pair
    record = json.loads((drifted / "drift.json").read_text())
    assert summary.paths["drift"] == drifted / "drift.json"
    assert (record["site"], record["start"], record["kind"]) == ("site-b", "2025-03-04", "scanner")
    assert (record["first_night"], record["last_night"]) == ("2025-03-03", "2025-03-04")
    new = BY_KEY[record["after"]["profiles"][0]]
    assert record["after"]["profiles"] == ["siemens-force"]
    studies = _study_headers(drifted)
    expected = sorted(uid for uid, series in studies.items()
                      if next(iter(series.values()))[0].InstitutionName == "site-b"
                      and next(iter(series.values()))[0].StudyDate >= "20250304")
    assert sorted(record["studies"]) == expected and record["n_studies"] == len(expected) == 2
    assert summary.counts["drifted"] == 2 and not (base / "drift.json").exists()

    # Every study not drifted is byte for byte what the seed writes without drift.
    def digest(root: Path) -> dict[str, str]:
        return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in root.rglob("*.dcm")}

    da, dd = digest(base), digest(drifted)
    moved = set(record["studies"])
    kept = {k: v for k, v in dd.items() if k.split("/")[1] not in moved}
    assert kept and kept == {k: v for k, v in da.items() if k.split("/")[1] not in moved}
    changed = set(dd) - set(kept)
    assert changed and all(da.get(k) != dd[k] for k in changed), "drifted studies re-rendered"

    soft = {r["study_uid"]: r["series_uid"] for r in _csv(drifted / "labels.csv")}
    before = record["before"]
    for uid in record["studies"]:
        sl = sorted(studies[uid][soft[uid]], key=lambda d: float(d.ImagePositionPatient[2]))
        ds = sl[0]
        assert (ds.Manufacturer, ds.ManufacturerModelName, ds.ConvolutionKernel) == (
            new.manufacturer, new.model, new.soft_kernel)
        assert float(ds.RescaleIntercept) == -8192.0 and float(ds.SliceThickness) == 2.0
        assert ds.Manufacturer not in before["manufacturers"]
        assert ds.ConvolutionKernel not in before["kernels"]
        assert -8192.0 not in before["intercepts"] and 2.0 not in before["slice_thicknesses"]
        # Thin slices still cover the head, and the new encoding still gives the same HU.
        z = [float(d.ImagePositionPatient[2]) for d in sl]
        assert 115 <= z[-1] - z[0] + 2.0 <= 155 and len(sl) > 48
        mid = _to_hu(sl[int(len(sl) * 0.7)])
        brain = mid[(mid > 0) & (mid < 80)]
        assert 20 <= float(np.median(brain)) <= 45
        assert abs(float(np.median(mid[(mid > -1024) & (mid < -500)])) + 1000) < 30
    for uid, series in studies.items():
        if uid not in moved:
            ds = series[soft[uid]][0]
            assert ds.Manufacturer != new.manufacturer or ds.InstitutionName != "site-b"
            assert float(ds.SliceThickness) > 2.0


def test_thin_slice_and_population_drift_plans() -> None:
    from dataclasses import replace

    from bloodnet_ops.synth.drift import DriftSpec, apply_drift, parse_date
    from bloodnet_ops.synth.plan import plan_studies
    from bloodnet_ops.synth.study import render_study
    from bloodnet_ops.synth.vendors import BY_KEY, site_profiles

    plans = plan_studies(studies=60, sites=3, seed=4, positive_rate=0.3, matrix=64,
                         fault_rate=0.0, nights=6)
    assert {p.study_date for p in plans} == {f"2025030{d}" for d in range(3, 9)}
    start = parse_date("20250306")
    scanners = site_profiles(3, 4)["site-c"]
    hit = [i for i, p in enumerate(plans) if p.site == "site-c" and p.study_date >= "20250306"]
    assert len(hit) >= 5

    thin, rec = apply_drift(plans, DriftSpec("site-c", start, "thin-slices"), seed=4,
                            site_scanners=scanners)
    assert rec.studies == [plans[i].study_uid for i in hit]
    for i, (a, b) in enumerate(zip(plans, thin, strict=True)):
        if i in hit:
            assert b.profile_key == a.profile_key + "+thin"
            assert BY_KEY[b.profile_key].thicknesses == (2.0,)
            assert BY_KEY[b.profile_key].soft_kernel == BY_KEY[a.profile_key].soft_kernel
        else:
            assert a == b
    st = render_study(thin[hit[0]])
    assert st.geometry.thickness == 2.0 and st.soft.shape[0] > 48

    sick, rec = apply_drift(plans, DriftSpec("site-c", start, "population"), seed=4,
                            site_scanners=scanners)
    assert [a == b for a, b in zip(plans, sick, strict=True)].count(False) <= len(hit)
    assert all(plans[i] == sick[i] for i in range(len(plans)) if i not in hit)
    assert sum(sick[i].positive for i in hit) > sum(plans[i].positive for i in hit)
    assert rec.after["planned_positives_after"] == sum(sick[i].positive for i in hit)
    assert all(sick[i].bleed_draws == 3 for i in hit if sick[i].positive)
    # Larger bleeds: the first lesion set is the undrifted one, a larger later draw replaces it.
    pos = next(i for i in hit if sick[i].positive)
    one = render_study(replace(sick[pos], bleed_draws=1))
    three = render_study(sick[pos])
    assert sum(x.target_ml for x in three.lesions) >= sum(x.target_ml for x in one.lesions)

    with pytest.raises(ValueError, match="not one of"):
        apply_drift(plans, DriftSpec("site-x", start), seed=4, site_scanners=scanners)
    with pytest.raises(ValueError, match="after the first night"):
        apply_drift(plans, DriftSpec("site-c", parse_date("2025-03-03")), seed=4,
                    site_scanners=scanners)
    with pytest.raises(ValueError, match="drift kind"):
        DriftSpec("site-c", start, "weather")


def test_cli_injects_drift(tmp_path: Path) -> None:
    import json

    from bloodnet_ops.cli import app

    args = ["synth", "--studies", "8", "--sites", "2", "--seed", "13", "--matrix", "64",
            "--nights", "3", "--workers", "1"]
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "d"), "--drift-site", "site-a",
                                   "--drift-from", "2025-03-04", "--json"])
    assert res.exit_code == 0, res.output
    record = json.loads((tmp_path / "d" / "drift.json").read_text())
    assert record["site"] == "site-a" and record["after"]["profiles"] == ["philips-incisive"]
    assert record["n_studies"] >= 1
    uid = record["studies"][0]
    soft = {r["study_uid"]: r["series_uid"] for r in _csv(tmp_path / "d" / "labels.csv")}
    ds = pydicom.dcmread(next((tmp_path / "d" / "site-a" / uid / soft[uid]).glob("*.dcm")))
    assert (ds.ManufacturerModelName, float(ds.SliceThickness)) == ("Incisive CT", 2.0)
    for bad in (["--drift-site", "site-a"],  # no date
                ["--drift-site", "site-q", "--drift-from", "2025-03-04"],
                ["--drift-site", "site-a", "--drift-from", "2025-04-01"],
                ["--drift-site", "site-a", "--drift-from", "2025-03-04", "--drift-kind", "x"],
                ["--drift-site", "site-a", "--drift-from", "March 4th"]):
        res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "bad"), *bad])
        assert res.exit_code != 0, bad
