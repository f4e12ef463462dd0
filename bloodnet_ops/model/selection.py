"""Model selection on an outside generator: the probability calibration and the stored threshold.

Training uses ``bloodnet synth`` only. The calibration map and the threshold are fitted on a
*selection* set from another generator, and figures are reported on a third one that played no
part in any choice (the model card says which set played which role). A set used to choose is
never a set reported on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bloodnet_ops.model.calibration import Calibration, ece, fit, threshold_for_sensitivity
from bloodnet_ops.model.checkpoint import load_checkpoint, update_checkpoint
from bloodnet_ops.model.data import build_cache
from bloodnet_ops.model.evaluate import score_studies
from bloodnet_ops.model.infer import pick_device
from bloodnet_ops.model.metrics import binary_metrics, roc_auc


def calibrate_checkpoint(model_path: Path, data_dirs: Path | list[Path], out: Path, *,
                         method: str = "platt",
                         target_sensitivity: float = 0.95, device: str | None = None,
                         cache_root: Path | None = None, name: str = "",
                         progress: bool = True) -> dict[str, Any]:
    """Score the selection folders with the raw model, fit ``method``, set the threshold that
    reaches ``target_sensitivity`` there, and write the calibrated checkpoint to ``out``."""
    loaded = load_checkpoint(model_path)
    dirs = [Path(d) for d in (data_dirs if isinstance(data_dirs, list) else [data_dirs])]
    studies = [s for d in dirs for s in build_cache(d, cache_root, size=int(loaded.meta["size"]),
                                                    progress=progress)]
    if not studies:
        raise ValueError(f"no labelled studies could be loaded from {', '.join(map(str, dirs))}")
    sc = score_studies(loaded.model, studies, pick_device(device), progress=progress)
    raw = Calibration()(sc.logit)
    cal = fit(sc.logit, sc.y, method=method, fitted_on=name)
    prob = cal(sc.logit)
    threshold = threshold_for_sensitivity(sc.y, prob, target_sensitivity)
    op = binary_metrics(sc.y, prob, threshold)
    report = {
        "set": name,
        "folders": [d.name for d in dirs],
        "studies": int(sc.y.size),
        "positive_studies": int(sc.y.sum()),
        "method": method,
        "auc": roc_auc(sc.y, prob),
        "ece_before": ece(sc.y, raw),
        "ece_after": ece(sc.y, prob),
        "target_sensitivity": target_sensitivity,
        "threshold": threshold,
        "sensitivity": op.sensitivity.estimate,
        "specificity": op.specificity.estimate,
        "previous_threshold": float(loaded.meta["threshold"]),
    }
    sha = update_checkpoint(model_path, out, threshold=threshold,
                            calibration=cal.as_dict(), selection=report)
    report["weights_sha256"] = sha
    return report
