"""Realistic bad inputs, for demos and for checking the validator: a study replaced by a faulty
variant of itself, recorded in ``faults.csv`` with the verdict and reason code it should get.

Study-level faults (``scope = study``): ``slice_gap``, ``contrast`` (a warning only),
``not_head``, ``missing_rescale``, ``duplicate`` (the same SOPInstanceUID twice with different
pixels). Object-level faults (``scope = object``; the study itself stays valid): ``truncated`` (a
file cut inside its header), ``non_dicom`` (a sidecar text or JSON file), ``empty`` (0 bytes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bloodnet_ops.synth.study import RenderedStudy
from bloodnet_ops.synth.writer import SeriesOut

FAULTS_HEADER = ("study_uid", "scope", "key", "fault", "expected_reason", "expected_verdict")


@dataclass(frozen=True)
class FaultRecord:
    """One row of ``faults.csv``; ``key`` is the object's path relative to the data set root."""

    study_uid: str
    scope: str
    key: str
    fault: str
    expected_reason: str
    expected_verdict: str

    def row(self) -> tuple[str, ...]:
        return (self.study_uid, self.scope, self.key, self.fault, self.expected_reason,
                self.expected_verdict)


@dataclass
class FaultSetup:
    """What the writer must do differently for a faulty study."""

    overrides: dict[str, dict[str, object]] = field(default_factory=dict)  #: per series kind
    skip: set[int] = field(default_factory=set)  #: soft-series slice indices left out


_ALL = ("localizer", "soft", "bone")


def setup(st: RenderedStudy, rng: np.random.Generator) -> FaultSetup:
    """Header changes and dropped slices, decided before writing."""
    fault = st.plan.fault
    fs = FaultSetup()
    nz = st.soft.shape[0]
    if fault == "slice_gap":
        fs.skip = {int(nz // 2 + rng.integers(-3, 4))}
    elif fault == "contrast":
        for k in _ALL:
            fs.overrides[k] = {"ContrastBolusAgent": "IOHEXOL 350", "ContrastBolusRoute": "IV",
                               "StudyDescription": "CT HEAD W CONTRAST"}
    elif fault == "not_head":
        for k in _ALL:
            fs.overrides[k] = {"BodyPartExamined": "CHEST",
                               "StudyDescription": "CT CHEST WO CONTRAST",
                               "ProtocolName": "CHEST ROUTINE"}
    elif fault == "missing_rescale":
        for k in ("soft", "bone"):
            fs.overrides[k] = {"RescaleIntercept": None, "RescaleSlope": None, "RescaleType": None}
    return fs


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def after_write(
    st: RenderedStudy, root: Path, series: dict[str, SeriesOut], rng: np.random.Generator
) -> tuple[list[FaultRecord], set[float]]:
    """Damage written files as the fault requires. Returns the records and the z positions of
    soft-series slices that are no longer readable (to drop from the mask)."""
    fault = st.plan.fault
    uid = st.plan.study_uid
    soft = series["soft"]
    study_dir = soft.paths[0].parent.parent
    if fault is None:
        return [], set()
    if fault in ("slice_gap", "contrast", "not_head", "missing_rescale"):
        reason = {"slice_gap": "slice_gap", "contrast": "contrast_enhanced",
                  "not_head": "not_head", "missing_rescale": "missing_rescale"}[fault]
        verdict = "accept_with_warning" if fault == "contrast" else "reject"
        return [FaultRecord(uid, "study", "", fault, reason, verdict)], set()
    if fault == "duplicate":
        i = len(soft.paths) // 2
        src = soft.paths[i]
        data = src.read_bytes()
        n = st.geometry.matrix**2 * 2
        pix = np.frombuffer(data[-n:], dtype=st.profile.dtype).copy()
        pix = (pix.astype(np.int64) + rng.integers(-40, 41, size=pix.size)).clip(
            *st.profile.stored_limits).astype(st.profile.dtype)
        dup = src.parent / "resend" / src.name
        dup.parent.mkdir(exist_ok=True)
        dup.write_bytes(data[:-n] + pix.tobytes())
        return [FaultRecord(uid, "study", _rel(root, dup), fault, "duplicate_instance",
                            "reject")], set()
    if fault == "truncated":
        # An edge slice, so the series keeps no gap; cut inside the header so that nothing
        # of it can be parsed.
        j = 0 if rng.random() < 0.5 else len(soft.paths) - 1
        path = soft.paths[j]
        data = path.read_bytes()
        header_len = len(data) - st.geometry.matrix**2 * 2 - 12
        cut = int(rng.integers(200, max(201, header_len - 16)))
        path.write_bytes(data[:cut])
        return ([FaultRecord(uid, "object", _rel(root, path), fault, "unreadable", "reject")],
                {soft.positions[j]})
    if fault == "non_dicom":
        if rng.random() < 0.5:
            path = study_dir / "dose_report.txt"
            path.write_text(f"DOSE REPORT\nCTDIvol: {rng.uniform(40, 60):.1f} mGy\n"
                            f"DLP: {rng.uniform(700, 1100):.0f} mGy*cm\n")
        else:
            path = soft.paths[0].parent / "series_meta.json"
            path.write_text(json.dumps({"series": soft.series_uid, "slices": len(soft.paths),
                                        "exported_by": "PACS gateway"}))
        return [FaultRecord(uid, "object", _rel(root, path), fault, "unreadable", "reject")], set()
    if fault == "empty":
        path = soft.paths[0].parent / f"{st.plan.uid('empty')}.dcm"
        path.write_bytes(b"")
        return [FaultRecord(uid, "object", _rel(root, path), fault, "unreadable", "reject")], set()
    raise ValueError(f"unknown fault kind {fault!r}")
