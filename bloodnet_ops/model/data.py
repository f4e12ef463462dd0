"""Training data from ``bloodnet synth`` folders (and, through the real-data loaders, RSNA/CQ500).

A data set folder holds DICOM files in any layout, ``labels.csv`` (study_uid, site, ich, subtypes,
volume_ml, series_uid) and ``masks/<study_uid>.npz`` (``mask`` (z, y, x) uint8 with 0 = none and
1..5 = EDH, SDH, SAH, IPH, IVH; ``positions`` (z,) ascending). Volumes go through the same HU
loader and :func:`bloodnet_ops.model.prep.prepare_volume` as inference, and are cached on disk
as ``.npy`` (float16 HU on the prepared grid) so epochs do not re-read DICOM.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bloodnet_ops import PREPROCESSING_VERSION
from bloodnet_ops.model.net import SUBTYPES
from bloodnet_ops.model.prep import prepare_mask, prepare_volume

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StudyLabel:
    """One row of ``labels.csv``."""

    study_uid: str
    site: str
    ich: bool
    subtypes: tuple[str, ...]
    volume_ml: float
    series_uid: str

    def subtype_vector(self) -> np.ndarray:
        return np.array([s in self.subtypes for s in SUBTYPES], dtype=np.float32)


@dataclass(slots=True)
class CachedStudy:
    """A prepared study: HU slabs, the label map on the same grid, and its labels."""

    label: StudyLabel
    hu: np.ndarray  #: (z, S, S) float16 HU
    mask: np.ndarray | None  #: (z, S, S) uint8 (0, 1..5), None when unknown (no masks)
    voxel_mm: tuple[float, float, float]
    labels_z: np.ndarray | None = None  #: (z,) slice labels when there is no mask (RSNA)

    @property
    def slice_labels(self) -> np.ndarray:
        """(z,) 1 where the slab has blood: from the mask, else from ``labels_z``, else the
        study label on every slice (weakest supervision)."""
        if self.mask is not None:
            return (self.mask.reshape(self.mask.shape[0], -1) > 0).any(axis=1).astype(np.float32)
        if self.labels_z is not None:
            return np.asarray(self.labels_z, dtype=np.float32)
        return np.full(self.hu.shape[0], float(self.label.ich), dtype=np.float32)


def read_labels(path: Path) -> list[StudyLabel]:
    """Parse ``labels.csv``; ``ich`` accepts 1/0, true/false, yes/no."""
    out = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            subs = tuple(s for s in (row.get("subtypes") or "").split(";") if s)
            bad = set(subs) - set(SUBTYPES)
            if bad:
                raise ValueError(f"labels.csv: unknown subtypes {sorted(bad)} for a study")
            out.append(StudyLabel(
                study_uid=row["study_uid"],
                site=row.get("site", ""),
                ich=str(row["ich"]).strip().lower() in ("1", "true", "yes", "1.0"),
                subtypes=subs,
                volume_ml=float(row.get("volume_ml") or 0.0),
                series_uid=row.get("series_uid", ""),
            ))
    return out


def _load_volumes(data_dir: Path, labels: Sequence[StudyLabel]) -> Iterator[tuple[StudyLabel,
                                                                                   object]]:
    """Yield (label, HUVolume) for each study, through the pipeline's validation and loader."""
    try:
        from bloodnet_ops.pipeline import validate_source
        from bloodnet_ops.volumes import load_study_volume
    except ImportError:  # TEMPORARY until helper D's pipeline lands
        yield from _load_volumes_private(data_dir, labels)
        return
    from bloodnet_ops.storage import LocalSource

    source = LocalSource(data_dir)
    report = validate_source(source, hu_check=False)
    by_uid = {s.study_uid: s for s in report.studies}
    for lab in labels:
        study = by_uid.get(lab.study_uid)
        if study is None or study.series_uid is None:
            log.warning("study %s: not found or no scorable series; skipped", lab.study_uid[-8:])
            continue
        if lab.series_uid and study.series_uid != lab.series_uid:
            log.warning("study %s: validator picked another series than labels.csv; skipped",
                        lab.study_uid[-8:])
            continue
        yield lab, load_study_volume(source, study)


