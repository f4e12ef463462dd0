"""The model card's tables from the JSON reports that ``scripts/select_model.sh`` writes.

Usage: ``python bench/model_card_table.py reports/model`` (prints Markdown)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROLES = {"rep-256": "report (radiology_phantom, 256²)", "rep-512": "report (radiology_phantom, 512²)",
         "sel-256": "selection (holdout_phantom, 256²)", "sel-512": "selection (holdout_phantom, 512²)",
         "own-test": "own generator test (synth seed 97)",
         "rep-256-previous": "report 256², previous weights (v3)",
         "rep-512-previous": "report 512², previous weights (v3)"}


def _auc(b: dict) -> str:
    if b.get("auc") is None:
        return "–"
    return f"{b['auc']:.3f} [{b['ci_low']:.3f}–{b['ci_high']:.3f}]"


def _rate(r: dict) -> str:
    return "–" if r.get("rate") is None else f"{r['rate']:.2f} [{r['ci_low']:.2f}–{r['ci_high']:.2f}]"


def main(folder: Path) -> None:
    reps = {k: json.loads((folder / f"{k}.json").read_text()) for k in ROLES
            if (folder / f"{k}.json").exists()}
    print("| set (role) | studies (ICH) | AUC [95% CI] | sensitivity | specificity | "
          "median abs. volume error, flagged / all positives (mL) | negatives' median volume |")
    print("|---|---|---|---|---|---|---|")
    for k, r in reps.items():
        v = r.get("volume", {}).get("median_abs_error_ml", "–")
        va = r.get("volume_all_positives", {}).get("median_abs_error_ml", "–")
        vn = r.get("volume_negatives", {}).get("median_ml", "–")
        f = r["at_flag"]
        print(f"| {ROLES[k]} | {r['n_studies']} ({r['n_pos']}) | {_auc(r['auc'])} | "
              f"{_rate(f['sensitivity'])} | {_rate(f['specificity'])} | {v} / {va} | {vn} |")
    for title, key in (("subtype", "by_subtype"), ("true volume", "by_size"),
                       ("site", "by_site")):
        names = sorted({n for r in reps.values() for n in r[key]},
                       key=lambda n: list(next(iter(reps.values()))[key]).index(n)
                       if n in next(iter(reps.values()))[key] else 99)
        print(f"\nAUC by {title} (positives of the group against all negatives of the set"
              f"{'; AUC within the site' if key == 'by_site' else ''}):\n")
        print("| " + title + " | " + " | ".join(k for k in reps) + " |")
        print("|---|" + "---|" * len(reps))
        for n in names:
            print(f"| {n} | " + " | ".join(_auc(r[key][n]) if n in r[key] else "–"
                                           for r in reps.values()) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "reports/model"))
