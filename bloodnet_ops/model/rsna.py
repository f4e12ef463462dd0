"""RSNA-2019 Intracranial Hemorrhage Detection: DICOM files + ``stage_2_train.csv``.

The label file has one row per (image, subtype)::

    ID,Label
    ID_12cadc6af_epidural,0
    ID_12cadc6af_any,1
    ...

with subtypes ``epidural, intraparenchymal, intraventricular, subarachnoid, subdural, any``.
The image id (``ID_12cadc6af``) is the DICOM SOPInstanceUID (some copies drop the ``ID_``
prefix; both match). Images are grouped into series by SeriesInstanceUID from the headers; a
study is ICH-positive when any of its slices is, and its subtypes are the union over slices.
There are no masks: training uses the slice labels (``CachedStudy.labels_z``).
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bloodnet_ops.model.data import CachedStudy, StudyLabel
from bloodnet_ops.model.prep import prepare_volume
from bloodnet_ops.model.realdata import index_series, load_hu, slab_labels

log = logging.getLogger(__name__)

#: RSNA subtype names → ours.
RSNA_SUBTYPES = {
    "epidural": "EDH",
    "subdural": "SDH",
    "subarachnoid": "SAH",
    "intraparenchymal": "IPH",
    "intraventricular": "IVH",
}


@dataclass(frozen=True, slots=True)
class ImageLabel:
    """Labels of one RSNA image (slice)."""

    any: bool
    subtypes: frozenset[str]


def read_rsna_labels(csv_path: Path) -> dict[str, ImageLabel]:
    """Parse ``stage_2_train.csv`` into labels per image id (``ID_xxxxxxxxx``).

    Duplicate rows (the released file has some) are merged with OR.
    """
    raw: dict[str, dict[str, int]] = {}
    with open(csv_path, newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"ID", "Label"} <= set(reader.fieldnames):
            raise ValueError(f"{Path(csv_path).name}: expected columns ID,Label; "
                             f"got {reader.fieldnames}")
        for row in reader:
            image_id, _, subtype = row["ID"].rpartition("_")
            if subtype not in RSNA_SUBTYPES and subtype != "any":
                raise ValueError(f"{Path(csv_path).name}: unknown subtype {subtype!r} in "
                                 f"{row['ID']!r}")
            d = raw.setdefault(image_id, {})
            d[subtype] = max(d.get(subtype, 0), int(float(row["Label"])))
    out = {}
    for image_id, d in raw.items():
        subs = frozenset(RSNA_SUBTYPES[k] for k, v in d.items() if k in RSNA_SUBTYPES and v)
        out[image_id] = ImageLabel(bool(d.get("any", 0)) or bool(subs), subs)
    return out


def _lookup(labels: dict[str, ImageLabel], sop_uid: str) -> ImageLabel | None:
    return labels.get(sop_uid) or labels.get(f"ID_{sop_uid}") or labels.get(
        sop_uid.removeprefix("ID_"))


def load_rsna(dicom_dir: Path, csv_path: Path, *, size: int, min_slices: int = 10,
              site: str = "rsna") -> list[CachedStudy]:
    """Every labelled RSNA series as a prepared :class:`CachedStudy` with slice labels.

    Series with unlabelled slices are skipped (logged), never guessed.
    """
    labels = read_rsna_labels(csv_path)
    out = []
    for series in index_series(dicom_dir).values():
        if len(series.files) < min_slices:
            continue
        vol = load_hu(series)
        per = [_lookup(labels, uid) for uid in vol.sop_uids]
        if any(p is None for p in per):
            log.warning("series with %d unlabelled slices skipped", sum(p is None for p in per))
            continue
        prep = prepare_volume(vol.hu, vol.spacing, size=size)
        z_any = np.array([p.any for p in per], dtype=np.float32)
        subs = tuple(sorted(set().union(*(p.subtypes for p in per)),
                            key=list(RSNA_SUBTYPES.values()).index))
        lab = StudyLabel(study_uid=series.study_uid, site=site, ich=bool(z_any.any()),
                         subtypes=subs, volume_ml=float("nan"), series_uid=series.series_uid)
        out.append(CachedStudy(lab, prep.hu.astype(np.float16), None, prep.voxel_mm,
                               labels_z=slab_labels(z_any, prep.groups)))
    return out