def _load_volumes_private(data_dir: Path, labels: Sequence[StudyLabel]
                          ) -> Iterator[tuple[StudyLabel, object]]:
    """TEMPORARY loader: group files by SeriesInstanceUID from headers, convert to HU."""
    import pydicom

    from bloodnet_ops.hu import load_series_files

    series: dict[str, list[Path]] = {}
    for path in sorted(Path(data_dir).rglob("*")):
        if not path.is_file() or path.suffix in (".csv", ".npz", ".json"):
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True,
                                 specific_tags=["SeriesInstanceUID"])
        except Exception:  # noqa: BLE001 - not DICOM
            log.debug("not DICOM: %s", path.name)
            continue
        series.setdefault(str(ds.SeriesInstanceUID), []).append(path)
    for lab in labels:
        files = series.get(lab.series_uid)
        if files:
            yield lab, load_series_files(files)


def _align_mask(mask_path: Path, positions: np.ndarray) -> np.ndarray | None:
    if not mask_path.exists():
        return None
    with np.load(mask_path) as z:
        # this project's synth writes mask/positions; other generators label/z
        mask = z["mask"] if "mask" in z.files else z["label"]
        mpos = np.asarray(z["positions"] if "positions" in z.files else z["z"], dtype=np.float64)
    if mask.shape[0] != positions.size or not np.allclose(np.sort(mpos), positions, atol=0.05):
        raise ValueError(f"{mask_path.name}: mask positions do not match the series "
                         f"({mask.shape[0]} vs {positions.size} slices)")
    return mask


def default_cache_root() -> Path:
    """``$BLOODNET_CACHE`` or ``~/.cache/bloodnet``."""
    from bloodnet_ops.settings import current

    return current().cache


def cache_dir_for(cache_root: Path, size: int, data_dir: Path) -> Path:
    """One folder per (preprocessing version, size, data set folder): a perturbed copy of a data
    set keeps its study UIDs but must not share the cache."""
    key = hashlib.sha1(str(Path(data_dir).resolve()).encode()).hexdigest()[:12]
    return Path(cache_root) / f"{PREPROCESSING_VERSION}-s{size}" / key


def build_cache(data_dir: Path, cache_root: Path | None = None, *, size: int,
                progress: bool = True) -> list[CachedStudy]:
    """Prepare every labelled study of ``data_dir`` once and load them all from the cache."""
    from tqdm import tqdm

    data_dir = Path(data_dir)
    labels = read_labels(data_dir / "labels.csv")
    cdir = cache_dir_for(cache_root or default_cache_root(), size, data_dir)
    cdir.mkdir(parents=True, exist_ok=True)
    todo = [lab for lab in labels if not (cdir / f"{lab.study_uid}.json").exists()]
    if todo:
        bar = tqdm(total=len(todo), desc="prepare", disable=not progress, file=None)
        for lab, vol in _load_volumes(data_dir, todo):
            prep = prepare_volume(vol.hu, vol.spacing, size=size)
            mask = _align_mask(data_dir / "masks" / f"{lab.study_uid}.npz", vol.positions)
            np.save(cdir / f"{lab.study_uid}.hu.npy", prep.hu.astype(np.float16))
            if mask is not None:
                np.save(cdir / f"{lab.study_uid}.mask.npy", prepare_mask(mask, prep, size))
            meta = {"label": asdict(lab), "voxel_mm": prep.voxel_mm}
            (cdir / f"{lab.study_uid}.json").write_text(json.dumps(meta))
            bar.update(1)
        bar.close()
    return load_cache(cdir, [lab.study_uid for lab in labels])


