"""DICOM outputs of a screened study: a SEG of the blood mask and a TID 1500 SR with the finding.

Both objects are built with highdicom, so an invalid object cannot be produced, and are written
back to the object store next to nothing else: ``<out_prefix>/<study_uid>/seg.dcm`` and
``.../sr.dcm``.

- **SEG** (BINARY): the blood probability thresholded at :data:`MASK_THRESHOLD`, one segment
  "Intracranial hemorrhage" over the scored CT series, frames only where blood was found. A
  study whose mask is empty gets *no* SEG (highdicom refuses a segmentation without a single
  non-empty frame, and an empty overlay tells a reader nothing); :func:`write_outputs` then
  returns ``""`` as the SEG key.
- **SR** (Comprehensive 3D SR, TID 1500 Measurement Report), always written: one study-level
  group (TID 1501) with ICH present/absent (SCT 1386000 "Intracranial hemorrhage"), the model's
  probability and blood volume in mL, referencing every source slice; plus, when a SEG exists,
  one volumetric group (TID 1411) that references the segment and gives the volume of the voxels
  it encodes.

The model travels as a device observer, as ``AlgorithmIdentificationSequence`` of the segment
(name ``BloodNet``, version = model version) and as contributing equipment of both objects.

UIDs are derived from (study UID, model version), so rewriting a night's outputs yields the same
SOP Instance UIDs and overwrites the same keys: outputs are idempotent like the DB rows.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from io import BytesIO
from typing import TYPE_CHECKING

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from bloodnet_ops import PREPROCESSING_VERSION
from bloodnet_ops.records import StudyFinding, StudyResult
from bloodnet_ops.storage import HEADER_BYTES, Source

if TYPE_CHECKING:
    from bloodnet_ops.hu import HUVolume

log = logging.getLogger(__name__)

#: Blood probability at or above which a voxel belongs to the SEG mask.
MASK_THRESHOLD = 0.5
ALGORITHM_NAME = "BloodNet"
MANUFACTURER = "BloodNet Screening"
SEG_NAME = "seg.dcm"
SR_NAME = "sr.dcm"
#: Series numbers of the derived objects; high enough not to collide with scanner series.
SEG_SERIES_NUMBER = 9701
SR_SERIES_NUMBER = 9702

#: SNOMED CT 1386000 "Intracranial hemorrhage (disorder)".
ICH: Code = codes.SCT.IntracranialHemorrhage
PROBABILITY: Code = codes.DCM.Probability  # DCM 122157
VOLUME: Code = codes.SCT.Volume  # SCT 118565006
ML = Code("ml", "UCUM", "milliliter")
NO_UNITS: Code = codes.UCUM.NoUnits
#: What SEG/SR building reads from a source header; the last of them sits in group 0028, so a
#: prefix that has them all has the patient, study, series and frame-of-reference data too.
_GEOMETRY = ("SOPInstanceUID", "ImagePositionPatient", "ImageOrientationPatient", "Rows",
             "Columns", "PixelSpacing")
_UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:bloodnet-screening:dicom-out")


def _uid(kind: str, study_uid: str, model_version: str) -> str:
    """A deterministic ``2.25.`` UID (UUIDv5 as an integer), so reruns rewrite identical objects.
    (pydicom's ``generate_uid(prefix=None)`` ignores its entropy sources, hence uuid5.)"""
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, f'{kind}|{study_uid}|{model_version}').int}"


def _contributing_equipment(model_version: str) -> list[hd.ContributingEquipment]:
    return [
        hd.ContributingEquipment(
            manufacturer=MANUFACTURER,
            purpose_of_reference=codes.DCM.ProcessingEquipment,
            manufacturer_model_name=ALGORITHM_NAME,
            software_versions=[model_version, PREPROCESSING_VERSION],
            contribution_description="ICH detection and blood segmentation (research only)",
        )
    ]


def read_source_headers(source: Source, keys: Sequence[str]) -> list[Dataset]:
    """Header datasets (no pixels) of ``keys``: a ranged GET first, the full object if the
    prefix does not parse (a vendor header larger than :data:`HEADER_BYTES`)."""
    out: list[Dataset] = []
    for key in keys:
        try:
            ds = pydicom.dcmread(BytesIO(source.get_range(key, HEADER_BYTES)),
                                 stop_before_pixels=True)
            if any(name not in ds for name in _GEOMETRY):
                raise InvalidDicomError("header prefix too short")
        # A prefix may end anywhere, so any parse failure means "fetch it all"; a real problem
        # with the object then surfaces from the full read below.
        except Exception:  # noqa: BLE001
            ds = pydicom.dcmread(BytesIO(source.get(key)), stop_before_pixels=True)
        out.append(ds)
    return out


