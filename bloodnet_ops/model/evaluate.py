"""Evaluate a checkpoint on a labelled data set: discrimination, operating point, segmentation.

Reported (``EvalReport.as_dict()``, the JSON of ``bloodnet eval``):

- study-level ROC AUC with a 95 % stratified bootstrap CI and the DeLong CI;
- sensitivity, specificity, PPV, NPV at the checkpoint's operating threshold (Wilson CIs);
- per-site AUC (bootstrap CI) where a site has both classes;
- per-subtype AUC where both classes occur;
- Dice of the blood mask (probability ≥ 0.5) against the reference on the prepared grid, per
  positive study (mean, median) and pooled over all voxels;
- blood volume error in mL against ``labels.csv`` (mean absolute, median absolute, mean signed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bloodnet_ops.model.calibration import (
    Calibration,
    ece,
    reliability_png,
    reliability_table,
    threshold_for_sensitivity,
)
from bloodnet_ops.model.checkpoint import load_checkpoint
from bloodnet_ops.model.data import CachedStudy, build_cache
from bloodnet_ops.model.infer import BLOOD_PROB, pick_device, sigmoid
from bloodnet_ops.model.metrics import (
    binary_metrics,
    bootstrap_auc_ci,
    delong_ci,
    dice,
    roc_auc,
)
from bloodnet_ops.model.net import SUBTYPES, SliceModel
from bloodnet_ops.model.train import study_scores

log = logging.getLogger(__name__)


@dataclass(slots=True)
class StudyScores:
    """Scores of a model on a list of studies (kept for ablations and ROC plots)."""

    study_uids: list[str]
    sites: list[str]
    y: np.ndarray  #: (n,) 0/1
    prob: np.ndarray  #: (n,) study ICH probability (calibrated when the model is)
    logit: np.ndarray  #: (n,) raw study logit (what a calibration is fitted on)
    subtype_prob: np.ndarray  #: (n, 5)
    subtype_y: np.ndarray  #: (n, 5)
    volume_pred: np.ndarray  #: (n,) mL
    volume_true: np.ndarray  #: (n,) mL from labels.csv
    dices: list[float] = field(default_factory=list)  #: per positive study with a mask
    pooled: tuple[int, int] = (0, 0)  #: (2·|A∩B|, |A|+|B|) over all positive studies


def score_studies(model: SliceModel, studies: list[CachedStudy], device: torch.device, *,
                  progress: bool = False, calibration: Calibration | None = None
                  ) -> StudyScores:
    logits, bloods = study_scores(model, studies, device, progress=progress)
    vol_pred, dices, inter, denom = [], [], 0, 0
    for s, b in zip(studies, bloods):
        if b is None:
            vol_pred.append(0.0)
            continue
        dz, dy, dx = s.voxel_mm
        pred = b >= BLOOD_PROB
        vol_pred.append(float(pred.sum() * dz * dy * dx / 1000.0))
        if s.mask is not None and s.label.ich:
            truth = s.mask > 0
            dices.append(dice(pred, truth))
            inter += 2 * int(np.logical_and(pred, truth).sum())
            denom += int(pred.sum()) + int(truth.sum())
    return StudyScores(
        study_uids=[s.label.study_uid for s in studies],
        sites=[s.label.site for s in studies],
        y=np.array([int(s.label.ich) for s in studies]),
        prob=(calibration or Calibration())(logits[:, 0]),
        logit=logits[:, 0].astype(np.float64),
        subtype_prob=sigmoid(logits[:, 1:]),
        subtype_y=np.stack([s.label.subtype_vector() for s in studies]),
        volume_pred=np.array(vol_pred),
        volume_true=np.array([s.label.volume_ml for s in studies]),
        dices=dices,
        pooled=(inter, denom),
    )


def _auc_block(y: np.ndarray, p: np.ndarray, *, n_boot: int, seed: int) -> dict[str, Any] | None:
    if y.sum() == 0 or y.sum() == y.size:
        return None
    ci = bootstrap_auc_ci(y, p, n_boot=n_boot, seed=seed)
    try:
        dl = delong_ci(y, p)
        dl_ci: list[float] | None = [dl.low, dl.high]
    except ValueError:  # a single case in a class: no DeLong variance
        dl_ci = None
    return {"auc": ci.estimate, "ci_low": ci.low, "ci_high": ci.high, "method": "bootstrap",
            "delong_ci": dl_ci, "n": int(y.size), "n_positive": int(y.sum())}


def report_dict(sc: StudyScores, threshold: float, *, n_boot: int = 2000, seed: int = 0
                ) -> dict[str, Any]:
    """The evaluation report for precomputed scores."""
    out: dict[str, Any] = {
        "studies": int(sc.y.size),
        "positive_studies": int(sc.y.sum()),
        "study_auc": _auc_block(sc.y, sc.prob, n_boot=n_boot, seed=seed),
        "threshold": threshold,
        "operating_point": binary_metrics(sc.y, sc.prob, threshold).as_dict(),
    }
    per_site = {}
    for site in sorted(set(sc.sites)):
        idx = np.array([s == site for s in sc.sites])
        blk = _auc_block(sc.y[idx], sc.prob[idx], n_boot=n_boot, seed=seed)
        per_site[site] = blk or {"auc": None, "n": int(idx.sum()),
                                 "n_positive": int(sc.y[idx].sum())}
    out["per_site"] = per_site
    out["calibration"] = {"ece": ece(sc.y, sc.prob), "bins": reliability_table(sc.y, sc.prob)}
    out["subtype_auc"] = {
        name: (roc_auc(sc.subtype_y[:, k], sc.subtype_prob[:, k])
               if 0 < sc.subtype_y[:, k].sum() < sc.y.size else None)
        for k, name in enumerate(SUBTYPES)
    }
    pos = sc.y == 1
    known = pos & np.isfinite(sc.volume_true)  # real data sets carry no volumes
    err = sc.volume_pred[known] - sc.volume_true[known]
    out["segmentation"] = {
        "dice_mean": float(np.mean(sc.dices)) if sc.dices else None,
        "dice_median": float(np.median(sc.dices)) if sc.dices else None,
        "dice_pooled": (sc.pooled[0] / sc.pooled[1]) if sc.pooled[1] else None,
        "studies_with_mask": len(sc.dices),
    }
    out["volume_ml"] = {
        "mae": float(np.mean(np.abs(err))) if err.size else None,
        "median_abs_error": float(np.median(np.abs(err))) if err.size else None,
        "mean_error": float(np.mean(err)) if err.size else None,
        "true_mean": float(np.mean(sc.volume_true[known])) if err.size else None,
        "negatives_mean_pred": float(np.mean(sc.volume_pred[~pos])) if (~pos).any() else None,
    }
    return out


def evaluate(data_dir: Path, model_path: Path, *, device: str | None = None,
             cache_root: Path | None = None, n_boot: int = 2000, progress: bool = True,
             target_sensitivity: float | None = None, reliability: Path | None = None
             ) -> dict[str, Any]:
    """Load a checkpoint, score every labelled study of ``data_dir`` and build the report.

    ``target_sensitivity``: also the threshold that reaches it on these studies, and the
    specificity that comes with it (``at_target``). ``reliability``: write the reliability
    diagram there (PNG)."""
    loaded = load_checkpoint(model_path)
    size = int(loaded.meta["size"])
    studies = build_cache(Path(data_dir), cache_root, size=size, progress=progress)
    if not studies:
        raise ValueError(f"no labelled studies could be loaded from {data_dir}")
    dev = pick_device(device)
    sc = score_studies(loaded.model, studies, dev, progress=progress,
                       calibration=Calibration.from_dict(loaded.meta.get("calibration")))
    rep = report_dict(sc, float(loaded.meta["threshold"]), n_boot=n_boot)
    if target_sensitivity is not None:
        t = threshold_for_sensitivity(sc.y, sc.prob, target_sensitivity)
        rep["at_target"] = {"target_sensitivity": target_sensitivity, "threshold": t,
                            **binary_metrics(sc.y, sc.prob, t).as_dict()}
    if reliability is not None:
        reliability_png(sc.y, sc.prob, reliability, title=loaded.model_version)
        rep["calibration"]["reliability_png"] = str(reliability)
    rep["model_version"] = loaded.model_version
    rep["weights_sha256"] = loaded.weights_sha256
    rep["data"] = str(Path(data_dir).resolve())
    return rep