def load_cache(cdir: Path, study_uids: Sequence[str]) -> list[CachedStudy]:
    out = []
    for uid in study_uids:
        meta_path = cdir / f"{uid}.json"
        if not meta_path.exists():
            continue
        meta = json.loads(meta_path.read_text())
        lab = meta["label"]
        lab["subtypes"] = tuple(lab["subtypes"])
        mask_path = cdir / f"{uid}.mask.npy"
        out.append(CachedStudy(
            StudyLabel(**lab),
            np.load(cdir / f"{uid}.hu.npy"),
            np.load(mask_path) if mask_path.exists() else None,
            tuple(meta["voxel_mm"]),
        ))
    return out


def split_studies(studies: Sequence[CachedStudy], *, val_frac: float, seed: int
                  ) -> tuple[list[CachedStudy], list[CachedStudy]]:
    """Study-level split, stratified by (site, ich), deterministic for a seed."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    strata: dict[tuple[str, bool], list[CachedStudy]] = {}
    for s in studies:
        strata.setdefault((s.label.site, s.label.ich), []).append(s)
    for key in sorted(strata):
        group = sorted(strata[key], key=lambda s: s.label.study_uid)
        order = rng.permutation(len(group))
        n_val = round(len(group) * val_frac)
        val += [group[i] for i in order[:n_val]]
        train += [group[i] for i in order[n_val:]]
    return train, val


def summarise(studies: Sequence[CachedStudy]) -> dict:
    """A JSON-able summary of a study list (stored in checkpoints and the model card)."""
    sites = sorted({s.label.site for s in studies})
    subtypes = {t: sum(t in s.label.subtypes for s in studies) for t in SUBTYPES}
    n_slices = int(sum(s.hu.shape[0] for s in studies))
    pos_slices = int(sum(s.slice_labels.sum() for s in studies))
    return {
        "studies": len(studies),
        "positive_studies": int(sum(s.label.ich for s in studies)),
        "sites": sites,
        "subtypes": subtypes,
        "slices": n_slices,
        "positive_slices": pos_slices,
    }


#: Label voxels denser than this are not trained as blood: in the phantom's masks, thin
#: extra-axial collections include voxels blurred into the skull (200–900 HU). Acute blood is
#: 40–100 HU; teaching "bone edge = blood" makes every skull edge a false positive.
BLOOD_MAX_HU = 130.0


#: HU of cortical bone; blood labels touching it get a soft target (see ``train.soft_target``).
BONE_HU = 500.0


def trainable_blood(hu: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The label map (S, S) used as the training target of a prepared slice: voxels denser than
    :data:`BLOOD_MAX_HU` become background (they are bone or calcification in the slab).

    Labels next to bone are kept; the loss gives them a soft target instead of cutting them,
    so a 1-2 px subdural rim is still learned as blood (``train.soft_target``)."""
    return np.where(hu > BLOOD_MAX_HU, 0, mask).astype(np.uint8)


