"""The training recipe of ``scripts/train_cpu.sh`` with a GPU's budget, in one process.

Data are rendered in memory by every core (:mod:`.synthdata`; no DICOM round trip, which a
lent machine has no time for), then stage 1 trains for a wall-clock budget with the same
sampler, hard-negative mining, soft targets and augmentation, and the study head is fitted on
studies the slice model never saw. The architecture and input size stay those of the shipped
model, so CPU inference keeps its speed. Selection (calibration, threshold) happens afterwards
on the CPU, on the outside generator (``scripts/select_model.sh``).

    python -m bloodnet_ops.model.gpu_recipe --out OUT.pt [--studies 3000] [--workers 16]
        [--budget-s 300] [--init models/bloodnet.pt]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from bloodnet_ops.model.synthdata import render_many
from bloodnet_ops.model.train import TrainConfig, train_to_file


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--studies", type=int, default=3000, help="slice-model studies")
    ap.add_argument("--stack-studies", type=int, default=400, help="study-head studies")
    ap.add_argument("--val-studies", type=int, default=200, help="validation studies")
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--size", type=int, default=192)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--budget-s", type=float, default=300.0, help="stage-1 wall clock")
    ap.add_argument("--init", type=Path, default=None, help="checkpoint to fine-tune from")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=101)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    t0 = time.perf_counter()
    n512 = a.studies // 5
    train = render_many(studies=a.studies - n512, sites=16, seed=a.seed, matrix=256,
                        size=a.size, workers=a.workers)
    train += render_many(studies=n512, sites=8, seed=a.seed + 1, matrix=512, size=a.size,
                         workers=a.workers)
    stack = render_many(studies=a.stack_studies, sites=8, seed=a.seed + 2, matrix=256,
                        size=a.size, workers=a.workers)
    val = render_many(studies=a.val_studies, sites=8, seed=a.seed + 3, matrix=256, size=a.size,
                      workers=a.workers)
    print(f"rendered {len(train) + len(stack) + len(val)} studies in "
          f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)
    steps = 10_000  # an upper bound: the time budget ends stage 1 and drives the schedule
    cfg = TrainConfig(variant="bloodnet", size=a.size, epochs=steps // 500,
                      steps_per_epoch=500, batch_size=a.batch, lr=1e-3 if a.init else 2e-3,
                      seed=a.seed, device=a.device, threads=a.workers, study_epochs=20,
                      init=str(a.init) if a.init else None, mine_every=500,
                      mine_pool=4000, max_seconds=a.budget_s, progress=False)
    res, sha = train_to_file(train, val, cfg, a.out, stack=stack,
                             extra_metrics={"recipe": "gpu", "wall_s": time.perf_counter() - t0})
    print(f"wrote {a.out} (sha256 {sha[:12]}): validation AUC {res.val_auc}, "
          f"{time.perf_counter() - t0:.0f} s in all", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