def order_by_volume(datasets: Sequence[Dataset], volume: HUVolume) -> list[Dataset]:
    """The source datasets of ``volume``'s slices, in the volume's z order (matched by SOP
    Instance UID). Datasets of other series are ignored.

    Raises
    ------
    ValueError
        If a slice of the volume has no dataset, or rows/columns do not match ``volume.hu``.
    """
    by_uid = {str(ds.SOPInstanceUID): ds for ds in datasets}
    missing = [uid for uid in volume.sop_uids if uid not in by_uid]
    if missing:
        raise ValueError(
            f"{len(missing)} of {len(volume.sop_uids)} volume slices have no source dataset"
        )
    ordered = [by_uid[uid] for uid in volume.sop_uids]
    _, rows, cols = volume.hu.shape
    for ds in ordered:
        if (int(ds.Rows), int(ds.Columns)) != (rows, cols):
            raise ValueError(
                f"source slice is {ds.Rows}x{ds.Columns}, volume slices are {rows}x{cols}"
            )
    return ordered


def blood_mask(blood_prob: np.ndarray, threshold: float = MASK_THRESHOLD) -> np.ndarray:
    """Binary mask (z, y, x) bool from a blood probability map in [0, 1]."""
    return np.asarray(blood_prob) >= threshold


def mask_volume_ml(mask: np.ndarray, spacing: Sequence[float]) -> float:
    """Volume of a binary mask in mL; ``spacing`` is (dz, dy, dx) in mm."""
    voxel_mm3 = float(np.prod(np.asarray(spacing, dtype=float)))
    return float(np.count_nonzero(mask)) * voxel_mm3 / 1000.0


def build_seg(
    source_images: Sequence[Dataset],
    mask: np.ndarray,
    *,
    model_version: str,
    study_uid: str | None = None,
) -> hd.seg.Segmentation | None:
    """A BINARY DICOM SEG with one "Intracranial hemorrhage" segment.

    Parameters
    ----------
    source_images
        The CT slices, one per mask plane, **in the mask's z order** (see
        :func:`order_by_volume`). Headers without pixel data are enough.
    mask
        (z, y, x) bool or {0, 1}; z matches ``source_images``.
    model_version
        Goes into the AlgorithmIdentificationSequence and SoftwareVersions.

    Returns
    -------
    The segmentation, or ``None`` when the mask is empty (no SEG is written then).
    """
    mask = np.asarray(mask).astype(bool)
    if mask.ndim != 3 or mask.shape[0] != len(source_images):
        raise ValueError(
            f"mask must be (z, y, x) with z = {len(source_images)} source images, "
            f"got shape {mask.shape}"
        )
    if not mask.any():
        return None
    study_uid = study_uid or str(source_images[0].StudyInstanceUID)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=ALGORITHM_NAME,
        family=codes.cid7162.ArtificialIntelligence,
        version=model_version,
        parameters={"threshold": f"{MASK_THRESHOLD:g}"},
    )
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="Intracranial hemorrhage",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Hemorrhage,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        anatomic_regions=[codes.SCT.Intracranial],
        tracking_uid=_uid("seg-track", study_uid, model_version),
        tracking_id="ICH",
    )
    return hd.seg.Segmentation(
        source_images=list(source_images),
        pixel_array=mask.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment],
        series_instance_uid=_uid("seg-series", study_uid, model_version),
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=_uid("seg", study_uid, model_version),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=ALGORITHM_NAME,
        software_versions=model_version,
        device_serial_number=model_version,
        content_description="BloodNet blood mask",
        content_label="BLOOD",
        series_description=f"BloodNet ICH segmentation {model_version}"[:64],
        contributing_equipment=_contributing_equipment(model_version),
    )


