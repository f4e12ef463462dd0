"""The ablation the paper lacked: four variants, the same data, budget, seeds and test studies.

``run_ablation`` splits the labelled studies once (stratified by site and ICH) into train,
validation (operating threshold) and held-out test; trains every variant with the identical
:class:`~bloodnet_ops.model.train.TrainConfig` apart from its name; scores the same test studies;
and writes ``ablation.json``, ``ablation.md`` and ``roc.png`` to the report folder. Each variant's
AUC gets a 95 % stratified-bootstrap CI and the DeLong CI; DeLong's test for correlated AUCs
compares each variant with ``bloodnet`` on the same studies.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from bloodnet_ops.model.data import CachedStudy, build_cache, split_studies, summarise
from bloodnet_ops.model.evaluate import StudyScores, report_dict, score_studies
from bloodnet_ops.model.infer import pick_device
from bloodnet_ops.model.metrics import delong_test, roc_auc, roc_curve
from bloodnet_ops.model.net import count_parameters, list_models
from bloodnet_ops.model.train import TrainConfig, fit

log = logging.getLogger(__name__)

REFERENCE = "bloodnet"


def three_way_split(studies: list[CachedStudy], *, test_frac: float, val_frac: float, seed: int
                    ) -> tuple[list[CachedStudy], list[CachedStudy], list[CachedStudy]]:
    rest, test = split_studies(studies, val_frac=test_frac, seed=seed)
    train, val = split_studies(rest, val_frac=val_frac / max(1e-9, 1 - test_frac), seed=seed + 1)
    return train, val, test


def _row(name: str, rep: dict[str, Any], ref: StudyScores | None, sc: StudyScores,
         params: int, seconds: float) -> dict[str, Any]:
    auc = rep["study_auc"] or {}
    op = rep["operating_point"]
    row = {
        "variant": name,
        "auc": auc.get("auc"),
        "auc_ci": [auc.get("ci_low"), auc.get("ci_high")],
        "auc_delong_ci": auc.get("delong_ci"),
        "sensitivity": op["sensitivity"]["estimate"],
        "specificity": op["specificity"]["estimate"],
        "threshold": op["threshold"],
        "dice_mean": rep["segmentation"]["dice_mean"],
        "volume_mae_ml": rep["volume_ml"]["mae"],
        "parameters": params,
        "train_seconds": round(seconds, 1),
        "delong_vs_bloodnet": None,
    }
    if ref is not None and name != REFERENCE:
        row["delong_vs_bloodnet"] = delong_test(sc.y, ref.prob, sc.prob).as_dict()
    return row


def run_ablation(data_dir: Path, out_dir: Path, *, base: TrainConfig,
                 variants: list[str] | None = None, test_frac: float = 0.3,
                 val_frac: float = 0.15, n_boot: int = 2000, cache_root: Path | None = None,
                 test_dir: Path | None = None, stack_dir: Path | None = None) -> dict[str, Any]:
    """Train and compare the variants; returns the JSON document it writes."""
    variants = variants or list_models()
    if REFERENCE in variants:  # the reference first, so the others can be tested against it
        variants = [REFERENCE] + [v for v in variants if v != REFERENCE]
    studies = build_cache(Path(data_dir), cache_root, size=base.size, progress=base.progress)
    if test_dir is not None:
        train, val = split_studies(studies, val_frac=val_frac, seed=base.seed)
        test = build_cache(Path(test_dir), cache_root, size=base.size, progress=base.progress)
    else:
        train, val, test = three_way_split(studies, test_frac=test_frac, val_frac=val_frac,
                                           seed=base.seed)
    stack = (build_cache(Path(stack_dir), cache_root, size=base.size, progress=base.progress)
             if stack_dir is not None else None)
    device = pick_device(base.device)
    rows, scores = [], {}
    for name in variants:
        cfg = replace(base, variant=name)
        log.info("ablation: training %s", name)
        res = fit(train, val, cfg, stack=stack)
        sc = score_studies(res.model, test, device)
        scores[name] = sc
        rep = report_dict(sc, res.threshold, n_boot=n_boot, seed=base.seed)
        rows.append(_row(name, rep, scores.get(REFERENCE), sc, count_parameters(res.model),
                         res.seconds))
    doc = {
        "claim": "classification that depends on segmentation (bloodnet) beats the alternatives",
        "data": {"train": summarise(train), "val": summarise(val), "test": summarise(test),
                 "study_head": summarise(stack) if stack else None},
        "train_config": base.as_dict(),
        "bootstrap_replicates": n_boot,
        "results": rows,
        "test_study_uids": scores[variants[0]].study_uids,
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "ablation.json").write_text(json.dumps(doc, indent=2, default=float))
    (out_dir / "ablation.md").write_text(markdown(doc))
    plot_roc(scores, out_dir / "roc.png")
    return doc


def run_ablation_seeds(data_dir: Path, out_dir: Path, *, base: TrainConfig, seeds: list[int],
                       **kwargs: Any) -> dict[str, Any]:
    """:func:`run_ablation` once per seed (each seed its own split, initialisation and batch
    order) into ``out_dir/seed-N``; the summary (mean ± sd of the AUC per variant, DeLong per
    seed) goes to ``out_dir/ablation.json`` and ``ablation.md``."""
    import numpy as np

    out_dir = Path(out_dir)
    per_seed = []
    for seed in seeds:
        doc = run_ablation(data_dir, out_dir / f"seed-{seed}", base=replace(base, seed=seed),
                           **kwargs)
        per_seed.append((seed, doc))
    names = [r["variant"] for r in per_seed[0][1]["results"]]
    summary = []
    for name in names:
        rows = [next(r for r in doc["results"] if r["variant"] == name) for _, doc in per_seed]
        aucs = np.array([r["auc"] for r in rows], dtype=float)
        summary.append({
            "variant": name,
            "auc_mean": float(aucs.mean()),
            "auc_sd": float(aucs.std(ddof=1)) if aucs.size > 1 else 0.0,
            "auc_per_seed": aucs.tolist(),
            "delong_p_per_seed": [None if r["delong_vs_bloodnet"] is None
                                  else r["delong_vs_bloodnet"]["p_value"] for r in rows],
            "delta_per_seed": [None if r["delong_vs_bloodnet"] is None
                               else -r["delong_vs_bloodnet"]["difference"] for r in rows],
            "dice_mean": float(np.mean([r["dice_mean"] or 0.0 for r in rows])),
        })
    first = per_seed[0][1]
    doc = {"claim": first["claim"], "seeds": seeds, "train_config": first["train_config"],
           "data": first["data"], "summary": summary,
           "per_seed": {str(seed): d["results"] for seed, d in per_seed}}
    (out_dir / "ablation.json").write_text(json.dumps(doc, indent=2, default=float))
    (out_dir / "ablation.md").write_text(markdown_seeds(doc))
    return doc


def markdown_seeds(doc: dict[str, Any]) -> str:
    """The multi-seed table: mean ± sd of the AUC, ΔAUC and DeLong p for each seed."""
    d = doc["data"]
    cfg = doc["train_config"]
    lines = [
        "# BloodNet ablation over seeds: does classification that depends on segmentation help?",
        "",
        (f"{len(doc['seeds'])} seeds ({', '.join(map(str, doc['seeds']))}); each seed draws its "
         f"own train/validation split and initialisation, and every variant of a seed had the "
         f"same data, steps, batch, augmentation and hard-negative mining "
         f"(epochs {cfg['epochs']} × {cfg['steps_per_epoch']} steps, batch {cfg['batch_size']}, "
         f"{cfg['size']}²). Test set (seed {doc['seeds'][0]}): {d['test']['studies']} studies "
         f"({d['test']['positive_studies']} with ICH)."),
        "",
        "| variant | AUC mean ± sd | AUC per seed | ΔAUC vs bloodnet per seed | DeLong p per seed |",
        "|---|---|---|---|---|",
    ]
    for r in doc["summary"]:
        per = ", ".join(f"{a:.3f}" for a in r["auc_per_seed"])
        if r["variant"] == REFERENCE:
            delta, ps = "–", "(reference)"
        else:
            delta = ", ".join(f"{x:+.3f}" for x in r["delta_per_seed"])
            ps = ", ".join(_p(x) for x in r["delong_p_per_seed"])
        lines.append(f"| `{r['variant']}` | {r['auc_mean']:.3f} ± {r['auc_sd']:.3f} | {per} | "
                     f"{delta} | {ps} |")
    lines += ["", "Per-seed reports, with CIs and ROC curves: `seed-N/ablation.md`.", "",
              ("Data are synthetic (the project's phantom generator); the figures say nothing "
               "about clinical performance."), ""]
    return "\n".join(lines)


def _fmt(x: float | None, nd: int = 3) -> str:
    return "–" if x is None else f"{x:.{nd}f}"


def _p(x: float) -> str:
    return "<0.001" if x < 1e-3 else f"{x:.3f}"


def markdown(doc: dict[str, Any]) -> str:
    """The report table (also quoted in the README and the closing note)."""
    d = doc["data"]
    lines = [
        "# BloodNet ablation: does classification that depends on segmentation help?",
        "",
        (f"Held-out test studies: {d['test']['studies']} ({d['test']['positive_studies']} with "
        f"ICH) from sites {', '.join(d['test']['sites'])}; trained on {d['train']['studies']} "
        f"studies, operating threshold from {d['val']['studies']} validation studies. Every "
        "variant had the same data, steps, batch size, augmentation and seed "
        f"(`{json.dumps({k: doc['train_config'][k] for k in ('epochs', 'steps_per_epoch', 'batch_size', 'size', 'seed')})}`)."),
        "",
        *([(f"Study heads (stage 2) were fitted on {d['study_head']['studies']} further studies "
           "that no slice model saw."), ""] if d.get("study_head") else []),
        ("| variant | AUC | 95% CI (bootstrap) | 95% CI (DeLong) | ΔAUC vs bloodnet | DeLong p |"
        " sens | spec | Dice | params |"),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["results"]:
        dl = r["delong_vs_bloodnet"]
        delta = "–" if dl is None else f"{-dl['difference']:+.3f}"
        p = "(reference)" if dl is None else _p(dl["p_value"])
        ci = r["auc_ci"]
        dci = r["auc_delong_ci"] or [None, None]
        lines.append(
            f"| `{r['variant']}` | {_fmt(r['auc'])} | {_fmt(ci[0])}–{_fmt(ci[1])} | "
            f"{_fmt(dci[0])}–{_fmt(dci[1])} | {delta} | {p} | {_fmt(r['sensitivity'], 2)} | "
            f"{_fmt(r['specificity'], 2)} | {_fmt(r['dice_mean'], 2)} | {r['parameters']:,} |"
        )
    lines += [
        "",
        ("ΔAUC = variant − bloodnet; DeLong's test for two correlated AUCs on the same test "
        "studies (two-sided). Sensitivity/specificity at each variant's own validation "
        "threshold (max Youden). Dice = mean per positive test study, blood probability ≥ 0.5, "
        "on the prepared 5 mm grid."),
        "",
        ("Data are synthetic (the project's phantom generator); the figures say nothing about "
        "clinical performance."),
        "",
        "![ROC curves](roc.png)",
        "",
    ]
    return "\n".join(lines)


def plot_roc(scores: dict[str, StudyScores], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 5))
    for name, sc in scores.items():
        if 0 < sc.y.sum() < sc.y.size:
            fpr, tpr, _ = roc_curve(sc.y, sc.prob)
            ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc(sc.y, sc.prob):.3f})", lw=1.6)
    ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--")
    ax.set_xlabel("1 − specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title("Study-level ROC, held-out synthetic test studies")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

