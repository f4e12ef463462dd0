"""DICOM SEG + Comprehensive 3D SR outputs: built from a real CT series, re-read with highdicom,
and checked with a real validator (``dciodvfy`` from Debian's dicom3tools)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    Comprehensive3DSRStorage,
    CTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)

from bloodnet_ops import dicom_out
from bloodnet_ops.hu import load_series_files
from bloodnet_ops.reasons import Verdict
from bloodnet_ops.records import StudyFinding, StudyResult
from bloodnet_ops.storage import LocalSource

MODEL_VERSION = "bloodnet-test-0.1"


def write_ct_series(folder: Path, *, n: int = 12, size: int = 64, dz: float = 5.0) -> list[Path]:
    """A tiny head-like CT series (valid CT Image IOD, 12-bit unsigned, intercept -1024) whose
    file names and instance numbers are *not* in z order, so ordering must come from geometry."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - size / 2, xx - size / 2)
    paths = []
    for slot, i in enumerate(rng.permutation(n)):
        hu = np.where(r < size * 0.45, 1000.0, -1000.0)
        hu[r < size * 0.40] = 35.0
        hu += rng.normal(0, 3, hu.shape)
        sop = generate_uid()
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = "20240101"
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = ds.AcquisitionTime = "120000"
        ds.AccessionNumber, ds.StudyID, ds.ReferringPhysicianName = "ACC0001", "1", ""
        ds.Modality, ds.Manufacturer, ds.ManufacturerModelName = "CT", "TestVendor", "Model1"
        ds.InstitutionName, ds.StudyDescription, ds.SeriesDescription = "site-a", "CT HEAD", "AX"
        ds.PatientName, ds.PatientID = "Test^Patient", "PID0001"
        ds.PatientBirthDate, ds.PatientSex = "19700101", "O"
        ds.BodyPartExamined, ds.PatientPosition = "HEAD", "HFS"
        ds.SliceThickness, ds.KVP, ds.ConvolutionKernel = dz, 120, "H30s"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.SeriesNumber, ds.AcquisitionNumber, ds.InstanceNumber = 2, 1, int(slot) + 1
        ds.PositionReferenceIndicator = ""
        ds.ImagePositionPatient = [-16.0, -16.0, float(i) * dz]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceLocation = float(i) * dz
        ds.PixelSpacing = [0.5, 0.5]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows = ds.Columns = size
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.WindowCenter, ds.WindowWidth = 40, 80
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.PixelData = np.round(hu + 1024).clip(0, 4095).astype(np.uint16).tobytes()
        path = folder / f"img{slot:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def dciodvfy_errors(path: Path) -> list[str]:
    """The ``Error`` lines dciodvfy prints for ``path`` (warnings are allowed)."""
    exe = shutil.which("dciodvfy")
    assert exe, "dciodvfy is missing: run scripts/test-prereqs.sh (Debian package dicom3tools)"
    # dciodvfy exits non-zero on errors; the Error lines are what we assert on.
    proc = subprocess.run(
        [exe, str(path)], check=False, capture_output=True, text=True, timeout=60
    )
    lines = (proc.stdout + proc.stderr).splitlines()
    assert any(line.strip() for line in lines), "dciodvfy printed nothing"
    return [line for line in lines if line.startswith("Error")]


@pytest.fixture
def ct_study(tmp_path):
    """(source, study, volume, sorted header datasets) for one CT series under a LocalSource."""
    root = tmp_path / "src"
    paths = write_ct_series(root / "any" / "layout")
    source = LocalSource(root)
    volume = load_series_files(paths)
    headers = {str(d.SOPInstanceUID): (d, p) for p in paths
               for d in [pydicom.dcmread(p, stop_before_pixels=True)]}
    ordered = [headers[uid][0] for uid in volume.sop_uids]
    keys = [headers[uid][1].relative_to(root).as_posix() for uid in volume.sop_uids]
    first = ordered[0]
    study = StudyResult(
        study_uid=str(first.StudyInstanceUID),
        series_uid=str(first.SeriesInstanceUID),
        site="site-a",
        verdict=Verdict.ACCEPT,
        reasons=[],
        keys=keys,
        series_keys=keys,
        n_slices=len(keys),
    )
    return source, study, volume, ordered