class SliceSampler:
    """Batches of slices (with their neighbours) from cached studies, class-balanced by study.

    - ``pos_frac`` of a batch are slices with blood: a positive study is drawn uniformly, then
      one of its blood slices, so a large bleed spanning 20 slices counts as much as a 1 mL one;
    - the rest are blood-free slices. ``hard_frac`` of them come from the hard-negative pool
      (:meth:`set_hard`: slices where the current model sees blood, drawn in proportion to how
      much), the others from a study drawn uniformly (negative and positive studies alike),
      then a blood-free slice of it.

    Negatives therefore outnumber positives, and most carry a mimic the model currently gets
    wrong (falx, sinus, skull base, streaks) once mining has run.
    """

    def __init__(self, studies: Sequence[CachedStudy], *, pos_frac: float = 0.5,
                 hard_frac: float = 0.0) -> None:
        self.studies = list(studies)
        self.pos_frac, self.hard_frac = pos_frac, hard_frac
        pos, neg = [], []
        self.pos_by_study: list[np.ndarray] = []
        self.neg_by_study: list[np.ndarray] = []
        for i, s in enumerate(self.studies):
            lab = s.slice_labels
            p_idx, n_idx = np.flatnonzero(lab > 0), np.flatnonzero(lab == 0)
            pos += [(i, int(j)) for j in p_idx]
            neg += [(i, int(j)) for j in n_idx]
            self.pos_by_study.append(p_idx)
            self.neg_by_study.append(n_idx)
        if not neg:
            raise ValueError("no blood-free slices to sample")
        self.pos = np.asarray(pos, dtype=np.int64).reshape(-1, 2)
        self.neg = np.asarray(neg, dtype=np.int64).reshape(-1, 2)
        self._pos_studies = np.array([i for i, p in enumerate(self.pos_by_study) if p.size])
        self._neg_studies = np.array([i for i, n in enumerate(self.neg_by_study) if n.size])
        self.hard = self.neg[:0]
        self.hard_w = np.zeros(0)

    def __len__(self) -> int:
        return len(self.pos) + len(self.neg)

    def set_hard(self, slices: np.ndarray, scores: np.ndarray) -> None:
        """The hard-negative pool: (n, 2) (study, slice) blood-free slices and how strongly the
        model saw blood in each (sampling weights)."""
        self.hard = np.asarray(slices, dtype=np.int64).reshape(-1, 2)
        w = np.clip(np.asarray(scores, dtype=np.float64), 1e-6, None)
        self.hard_w = w / w.sum() if w.size else w

    def _draw_pos(self, rng: np.random.Generator, n: int) -> np.ndarray:
        studies = self._pos_studies[rng.integers(0, self._pos_studies.size, n)]
        return np.array([(i, self.pos_by_study[i][rng.integers(0, self.pos_by_study[i].size)])
                         for i in studies], dtype=np.int64).reshape(-1, 2)

    def _draw_neg(self, rng: np.random.Generator, n: int) -> np.ndarray:
        n_hard = round(n * self.hard_frac) if len(self.hard) else 0
        hard = self.hard[rng.choice(len(self.hard), n_hard, p=self.hard_w)] if n_hard else \
            self.neg[:0]
        studies = self._neg_studies[rng.integers(0, self._neg_studies.size, n - n_hard)]
        easy = np.array([(i, self.neg_by_study[i][rng.integers(0, self.neg_by_study[i].size)])
                         for i in studies], dtype=np.int64).reshape(-1, 2)
        return np.concatenate([hard, easy])

    def batch(self, rng: np.random.Generator, size: int, *, pos_frac: float | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """HU triplets (B, 3, S, S) float32, label maps (B, S, S) uint8, slice labels (B,) and
        whether each sample has a label map (B,) bool."""
        frac = self.pos_frac if pos_frac is None else pos_frac
        n_pos = round(size * frac) if len(self.pos) else 0
        picks = np.concatenate([self._draw_pos(rng, n_pos) if n_pos else self.pos[:0],
                                self._draw_neg(rng, size - n_pos)])
        return self.slices(picks, rng)

    def slices(self, picks: np.ndarray, rng: np.random.Generator | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The samples of ``batch`` for given (study, slice) pairs (``rng``: sometimes a wider
        neighbour spacing; None: always the adjacent slices)."""
        hus, masks, labels, has = [], [], [], []
        for i, j in picks:
            s = self.studies[i]
            z = s.hu.shape[0]
            step = 1 if rng is None or rng.random() < 0.8 else 2  # thicker effective spacing
            trip = np.clip([j - step, j, j + step], 0, z - 1)
            hus.append(s.hu[trip].astype(np.float32))
            if s.mask is not None:
                m = trainable_blood(s.hu[j], s.mask[j])
                masks.append(m)
                labels.append(float(m.any()))
            else:
                masks.append(np.zeros(s.hu.shape[1:], np.uint8))
                labels.append(s.slice_labels[j])
            has.append(s.mask is not None)
        return (np.stack(hus), np.stack(masks), np.asarray(labels, dtype=np.float32),
                np.asarray(has, dtype=bool))
