"""RSNA-2019 and CQ500 loaders on small files written here in those formats (real DICOM)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from bloodnet_ops.model.cq500 import load_cq500, read_cq500_reads
from bloodnet_ops.model.rsna import load_rsna, read_rsna_labels

# RSNA's UIDs really are "ID_<hex>", which is not a valid UI value; the loader must cope.
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR UI")

N = 48  # matrix
SLICES = 12


def _phantom(blood: bool) -> np.ndarray:
    """HU slice: air, skull ring, brain at 35 HU, optionally a 70 HU bleed."""
    yy, xx = np.mgrid[:N, :N] - N / 2
    r = np.hypot(yy, xx)
    hu = np.full((N, N), -1000.0)
    hu[r < 20] = 1000.0
    hu[r < 17] = 35.0
    if blood:
        hu[(yy - 4) ** 2 + (xx + 3) ** 2 < 16] = 70.0
    return hu


def _write_ct(path: Path, *, study: str, series: str, sop: str, z: int, hu: np.ndarray,
              intercept: float = -1024.0, bits_stored: int = 16, pixrep: int = 1,
              patient: str = "anon", description: str = "HEAD", kernel: str = "STANDARD",
              wrap: bool = False) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.PatientID = patient
    ds.PatientName = patient
    ds.Modality = "CT"
    ds.BodyPartExamined = "HEAD"
    ds.SeriesDescription = description
    ds.ConvolutionKernel = kernel
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SliceThickness = 5.0
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [-60.0, -60.0, 5.0 * z]
    ds.InstanceNumber = z + 1
    ds.PixelSpacing = [0.5, 0.5]
    ds.Rows = ds.Columns = N
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = pixrep
    ds.RescaleSlope = 1
    ds.RescaleIntercept = intercept
    stored = np.round(hu - intercept).astype(np.int64)
    if wrap:  # RSNA's fault: negative stored values written as unsigned 12 bit
        stored = np.mod(stored, 4096)
    ds.PixelData = stored.astype(np.int16 if pixrep else np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _rsna_series(root: Path, *, bleed_slices: set[int], wrap: bool = False) -> tuple[str, list]:
    study, series = f"ID_{generate_uid()[-10:]}", f"ID_{generate_uid()[-10:]}"
    ids = []
    for z in range(SLICES):
        sop = f"ID_{generate_uid()[-9:].replace('.', '0')}"
        ids.append(sop)
        kw = {"intercept": 0.0, "bits_stored": 12, "pixrep": 0, "wrap": True} if wrap else {}
        # RSNA ships flat folders of ID_<sop>.dcm files
        _write_ct(root / f"{sop}.dcm", study=study, series=series, sop=sop, z=z,
                  hu=_phantom(z in bleed_slices), **kw)
    return study, ids


def _write_rsna_csv(path: Path, rows: dict[str, dict[str, int]]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["ID", "Label"])
        for image_id, labels in rows.items():
            for sub in ("epidural", "intraparenchymal", "intraventricular", "subarachnoid",
                        "subdural", "any"):
                w.writerow([f"{image_id}_{sub}", labels.get(sub, 0)])


@pytest.fixture(scope="module")
def rsna_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rsna")
    imgs = root / "stage_2_train"
    pos_study, pos_ids = _rsna_series(imgs, bleed_slices={5, 6})
    _, neg_ids = _rsna_series(imgs, bleed_slices=set(), wrap=True)
    rows = {i: {} for i in neg_ids}
    for z, i in enumerate(pos_ids):
        rows[i] = {"subdural": 1, "any": 1} if z in (5, 6) else {}
    rows[pos_ids[5]]["intraparenchymal"] = 1
    _write_rsna_csv(root / "stage_2_train.csv", rows)
    (root / "positive.txt").write_text(pos_study)
    return root


def test_rsna_label_file_is_parsed_per_image(rsna_dir: Path) -> None:
    labels = read_rsna_labels(rsna_dir / "stage_2_train.csv")
    assert len(labels) == 2 * SLICES
    positives = [k for k, v in labels.items() if v.any]
    assert len(positives) == 2
    assert {s for v in labels.values() for s in v.subtypes} == {"SDH", "IPH"}


def test_rsna_studies_get_study_and_slice_labels(rsna_dir: Path) -> None:
    studies = load_rsna(rsna_dir / "stage_2_train", rsna_dir / "stage_2_train.csv", size=32)
    assert len(studies) == 2
    by_ich = {s.label.ich: s for s in studies}
    pos, neg = by_ich[True], by_ich[False]
    assert pos.label.study_uid == (rsna_dir / "positive.txt").read_text()
    assert pos.label.subtypes == ("SDH", "IPH")
    assert pos.hu.shape == (SLICES, 32, 32)
    assert np.flatnonzero(pos.slice_labels).tolist() == [5, 6]  # sorted by position, not name
    assert neg.slice_labels.sum() == 0
    # the wrapped 12-bit series reads as real HU: air near -1000, brain near 35
    assert float(neg.hu.min()) < -900
    assert float(np.median(neg.hu[:, 16, 16])) == pytest.approx(35, abs=2)


def test_rsna_label_file_with_wrong_columns_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("Image,Target\nID_1_any,1\n")
    with pytest.raises(ValueError, match="expected columns ID,Label"):
        read_rsna_labels(tmp_path / "bad.csv")


def _cq500_study(root: Path, name: str, *, blood: bool) -> None:
    study = generate_uid()
    folder = root / f"{name.replace('-', '')} {name.replace('-', '')}" / "Unknown Study"
    for desc, kernel in (("CT PLAIN THIN", "H30s"), ("CT BONE", "H70h")):
        series = generate_uid()
        for z in range(SLICES):
            hu = _phantom(blood and 4 <= z <= 7)
            if kernel == "H70h":
                hu = hu + 200.0  # a different look, so picking the wrong series would show
            _write_ct(folder / f"CT {desc}" / f"CT{z:06d}.dcm", study=study, series=series,
                      sop=generate_uid(), z=z, hu=hu, patient=name, description=desc,
                      kernel=kernel)


def _write_reads(path: Path, rows: list[tuple[str, list[int], list[int]]]) -> None:
    cols = ["name", "Category"]
    for r in ("R1", "R2", "R3"):
        cols += [f"{r}:{f}" for f in ("ICH", "IPH", "IVH", "SDH", "EDH", "SAH", "Fracture")]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for name, ich_votes, sdh_votes in rows:
            vals: list = [name, "B1"]
            for k in range(3):
                vals += [ich_votes[k], 0, 0, sdh_votes[k], 0, 0, 0]
            w.writerow(vals)


@pytest.fixture(scope="module")
def cq500_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cq500")
    _cq500_study(root / "data", "CQ500-CT-1", blood=True)
    _cq500_study(root / "data", "CQ500-CT-2", blood=False)
    _write_reads(root / "reads.csv", [
        ("CQ500-CT-1", [1, 1, 0], [1, 0, 1]),  # majority ICH, majority SDH
        ("CQ500-CT-2", [1, 0, 0], [0, 0, 0]),  # one reader of three: not ICH
        ("CQ500-CT-99", [1, 1, 1], [0, 0, 0]),  # reads without images
    ])
    return root


def test_cq500_reads_take_the_majority(cq500_dir: Path) -> None:
    reads = read_cq500_reads(cq500_dir / "reads.csv")
    assert reads["cq500ct1"].ich and reads["cq500ct1"].subtypes == ("SDH",)
    assert not reads["cq500ct2"].ich and reads["cq500ct2"].ich_votes == 1
    assert reads["cq500ct99"].n_readers == 3


def test_cq500_studies_use_the_soft_tissue_series(cq500_dir: Path) -> None:
    studies = load_cq500(cq500_dir / "data", cq500_dir / "reads.csv", size=32)
    assert len(studies) == 2
    by_ich = {s.label.ich: s for s in studies}
    assert by_ich[True].label.subtypes == ("SDH",)
    for s in studies:
        assert s.hu.shape == (SLICES, 32, 32)
        brain = float(np.median(s.hu[:, 16, 16]))
        assert brain == pytest.approx(35, abs=3)  # not the bone-kernel series (+200 HU)
        series = {str(pydicom.dcmread(p, stop_before_pixels=True).SeriesDescription)
                  for p in (cq500_dir / "data").rglob("*.dcm")
                  if str(pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID)
                  == s.label.series_uid}
        assert series == {"CT PLAIN THIN"}
    assert by_ich[True].slice_labels.sum() == SLICES  # study label on every slice
    assert by_ich[False].slice_labels.sum() == 0