def _synth_series(root: Path) -> dict[str, list[Path]]:
    """Files of every series in a synth data set, by SeriesInstanceUID (from the headers)."""
    series: dict[str, list[Path]] = {}
    for path in sorted(root.rglob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
        series.setdefault(str(ds.SeriesInstanceUID), []).append(path)
    return series


def blob_probability(shape: tuple[int, int, int]) -> np.ndarray:
    """A blood probability map whose extent differs per slice, so a wrong z order shows."""
    prob = np.full(shape, 0.02, dtype=np.float32)
    for k, z in enumerate(range(4, 8)):
        prob[z, 20:30, 14:14 + 3 * (k + 1)] = 0.9
    return prob


def test_source_ct_passes_dciodvfy(ct_study):
    source, study, _, _ = ct_study
    assert dciodvfy_errors(source.root / study.series_keys[0]) == []


def test_positive_study_writes_valid_seg_and_sr(ct_study):
    source, study, volume, _ = ct_study
    prob = blob_probability(volume.hu.shape)
    finding = StudyFinding(study.study_uid, study.series_uid, probability=0.93, positive=True,
                           volume_ml=1.75)

    # source_datasets=None: the headers are fetched from the source by study.series_keys
    seg_key, sr_key = dicom_out.write_outputs(
        source, study, volume, finding, prob, model_version=MODEL_VERSION, out_prefix="outputs"
    )
    assert seg_key == f"outputs/{study.study_uid}/seg.dcm"
    assert sr_key == f"outputs/{study.study_uid}/sr.dcm"
    seg_path, sr_path = source.root / seg_key, source.root / sr_key
    assert dciodvfy_errors(seg_path) == []
    assert dciodvfy_errors(sr_path) == []

    seg = hd.seg.segread(seg_path)
    assert seg.SegmentationType == "BINARY"
    assert seg.StudyInstanceUID == study.study_uid
    desc = seg.get_segment_description(1)
    algo = desc.algorithm_identification[0]
    assert (algo.AlgorithmName, algo.AlgorithmVersion) == ("BloodNet", MODEL_VERSION)
    assert desc.segmented_property_type.value == "50960005"  # Hemorrhage
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == study.series_uid
    # The mask comes back on the right source instances (matched by SOP UID, not list order).
    back = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=volume.sop_uids, segment_numbers=[1],
        assert_missing_frames_are_empty=True,
    )[..., 0]
    np.testing.assert_array_equal(back.astype(bool), prob >= dicom_out.MASK_THRESHOLD)
    assert seg.NumberOfFrames == 4  # empty frames are omitted

    sr = hd.sr.srread(sr_path)
    assert sr.SOPClassUID == Comprehensive3DSRStorage
    report = sr.content
    (group,) = report.get_image_measurement_groups()
    assert group.finding_type.value == "1386000"  # SCT intracranial hemorrhage
    values = {m.name.value: (m.value, m.unit.value) for m in group.get_measurements()}
    assert values["118565006"] == (pytest.approx(1.75), "ml")
    assert values["122157"] == (pytest.approx(0.93), "1")
    evaluations = {q.name.value: q.value.value for q in group.get_qualitative_evaluations()}
    assert evaluations["1386000"] == "52101004"  # Present
    (vol_group,) = report.get_volumetric_roi_measurement_groups()
    ref = vol_group.referenced_segment
    assert ref[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == seg.SOPInstanceUID
    (seg_volume,) = vol_group.get_measurements()
    voxels = int((prob >= dicom_out.MASK_THRESHOLD).sum())
    assert seg_volume.value == pytest.approx(voxels * float(np.prod(volume.spacing)) / 1000.0)

    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    series = {s.SeriesInstanceUID: s for s in evidence}
    assert set(series) == {study.series_uid, seg.SeriesInstanceUID}
    assert {i.ReferencedSOPInstanceUID for i in series[study.series_uid].ReferencedSOPSequence} \
        == set(volume.sop_uids)
    ours = [e for e in sr.ContributingEquipmentSequence
            if e.Manufacturer == dicom_out.MANUFACTURER]
    assert ours and ours[0].ManufacturerModelName == "BloodNet"
    assert MODEL_VERSION in list(ours[0].SoftwareVersions)


def test_negative_study_writes_sr_only(ct_study):
    source, study, volume, ordered = ct_study
    prob = np.full(volume.hu.shape, 0.01, dtype=np.float32)
    finding = StudyFinding(study.study_uid, study.series_uid, probability=0.04, positive=False,
                           volume_ml=0.0)
    shuffled = list(reversed(ordered))  # any order: matched to the volume by SOP UID
    seg_key, sr_key = dicom_out.write_outputs(
        source, study, volume, finding, prob, model_version=MODEL_VERSION, out_prefix="",
        source_datasets=shuffled,
    )
    assert seg_key == ""
    assert not (source.root / study.study_uid / "seg.dcm").exists()
    assert sr_key == f"{study.study_uid}/sr.dcm"
    assert dciodvfy_errors(source.root / sr_key) == []
    report = hd.sr.srread(source.root / sr_key).content
    assert report.get_volumetric_roi_measurement_groups() == []
    (group,) = report.get_image_measurement_groups()
    evaluations = {q.name.value: q.value.value for q in group.get_qualitative_evaluations()}
    assert evaluations["1386000"] == "272519000"  # Absent
    values = {m.name.value: m.value for m in group.get_measurements()}
    assert values["118565006"] == 0.0


def test_rerun_rewrites_identical_uids(ct_study):
    source, study, volume, ordered = ct_study
    prob = blob_probability(volume.hu.shape)
    finding = StudyFinding(study.study_uid, study.series_uid, 0.9, True, 1.0)
    uids = []
    for _ in range(2):
        seg_key, sr_key = dicom_out.write_outputs(
            source, study, volume, finding, prob, model_version=MODEL_VERSION,
            out_prefix="o", source_datasets=ordered,
        )
        uids.append(tuple(pydicom.dcmread(source.root / k, stop_before_pixels=True).SOPInstanceUID
                          for k in (seg_key, sr_key)))
    assert uids[0] == uids[1]
    other = dicom_out.write_outputs(source, study, volume, finding, prob, model_version="v2",
                                    out_prefix="o2", source_datasets=ordered)
    assert pydicom.dcmread(source.root / other[1]).SOPInstanceUID != uids[0][1]


def test_mismatched_inputs_are_rejected(ct_study):
    source, study, volume, ordered = ct_study
    finding = StudyFinding(study.study_uid, study.series_uid, 0.9, True, 1.0)
    with pytest.raises(ValueError, match="shape"):
        dicom_out.write_outputs(source, study, volume, finding, np.zeros((2, 64, 64)),
                                model_version=MODEL_VERSION, out_prefix="o",
                                source_datasets=ordered)
    with pytest.raises(ValueError, match="no source dataset"):
        dicom_out.write_outputs(source, study, volume, finding, blob_probability(volume.hu.shape),
                                model_version=MODEL_VERSION, out_prefix="o",
                                source_datasets=ordered[1:])


def test_headers_fall_back_to_a_full_get_when_the_prefix_is_short(ct_study, monkeypatch):
    source, study, volume, _ = ct_study
    gets: list[str] = []
    full_get = source.get

    def counting_get(key: str) -> bytes:
        gets.append(key)
        return full_get(key)

    monkeypatch.setattr(source, "get", counting_get)
    monkeypatch.setattr(dicom_out, "HEADER_BYTES", 512)  # cuts every header short
    headers = dicom_out.read_source_headers(source, study.series_keys)
    assert sorted(gets) == sorted(study.series_keys)
    assert [str(d.SOPInstanceUID) for d in headers] == volume.sop_uids
    assert all("PixelData" not in d for d in headers)


def test_synthetic_ct_passes_dciodvfy(synth_small):
    """DESIGN §7: the phantom's CT (every series kind, every vendor profile) is valid DICOM."""
    errors = {}
    for uid, paths in _synth_series(synth_small).items():
        for path in (paths[0], paths[-1]):
            if found := dciodvfy_errors(path):
                errors[f"{uid}/{path.name}"] = found
    assert errors == {}


def test_outputs_of_synthetic_positive_studies_match_their_masks(synth_small, tmp_path):
    """Real vendor variety (slice order, signedness, VR): the SEG lands on the right slices."""
    import csv

    with open(synth_small / "labels.csv", newline="") as fh:
        positives = [row for row in csv.DictReader(fh) if row["ich"] in ("1", "True", "true")]
    assert positives, "synth_small has no positive study"
    series = _synth_series(synth_small)
    out = LocalSource(tmp_path)
    for row in positives[:2]:
        paths = series[row["series_uid"]]
        volume = load_series_files(paths)
        mask = np.load(synth_small / "masks" / f"{row['study_uid']}.npz")["mask"] > 0
        assert mask.shape == volume.hu.shape
        headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
        first = headers[0]
        study = StudyResult(row["study_uid"], row["series_uid"], row["site"], Verdict.ACCEPT, [],
                            keys=[], series_keys=[])
        finding = StudyFinding(row["study_uid"], row["series_uid"], 0.97, True,
                               float(row["volume_ml"]))
        seg_key, sr_key = dicom_out.write_outputs(
            out, study, volume, finding, mask.astype(np.float32), model_version=MODEL_VERSION,
            out_prefix="derived", source_datasets=headers,
        )
        assert dciodvfy_errors(tmp_path / seg_key) == []
        assert dciodvfy_errors(tmp_path / sr_key) == []
        seg = hd.seg.segread(tmp_path / seg_key)
        assert seg.PatientID == first.PatientID
        back = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=volume.sop_uids, segment_numbers=[1],
            assert_missing_frames_are_empty=True,
        )[..., 0]
        np.testing.assert_array_equal(back.astype(bool), mask)