def build_sr(
    source_images: Sequence[Dataset],
    finding: StudyFinding,
    *,
    model_version: str,
    seg: Dataset | None = None,
    segment_volume_ml: float | None = None,
) -> hd.sr.Comprehensive3DSR:
    """A Comprehensive 3D SR (TID 1500) with the study-level ICH finding.

    Parameters
    ----------
    source_images
        The scored CT slices (headers are enough); all are referenced.
    finding
        ``positive`` decides Present/Absent; ``probability`` (unitless, [0, 1]) and
        ``volume_ml`` (mL) are reported as measurements.
    seg
        The SEG of the same study, if one was written: referenced by a volumetric group whose
        volume is ``segment_volume_ml`` (the voxels the SEG encodes, in mL).
    """
    first = source_images[0]
    study_uid = str(first.StudyInstanceUID)
    algorithm_id = hd.sr.AlgorithmIdentification(
        name=ALGORITHM_NAME, version=model_version, family=codes.cid7162.ArtificialIntelligence
    )
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=_uid("device", ALGORITHM_NAME, model_version),
            name=ALGORITHM_NAME,
            manufacturer_name=MANUFACTURER,
            model_name=f"{ALGORITHM_NAME} {model_version}"[:64],
        ),
    )
    presence = codes.SCT.Present if finding.positive else codes.SCT.Absent
    study_group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=_uid("sr-track-study", study_uid, model_version),
            identifier="ICH study-level finding",
        ),
        finding_type=ICH,
        algorithm_id=algorithm_id,
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(name=ICH, value=presence)],
        measurements=[
            hd.sr.Measurement(
                name=PROBABILITY,
                value=float(finding.probability),
                unit=NO_UNITS,
                algorithm_id=algorithm_id,
            ),
            hd.sr.Measurement(
                name=VOLUME,
                value=float(finding.volume_ml),
                unit=ML,
                algorithm_id=algorithm_id,
            ),
        ],
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(ds)
                       for ds in source_images],
    )
    groups: list = [study_group]
    evidence = list(source_images)
    if seg is not None:
        segment_volume_ml = float(segment_volume_ml or 0.0)
        groups.append(
            hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=_uid("sr-track-seg", study_uid, model_version),
                    identifier="ICH segmentation",
                ),
                referenced_segment=_referenced_segment(seg, source_images),
                finding_type=ICH,
                algorithm_id=algorithm_id,
                finding_sites=[hd.sr.FindingSite(codes.SCT.Intracranial)],
                measurements=[
                    hd.sr.Measurement(
                        name=VOLUME,
                        value=segment_volume_ml,
                        unit=ML,
                        method=codes.DCM.SumOfSegmentedVoxelMethodForVolume,
                        algorithm_id=algorithm_id,
                    )
                ],
            )
        )
        evidence.append(seg)
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.SCT.ComputedTomographyOfHead,
        imaging_measurements=groups,
    )
    return hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report,
        series_instance_uid=_uid("sr-series", study_uid, model_version),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=_uid("sr", study_uid, model_version),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        series_description=f"BloodNet ICH report {model_version}"[:64],
        contributing_equipment=_contributing_equipment(model_version),
    )


def _referenced_segment(seg: Dataset, source_images: Sequence[Dataset]) -> hd.sr.ReferencedSegment:
    # Built by hand: ReferencedSegment.from_segmentation (highdicom 0.28.2) looks for the
    # segment identification per frame, but a one-segment SEG carries it in the shared groups.
    return hd.sr.ReferencedSegment(
        sop_class_uid=str(seg.SOPClassUID),
        sop_instance_uid=str(seg.SOPInstanceUID),
        segment_number=1,
        source_series=hd.sr.SourceSeriesForSegmentation(
            str(source_images[0].SeriesInstanceUID)
        ),
    )


def _to_bytes(ds: Dataset) -> bytes:
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def write_outputs(
    source: Source,
    study: StudyResult,
    volume: HUVolume,
    finding: StudyFinding,
    blood_prob: np.ndarray,
    *,
    model_version: str,
    out_prefix: str,
    source_datasets: Sequence[Dataset] | None = None,
) -> tuple[str, str]:
    """Build the SEG and SR of one scored study and ``source.put`` them.

    Parameters
    ----------
    source
        Where the outputs go (keys relative to its root). When ``source_datasets`` is ``None``
        the CT headers are read from it too, by ``study.series_keys``.
    study, volume, finding
        The validated study, its HU volume (slices sorted along the normal, ``sop_uids``
        matching) and the model's finding.
    blood_prob
        (z, y, x) float blood probability in the volume's order; thresholded at
        :data:`MASK_THRESHOLD`.
    source_datasets
        Datasets of the scored series (headers suffice). When ``None`` they are read from
        ``study.series_keys`` with ranged GETs.

    Returns
    -------
    (seg_key, sr_key): ``seg_key`` is ``""`` when the mask is empty and no SEG was written.
    """
    prob = np.asarray(blood_prob)
    if prob.shape != volume.hu.shape:
        raise ValueError(f"blood_prob shape {prob.shape} != volume shape {volume.hu.shape}")
    if source_datasets is None:
        source_datasets = read_source_headers(source, study.series_keys)
    ordered = order_by_volume(source_datasets, volume)
    mask = blood_mask(prob)
    seg = build_seg(ordered, mask, model_version=model_version, study_uid=study.study_uid)
    sr = build_sr(
        ordered,
        finding,
        model_version=model_version,
        seg=seg,
        segment_volume_ml=mask_volume_ml(mask, volume.spacing) if seg is not None else None,
    )
    prefix = out_prefix.strip("/")
    base = f"{prefix}/{study.study_uid}" if prefix else study.study_uid
    seg_key = ""
    if seg is not None:
        seg_key = f"{base}/{SEG_NAME}"
        source.put(seg_key, _to_bytes(seg))
    sr_key = f"{base}/{SR_NAME}"
    source.put(sr_key, _to_bytes(sr))
    log.info("dicom outputs written: seg=%s frames=%d", bool(seg_key), int(mask.any((1, 2)).sum()))
    return seg_key, sr_key
