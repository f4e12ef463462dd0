"""Inference throughput of the BloodNet Predictor, with its peers measured in the same run.

Writes a small synthetic data set (real DICOM through ``bloodnet synth``), validates it, then
times on the same studies:

1. ``load``       DICOM → HU volumes only (``volumes.load_study_volume``), sequentially;
2. ``compute``    the Predictor on volumes already in memory (no loading);
3. ``sequential`` the peer: load a study, score it, load the next (``prefetch=0``: no thread);
4. ``overlapped`` the Predictor pulling studies through its loading thread (the product path).

Reported: slices/s and studies/s (native slices), the share of time loading vs computing, the
overlap gained (``(sequential - overlapped) / min(load, compute)``, 1.0 = loading fully hidden),
and the speed-up ``sequential / overlapped``. With ``--batch-sweep`` the compute step is repeated
per batch size; with ``--no-amp`` / ``--no-channels-last`` (CUDA) the peers of those switches.

Usage::

    .venv/bin/python bench/bench_inference.py [--studies 8] [--matrix 256] [--device cpu]
        [--model models/bloodnet.pt] [--batch-sweep 16,32,64] [--repeats 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from bloodnet_ops.model.checkpoint import save_checkpoint
from bloodnet_ops.model.net import get_model
from bloodnet_ops.model.predictor import DEFAULT_MODEL, Predictor
from bloodnet_ops.pipeline import validate_source
from bloodnet_ops.reasons import Verdict
from bloodnet_ops.storage import LocalSource
from bloodnet_ops.synth import generate_dataset
from bloodnet_ops.volumes import load_study_volume


def _model_path(arg: str | None, tmp: Path) -> Path:
    if arg:
        return Path(arg)
    if DEFAULT_MODEL.exists():
        return DEFAULT_MODEL
    path = tmp / "untrained.pt"  # same architecture and compute as the shipped model
    save_checkpoint(path, get_model("bloodnet"), threshold=0.5, size=128, dataset={},
                    train_config={}, metrics={})
    return path


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def run(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        generate_dataset(tmp / "data", studies=args.studies, sites=min(4, args.studies),
                         seed=5, matrix=args.matrix, workers=1, progress=False)
        source = LocalSource(tmp / "data")
        report = validate_source(source, hu_check=False)
        studies = [s for s in report.studies if s.verdict != Verdict.REJECT and s.series_uid]
        model = _model_path(args.model, tmp)

        def load_all() -> list:
            return [(s.study_uid, s.series_uid, load_study_volume(source, s)) for s in studies]

        def lazy():
            for s in studies:
                yield s.study_uid, s.series_uid, load_study_volume(source, s)

        items = load_all()  # warm the page cache and keep volumes for the compute-only runs
        n_slices = sum(v.hu.shape[0] for _, _, v in items)
        n = len(items)
        pred = Predictor(model, args.device, batch_size=args.batch, amp=not args.no_amp,
                         channels_last=not args.no_channels_last)
        pred.predict(items[:1])  # warm-up (allocator, kernels)
        t_load = _best(load_all, args.repeats)
        t_compute = _best(lambda: pred.predict(items), args.repeats)
        seq = Predictor(model, args.device, batch_size=args.batch, prefetch=0,
                        amp=not args.no_amp, channels_last=not args.no_channels_last)
        t_seq = _best(lambda: [seq.predict([it]) for it in lazy()], args.repeats)
        t_over = _best(lambda: pred.predict(lazy()), args.repeats)
        sweep = {}
        for bs in args.batch_sweep:
            p = Predictor(model, args.device, batch_size=bs, amp=not args.no_amp,
                          channels_last=not args.no_channels_last)
            p.predict(items[:1])
            sweep[bs] = n_slices / _best(lambda p=p: p.predict(items), args.repeats)
        peer = None
        if args.peer_model:  # another checkpoint, same volumes, same run: a model-for-model ratio
            pp = Predictor(Path(args.peer_model), args.device, batch_size=args.batch,
                           amp=not args.no_amp, channels_last=not args.no_channels_last)
            pp.predict(items[:1])
            t_peer = _best(lambda: pp.predict(items), args.repeats)
            peer = {"model_version": pp.model_version, "compute_slices_per_s": n_slices / t_peer,
                    "ratio_model_vs_peer": t_peer / t_compute}
        return {
            "device": str(pred.device),
            "gpu": torch.cuda.get_device_name(0) if pred.device.type == "cuda" else None,
            "threads": torch.get_num_threads(),
            "model_version": pred.model_version,
            "studies": n,
            "slices": n_slices,
            "matrix": args.matrix,
            "batch_size": pred.batch_size,
            "amp_bf16": pred.device.type == "cuda" and not args.no_amp,
            "channels_last": pred.device.type == "cuda" and not args.no_channels_last,
            "seconds": {"load": t_load, "compute": t_compute, "sequential": t_seq,
                        "overlapped": t_over},
            "slices_per_s": {"compute": n_slices / t_compute, "overlapped": n_slices / t_over,
                             "sequential": n_slices / t_seq, "load": n_slices / t_load},
            "studies_per_s": {"compute": n / t_compute, "overlapped": n / t_over,
                              "sequential": n / t_seq},
            "share_loading": t_load / (t_load + t_compute),
            "share_compute": t_compute / (t_load + t_compute),
            "overlap_gained": (t_seq - t_over) / min(t_load, t_compute),
            "speedup_overlapped_vs_sequential": t_seq / t_over,
            "batch_sweep_slices_per_s": sweep,
            "peer_model": peer,
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--studies", type=int, default=8)
    ap.add_argument("--matrix", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--batch-sweep", type=lambda s: [int(v) for v in s.split(",") if v],
                    default=[])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--no-amp", action="store_true")
    ap.add_argument("--no-channels-last", action="store_true")
    ap.add_argument("--json", default=None, help="also write the result here")
    ap.add_argument("--peer-model", default=None,
                    help="another checkpoint timed on the same volumes (e.g. the previous release)")
    args = ap.parse_args()
    res = run(args)
    s, sps = res["seconds"], res["slices_per_s"]
    print(f"{res['device']} ({res['gpu'] or str(res['threads']) + ' threads'}), "
          f"{res['studies']} studies, {res['slices']} slices at {res['matrix']}², "
          f"batch {res['batch_size']}, {res['model_version']}")
    print(f"  load only      {s['load']:7.2f} s  {sps['load']:8.1f} slices/s")
    print(f"  compute only   {s['compute']:7.2f} s  {sps['compute']:8.1f} slices/s  "
          f"{res['studies_per_s']['compute']:.2f} studies/s")
    print(f"  sequential     {s['sequential']:7.2f} s  {sps['sequential']:8.1f} slices/s  (peer)")
    print(f"  overlapped     {s['overlapped']:7.2f} s  {sps['overlapped']:8.1f} slices/s  "
          f"{res['studies_per_s']['overlapped']:.2f} studies/s")
    print(f"  time share: loading {res['share_loading']:.0%}, compute {res['share_compute']:.0%};"
          f" overlap gained {res['overlap_gained']:.0%} of the shorter stage; "
          f"overlapped/sequential speed-up x{res['speedup_overlapped_vs_sequential']:.2f}")
    if res["peer_model"]:
        pm = res["peer_model"]
        print(f"  peer model     {pm['model_version']}: {pm['compute_slices_per_s']:8.1f} slices/s"
              f" compute; this model x{pm['ratio_model_vs_peer']:.2f}")
    for bs, v in res["batch_sweep_slices_per_s"].items():
        print(f"  batch {bs:4d}: {v:8.1f} slices/s")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
