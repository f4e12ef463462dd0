"""Generalisation benchmark: the model on an independent hold-out phantom, scored like the outside
check.

The outside check runs ``bloodnet predict SOURCE --json`` on a hidden synthetic set from another
generator (other vendor conventions, other hemorrhage shapes) and wants study-level AUC >= 0.95.
This script is its honest proxy: it writes a hold-out set with ``bench/holdout_phantom.py`` (which
shares no code or choices with ``bloodnet_ops.synth``), runs ``bloodnet predict DIR --json`` as a
subprocess, joins the JSON on ``study_uid`` with ``labels.csv`` and reports:

- study-level AUC with a stratified bootstrap 95% CI (and DeLong's), over all labelled studies;
  a study that predict rejected or did not report is scored 0 (a check cannot credit it);
- sensitivity / specificity (Wilson CIs) at the model's own flag (``positive``);
- AUC and sensitivity per subtype and per true-volume bin (positives of the group against all
  negatives), AUC per site, specificity per mimic among negatives, volume agreement, and the worst
  misses and false alarms.

The peer measured in the same run is the model's own operating point (flag) and the subgroup
AUCs against the overall one; run it with ``--model`` on two checkpoints to compare them.

Usage::

    .venv/bin/python bench/bench_generalisation.py [--studies 100] [--seed 7]
        [--model models/bloodnet.pt] [--out bench/out/generalisation.json]
        [--data DIR] [--matrix 512] [--workers 1] [--device cpu] [--keep]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))

import holdout_phantom

from bloodnet_ops.model.metrics import binary_metrics, bootstrap_auc_ci, delong_ci, wilson_ci

SUBTYPES = holdout_phantom.SUBTYPES
SIZE_BINS = (("<1 mL", 0.0, 1.0), ("1-5 mL", 1.0, 5.0), ("5-20 mL", 5.0, 20.0),
             (">20 mL", 20.0, math.inf))


def bloodnet_exe() -> str:
    """The ``bloodnet`` console script of this environment (as an outside check calls it)."""
    here = Path(sys.executable).with_name("bloodnet")
    exe = str(here) if here.exists() else shutil.which("bloodnet")
    if not exe:
        raise SystemExit("bloodnet is not installed in this environment (pip install -e .)")
    return exe


def run_predict(data: Path, model: Path | None, device: str | None, code: Path | None = None
                ) -> tuple[list[dict], float]:
    """``bloodnet predict DATA --json`` in a subprocess; ``code``: a checkout whose
    ``bloodnet_ops`` goes first on PYTHONPATH (the console script's path puts it ahead of the
    editable install), e.g. ``git archive HEAD`` when the working tree's net no longer matches
    the shipped checkpoint."""
    cmd = [bloodnet_exe(), "predict", str(data), "--json"]
    if model is not None:
        cmd += ["--model", str(model)]
    if device:
        cmd += ["--device", device]
    print("$ " + " ".join(cmd), file=sys.stderr)
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            [str(code.resolve()), *filter(None, [env.get("PYTHONPATH")])])
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env,
                          cwd=tempfile.gettempdir())  # not the repo root: '' would shadow code
    dt = time.perf_counter() - t
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"bloodnet predict failed with exit status {proc.returncode}")
    docs = json.loads(proc.stdout)  # the contract: exactly one JSON array on stdout
    if not isinstance(docs, list):
        raise SystemExit("bloodnet predict --json did not print a JSON array")
    return docs, dt


def hu_threshold_scores(data: Path) -> dict[str, float]:
    """The peer with no learning: mL of voxels at 55-90 HU inside the skull after a 3×3 median
    filter (what "denser than brain" alone scores). Inside the skull = the filled bone outline
    (> 300 HU) less 3 px next to bone, slice by slice."""
    from scipy import ndimage

    from bloodnet_ops.pipeline import validate_source
    from bloodnet_ops.reasons import Verdict
    from bloodnet_ops.storage import LocalSource
    from bloodnet_ops.volumes import load_study_volume

    src = LocalSource(data)
    out: dict[str, float] = {}
    for study in validate_source(src, hu_check=False).studies:
        if study.verdict == Verdict.REJECT or not study.series_uid:
            continue
        vol = load_study_volume(src, study)
        hu = np.asarray(vol.hu, dtype=np.float32)
        n = 0
        for k in range(hu.shape[0]):
            bone = hu[k] > 300
            inside = ndimage.binary_fill_holes(bone) & ~ndimage.binary_dilation(bone, iterations=3)
            med = ndimage.median_filter(hu[k], size=3)
            n += int(np.count_nonzero(inside & (med >= 55) & (med <= 90)))
        out[study.study_uid] = n * float(np.prod(vol.spacing)) / 1000.0
    return out


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _auc_block(y: np.ndarray, s: np.ndarray, *, seed: int, n_boot: int) -> dict:
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    out: dict = {"n_pos": n_pos, "n_neg": n_neg}
    if n_pos == 0 or n_neg == 0:
        out.update(auc=None, ci_low=None, ci_high=None)
        return out
    ci = bootstrap_auc_ci(y, s, n_boot=n_boot, seed=seed)
    out.update(auc=round(ci.estimate, 4), ci_low=round(ci.low, 4), ci_high=round(ci.high, 4))
    return out


def _rate(k: int, n: int) -> dict:
    ci = wilson_ci(k, n)
    est = None if n == 0 else round(ci.estimate, 4)
    return {"k": k, "n": n, "rate": est, "ci_low": round(ci.low, 4), "ci_high": round(ci.high, 4)}


def evaluate(labels: list[dict[str, str]], extras: dict[str, dict[str, str]], docs: list[dict],
             *, seed: int = 0, n_boot: int = 2000) -> dict:
    by_uid = {d["study_uid"]: d for d in docs if d.get("study_uid")}
    rows = []
    for lab in labels:
        d = by_uid.get(lab["study_uid"])
        prob = None if d is None else d.get("probability")
        rows.append({
            "study_uid": lab["study_uid"],
            "site": lab["site"],
            "y": int(lab["ich"]),
            "subtypes": [s for s in lab["subtypes"].split(";") if s],
            "volume_ml": float(lab["volume_ml"] or 0.0),
            "verdict": None if d is None else d.get("verdict"),
            "reasons": [] if d is None else d.get("reasons", []),
            "scored": prob is not None,
            "score": float(prob) if prob is not None else 0.0,
            "flag": bool(d.get("positive")) if d is not None and prob is not None else False,
            "pred_volume_ml": None if d is None else d.get("volume_ml"),
            "mimics": [m for m in extras.get(lab["study_uid"], {}).get("mimics", "").split(";")
                       if m],
        })
    y = np.array([r["y"] for r in rows])
    s = np.array([r["score"] for r in rows])
    flag = np.array([r["flag"] for r in rows], float)
    scored = np.array([r["scored"] for r in rows])
    neg = y == 0
    res: dict = {"n_studies": len(rows), "n_pos": int(y.sum()), "n_neg": int(neg.sum()),
                 "n_scored": int(scored.sum()),
                 "unscored": [{"study_uid": r["study_uid"], "site": r["site"],
                               "verdict": r["verdict"], "reasons": r["reasons"]}
                              for r in rows if not r["scored"]]}
    res["auc"] = _auc_block(y, s, seed=seed, n_boot=n_boot)
    if y.sum() >= 2 and neg.sum() >= 2:
        dl = delong_ci(y, s)
        res["auc"]["delong_low"], res["auc"]["delong_high"] = round(dl.low, 4), round(dl.high, 4)
    if scored.sum() < len(rows):
        res["auc_scored_only"] = _auc_block(y[scored], s[scored], seed=seed, n_boot=n_boot)
    bm = binary_metrics(y, flag, 0.5)
    res["at_flag"] = {"tp": bm.tp, "fp": bm.fp, "tn": bm.tn, "fn": bm.fn,
                      "sensitivity": _rate(bm.tp, bm.tp + bm.fn),
                      "specificity": _rate(bm.tn, bm.tn + bm.fp)}

    def group(sel: np.ndarray) -> dict:
        """Positives in ``sel`` against all negatives."""
        keep = sel | neg
        out = _auc_block(y[keep], s[keep], seed=seed, n_boot=n_boot)
        pos = sel & (y == 1)
        out["sensitivity_at_flag"] = _rate(int(flag[pos].sum()), int(pos.sum()))
        return out

    res["by_subtype"] = {st: group(np.array([st in r["subtypes"] for r in rows]))
                         for st in SUBTYPES}
    vol = np.array([r["volume_ml"] for r in rows])
    res["by_size"] = {name: group((vol >= lo) & (vol < hi) & (y == 1))
                      for name, lo, hi in SIZE_BINS}
    sites = sorted({r["site"] for r in rows})
    res["by_site"] = {}
    for site in sites:
        sel = np.array([r["site"] == site for r in rows])
        blk = _auc_block(y[sel], s[sel], seed=seed, n_boot=n_boot)
        f = flag[sel]
        blk["sensitivity_at_flag"] = _rate(int(f[y[sel] == 1].sum()), int((y[sel] == 1).sum()))
        blk["specificity_at_flag"] = _rate(int((f[y[sel] == 0] == 0).sum()),
                                           int((y[sel] == 0).sum()))
        res["by_site"][site] = blk
    # specificity among negatives that carry each mimic
    mimic_names = sorted({m for r in rows for m in r["mimics"]})
    res["by_mimic"] = {}
    for m in [*mimic_names, "(none)"]:
        sel = np.array([(m in r["mimics"]) if m != "(none)" else not r["mimics"] for r in rows])
        sel &= neg
        res["by_mimic"][m] = {"specificity_at_flag": _rate(int((flag[sel] == 0).sum()),
                                                           int(sel.sum())),
                              "mean_score": round(float(s[sel].mean()), 4) if sel.any()
                              else None}
    tp = [(r["volume_ml"], r["pred_volume_ml"]) for r in rows
          if r["y"] == 1 and r["flag"] and r["pred_volume_ml"] is not None]
    if len(tp) >= 3:
        t, p = np.array(tp, float).T
        rho = float(stats.spearmanr(t, p)[0]) if np.ptp(t) > 0 and np.ptp(p) > 0 else math.nan
        res["volume"] = {"n": len(tp), "spearman": None if math.isnan(rho) else round(rho, 3),
                         "median_abs_error_ml": round(float(np.median(np.abs(p - t))), 2),
                         "median_ratio_pred_true": round(float(np.median(p / t)), 3)}
    order = np.argsort(s)
    allpos = [(r["volume_ml"], r["pred_volume_ml"]) for r in rows
              if r["y"] == 1 and r["pred_volume_ml"] is not None]
    if len(allpos) >= 3:
        t, p = np.array(allpos, float).T
        res["volume_all_positives"] = {"n": len(allpos),
                                       "median_abs_error_ml": round(float(np.median(
                                           np.abs(p - t))), 2)}
    negvol = [r["pred_volume_ml"] for r in rows if r["y"] == 0 and r["pred_volume_ml"] is not None]
    if negvol:
        res["volume_negatives"] = {"n": len(negvol),
                                   "median_ml": round(float(np.median(negvol)), 2),
                                   "p90_ml": round(float(np.quantile(negvol, 0.9)), 2)}
    res["worst_misses"] = [_brief(rows[i]) for i in order if rows[i]["y"] == 1][:6]
    res["worst_false_alarms"] = [_brief(rows[i]) for i in order[::-1] if rows[i]["y"] == 0][:6]
    return res


def _brief(r: dict) -> dict:
    return {"study_uid": r["study_uid"], "site": r["site"], "score": round(r["score"], 4),
            "subtypes": ";".join(r["subtypes"]), "volume_ml": r["volume_ml"],
            "pred_volume_ml": r["pred_volume_ml"], "mimics": ";".join(r["mimics"])}


def _fmt_auc(b: dict) -> str:
    if b.get("auc") is None:
        return f"   –    (pos {b['n_pos']:3d}, neg {b['n_neg']:3d})"
    return (f"{b['auc']:.3f} [{b['ci_low']:.3f}–{b['ci_high']:.3f}]  "
            f"(pos {b['n_pos']:3d}, neg {b['n_neg']:3d})")


def _fmt_rate(r: dict) -> str:
    if r["rate"] is None:
        return "–"
    return f"{r['rate']:.2f} [{r['ci_low']:.2f}–{r['ci_high']:.2f}] {r['k']}/{r['n']}"


def print_report(res: dict) -> None:
    p = print
    p(f"\nstudies {res['n_studies']} ({res['n_pos']} ICH, {res['n_neg']} none), "
      f"scored {res['n_scored']}")
    a = res["auc"]
    p(f"AUC (bootstrap 95% CI)   {_fmt_auc(a)}   DeLong "
      f"[{a.get('delong_low', float('nan')):.3f}–{a.get('delong_high', float('nan')):.3f}]")
    if "auc_scored_only" in res:
        p(f"AUC, scored studies only {_fmt_auc(res['auc_scored_only'])}")
    f = res["at_flag"]
    p(f"at the model's flag      sensitivity {_fmt_rate(f['sensitivity'])}   "
      f"specificity {_fmt_rate(f['specificity'])}")
    p("\nby subtype (positives with it vs all negatives)      sensitivity at flag")
    for k, b in res["by_subtype"].items():
        p(f"  {k:8s} {_fmt_auc(b)}   {_fmt_rate(b['sensitivity_at_flag'])}")
    p("by true volume")
    for k, b in res["by_size"].items():
        p(f"  {k:8s} {_fmt_auc(b)}   {_fmt_rate(b['sensitivity_at_flag'])}")
    p("by site                                              sens / spec at flag")
    for k, b in res["by_site"].items():
        p(f"  {k:14s} {_fmt_auc(b)}   {_fmt_rate(b['sensitivity_at_flag'])} / "
          f"{_fmt_rate(b['specificity_at_flag'])}")
    p("negatives by mimic: specificity at flag, mean score")
    for k, b in res["by_mimic"].items():
        p(f"  {k:15s} {_fmt_rate(b['specificity_at_flag']):28s} {b['mean_score']}")
    if "volume" in res:
        v = res["volume"]
        p(f"volume (true positives): Spearman {v['spearman']}, median |error| "
          f"{v['median_abs_error_ml']} mL, median pred/true {v['median_ratio_pred_true']}")
    if res["unscored"]:
        p(f"unscored (rejected or missing): {len(res['unscored'])}: "
          + ", ".join(f"{u['site']}:{','.join(u['reasons']) or u['verdict'] or 'missing'}"
                      for u in res["unscored"][:8]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--studies", type=int, default=100)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--model", type=Path, default=None,
                    help="checkpoint passed to predict (default: predict's shipped model)")
    ap.add_argument("--out", type=Path, default=Path("bench/out/generalisation.json"),
                    help="report JSON (default under bench/out/, never over a tracked report)")
    ap.add_argument("--data", type=Path, default=None,
                    help="use this hold-out folder (generated into it when it has no labels.csv)")
    ap.add_argument("--matrix", type=int, default=512)
    ap.add_argument("--sites", type=int, default=4)
    ap.add_argument("--positive-rate", type=float, default=0.5)
    ap.add_argument("--workers", type=int, default=1, help="generator processes")
    ap.add_argument("--device", default=None, help="passed to predict (cpu or cuda)")
    ap.add_argument("--code", type=Path, default=None,
                    help="run predict with the bloodnet_ops of this checkout (PYTHONPATH)")
    ap.add_argument("--keep", action="store_true", help="keep the generated temp folder")
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--baseline", action="store_true",
                    help="also score the HU-threshold peer (55-90 HU in the skull) on the studies")
    ap.add_argument("--generator", default=None,
                    help="name of the generator that wrote --data (for the report)")
    a = ap.parse_args(argv)

    tmp = None
    if a.data is None:
        tmp = Path(tempfile.mkdtemp(prefix="bloodnet-holdout-"))
        data = tmp / "data"
    else:
        data = a.data
    timing: dict[str, float] = {}
    try:
        if not (data / "labels.csv").exists():
            t = time.perf_counter()
            holdout_phantom.generate(data, studies=a.studies, seed=a.seed, matrix=a.matrix,
                                     sites=a.sites, positive_rate=a.positive_rate,
                                     workers=a.workers)
            timing["generate_s"] = round(time.perf_counter() - t, 1)
            print(f"generated {a.studies} studies in {timing['generate_s']} s -> {data}",
                  file=sys.stderr)
        labels = read_csv(data / "labels.csv")
        extras = ({r["study_uid"]: r for r in read_csv(data / "extras.csv")}
                  if (data / "extras.csv").exists() else {})
        docs, dt = run_predict(data.resolve(), a.model.resolve() if a.model else None,
                               a.device, a.code)
        timing["predict_s"] = round(dt, 1)
        res = evaluate(labels, extras, docs, seed=a.seed, n_boot=a.n_boot)
        if a.baseline:
            t = time.perf_counter()
            base = hu_threshold_scores(data)
            timing["baseline_s"] = round(time.perf_counter() - t, 1)
            y = np.array([int(r["ich"]) for r in labels])
            sb = np.array([base.get(r["study_uid"], 0.0) for r in labels])
            res["peer_hu_threshold"] = _auc_block(y, sb, seed=a.seed, n_boot=a.n_boot)
            if res["auc"].get("auc") is not None and res["peer_hu_threshold"].get("auc"):
                res["peer_hu_threshold"]["model_minus_peer"] = round(
                    res["auc"]["auc"] - res["peer_hu_threshold"]["auc"], 4)
    finally:
        if tmp is not None and not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp is not None:
            print(f"kept {data}", file=sys.stderr)
    res = {"config": {"studies": len(labels), "seed": a.seed, "matrix": a.matrix,
                      "sites": a.sites, "positive_rate": a.positive_rate,
                      "model": str(a.model) if a.model else "(predict default)",
                      "code": str(a.code) if a.code else "(installed bloodnet_ops)",
                      "data": str(a.data) if a.data else "(temporary)",
                      "generator": a.generator or ("bench/holdout_phantom.py" if not a.data
                                                   else "(see --data)")},
           "timing": timing, **res}
    print_report(res)
    if "peer_hu_threshold" in res:
        print(f"peer, HU threshold 55-90 in the skull: AUC {_fmt_auc(res['peer_hu_threshold'])}")
    print(f"\npredict {timing['predict_s']} s for {len(labels)} studies"
          + (f"; generation {timing['generate_s']} s" if "generate_s" in timing else ""))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=2, allow_nan=False) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
