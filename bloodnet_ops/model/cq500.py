"""CQ500 (qure.ai): DICOM studies + ``reads.csv`` with three radiologists' reads per study.

``reads.csv`` has one row per study: ``name`` (e.g. ``CQ500-CT-1``), ``Category`` and, for each
reader ``R1``, ``R2``, ``R3``, the columns ``R<k>:ICH``, ``R<k>:IPH``, ``R<k>:IVH``, ``R<k>:SDH``,
``R<k>:EDH``, ``R<k>:SAH`` (0/1) among others. The reference standard is the **majority** of the
readers (2 of 3), for ICH and for each subtype.

A study is matched to its reads by PatientID or PatientName (compared without punctuation or
case, so ``CQ500-CT-1`` = ``CQ500CT1``). Each study has several series (thin and thick, plain and
bone); the axial soft-tissue series closest to 5 mm is used. There are no masks and no slice
labels: training uses the study label on every slice of positives (weak supervision).
"""

from __future__ import annotations

import csv
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bloodnet_ops.model.data import CachedStudy, StudyLabel
from bloodnet_ops.model.net import SUBTYPES
from bloodnet_ops.model.prep import prepare_volume
from bloodnet_ops.model.realdata import SeriesFiles, index_series, load_hu, pick_diagnostic

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StudyReads:
    """Majority reads of one CQ500 study."""

    name: str
    ich: bool
    subtypes: tuple[str, ...]
    n_readers: int
    ich_votes: int


def normalise_name(text: str) -> str:
    return re.sub(r"[^0-9a-z]", "", text.lower())


def read_cq500_reads(csv_path: Path) -> dict[str, StudyReads]:
    """Parse ``reads.csv``; keys are normalised study names."""
    out = {}
    with open(csv_path, newline="") as fh:
        reader = csv.DictReader(fh)
        cols = reader.fieldnames or []
        readers = sorted({c.split(":")[0] for c in cols if re.fullmatch(r"R\d+:ICH", c)})
        if "name" not in cols or not readers:
            raise ValueError(f"{Path(csv_path).name}: expected a 'name' column and R<k>:ICH "
                             f"columns; got {cols}")
        for row in reader:
            def votes(field: str, row: dict = row) -> int:
                return sum(int(float(row.get(f"{r}:{field}") or 0)) for r in readers)

            need = len(readers) // 2 + 1
            ich_votes = votes("ICH")
            subs = tuple(t for t in SUBTYPES if votes(t) >= need)
            out[normalise_name(row["name"])] = StudyReads(row["name"], ich_votes >= need, subs,
                                                          len(readers), ich_votes)
    return out


def load_cq500(dicom_dir: Path, reads_csv: Path, *, size: int, site: str = "cq500"
               ) -> list[CachedStudy]:
    """Every CQ500 study with reads as a prepared :class:`CachedStudy` (one series each)."""
    reads = read_cq500_reads(reads_csv)
    by_study: dict[str, list[SeriesFiles]] = {}
    for s in index_series(dicom_dir).values():
        by_study.setdefault(s.study_uid, []).append(s)
    out = []
    for study_uid, candidates in sorted(by_study.items()):
        first = candidates[0]
        r = reads.get(normalise_name(first.patient_id)) or reads.get(
            normalise_name(first.patient_name))
        if r is None:
            log.warning("a CQ500 study has no reads row; skipped")
            continue
        series = pick_diagnostic(candidates)
        if series is None:
            log.warning("CQ500 study %s has no usable axial series; skipped", r.name)
            continue
        vol = load_hu(series)
        prep = prepare_volume(vol.hu, vol.spacing, size=size)
        lab = StudyLabel(study_uid=study_uid, site=site, ich=r.ich, subtypes=r.subtypes,
                         volume_ml=float("nan"), series_uid=series.series_uid)
        out.append(CachedStudy(lab, prep.hu.astype(np.float16), None, prep.voxel_mm))
    return out
