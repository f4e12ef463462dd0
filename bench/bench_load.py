"""A night at scale: discovery + validation of N studies with memory measured, and inference.

Studies come from ``bloodnet_ops.synth.generate_dataset`` (``--base`` studies at 128²) and are
cloned to any number by rewriting their UIDs in place (same length, so every byte but the UIDs
is the generator's), into one folder per night: DIR/<site>/<study>/<series>/<sop>.dcm. Each
night runs in a fresh process against a fresh PostgreSQL database, exactly as the nightly job
does it: ``nightly.discover`` (listing + manifest) then ``nightly.validate_and_record``
(ranged header reads, grouping, selection, the GX header suite, full GETs and HU checks of every
selected series, and all the rows). A thread samples the process's RSS every 50 ms.

The peer of the large night is the small one, measured in the same run: peak RSS must not grow
with the number of studies (ratio near 1), and throughput should not fall.

Then inference: ``nightly.infer_batch`` (batches of 16, no DICOM output) over ``--infer``
accepted studies of the large night, in its own process, with its peak RSS.

Usage::

    .venv/bin/python bench/bench_load.py                 # 500 vs 2,000 studies, 300 scored
    .venv/bin/python bench/bench_load.py --quick         # 50 vs 200 studies, 16 scored

Writes ``bench/out/bench_load.json`` (``rows``: the figures ``bench/run_all.py`` tabulates).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Self

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
_PAGE = os.sysconf("SC_PAGE_SIZE")


# ---------------------------------------------------------------------------------------------
# memory


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * _PAGE


class RssSampler:
    """Peak RSS of this process, sampled every ``interval`` s (ru_maxrss also counts a forked
    child's peak and cannot be reset, so both are reported)."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval, self.peak, self.samples = interval, rss_bytes(), 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss")

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_bytes())
            self.samples += 1

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


# ---------------------------------------------------------------------------------------------
# a night of N studies from a few generated ones


@dataclass
class BaseFile:
    rel: tuple[str, str, str]  #: site, series uid, sop uid (the study uid is the study's)
    data: bytes
    uids: list[str]  #: every UID in the file that identifies a study, series, instance or frame


@dataclass
class BaseStudy:
    site: str
    study_uid: str
    files: list[BaseFile]


def read_base(folder: Path) -> list[BaseStudy]:
    import pydicom

    studies = []
    for site in sorted(p for p in folder.iterdir() if p.is_dir() and p.name != "masks"):
        for study in sorted(p for p in site.iterdir() if p.is_dir()):
            files = []
            for path in sorted(study.rglob("*.dcm")):
                ds = pydicom.dcmread(path, stop_before_pixels=True)
                uids = {str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID),
                        str(ds.SOPInstanceUID), str(ds.get("FrameOfReferenceUID", "") or "")}
                files.append(BaseFile((site.name, str(ds.SeriesInstanceUID),
                                       str(ds.SOPInstanceUID)), path.read_bytes(),
                                      sorted(u for u in uids if u)))
            studies.append(BaseStudy(site.name, study.name, files))
    return studies


def clone_uid(uid: str, k: int) -> str:
    """The same-length UID of clone ``k``: the last 7 digits of the last component replaced
    (2.25 UIDs carry ~38 random digits, so clones of different bases never collide)."""
    head, _, last = uid.rpartition(".")
    if len(last) < 9:
        raise ValueError(f"UID component too short to clone: {uid}")
    return f"{head}.{last[:-7]}{k:07d}"


def write_night(bases: list[BaseStudy], out: Path, n: int) -> int:
    """Write ``n`` studies under ``out``; returns the number of objects."""
    objects = 0
    for i in range(n):
        base = bases[i % len(bases)]
        k = i // len(bases) + 1
        study = clone_uid(base.study_uid, k)
        for f in base.files:
            data = f.data
            for u in f.uids:
                data = data.replace(u.encode(), clone_uid(u, k).encode())
            site, series, sop = f.rel
            path = out / site / study / clone_uid(series, k) / f"{clone_uid(sop, k)}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            objects += 1
    return objects


# ---------------------------------------------------------------------------------------------
# workers (one process per measurement)


def worker_validate(folder: str, db_url: str) -> dict:
    from bloodnet_ops import nightly
    from bloodnet_ops.headers import quiet_pydicom

    quiet_pydicom()
    import great_expectations  # noqa: F401 - imported before the baseline, as a worker has it

    base = rss_bytes()
    with RssSampler() as rss:
        t0 = time.perf_counter()
        found = nightly.discover(folder, db_url)
        t1 = time.perf_counter()
        summary = nightly.validate_and_record(found.source_uri, db_url, found.run_id)
        t2 = time.perf_counter()
    nightly.dispose_engines()
    return {"run_id": found.run_id, "objects": found.n_listed, "studies": summary.n_studies,
            "accepted": summary.n_accepted, "rejected": summary.n_rejected,
            "unreadable": summary.n_unreadable, "discover_s": t1 - t0, "validate_s": t2 - t1,
            "rss_base": base, "rss_peak": rss.peak, "rss_samples": rss.samples,
            "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def worker_infer(folder: str, db_url: str, run_id: str, n: int, model: str) -> dict:
    from bloodnet_ops import nightly
    from bloodnet_ops.headers import quiet_pydicom

    quiet_pydicom()
    batches = nightly.plan_batches(db_url, run_id, 16)
    uids = [u for b in batches for u in b][:n]
    nightly.infer_batch(folder, db_url, uids[:1], run_id, model, write_dicom=False)  # warm
    base = rss_bytes()
    counts = []
    with RssSampler() as rss:
        t0 = time.perf_counter()
        after = []  # RSS after each batch: flat if nothing accumulates across batches
        for i in range(0, len(uids), 16):
            counts.append(nightly.infer_batch(folder, db_url, uids[i:i + 16], run_id, model,
                                                write_dicom=False))
            after.append(rss_bytes())
        wall = time.perf_counter() - t0
    from sqlalchemy import text

    with nightly.engine(db_url).connect() as conn:
        slices = conn.execute(text("SELECT coalesce(sum(s.n_instances), 0) FROM findings f"
                                   " JOIN series s USING (series_uid)")).scalar_one()
    nightly.dispose_engines()
    return {"studies": sum(c.n_scored for c in counts), "slices": int(slices),
            "wall_s": wall, "load_s": sum(c.load_s for c in counts),
            "infer_s": sum(c.infer_s for c in counts), "rss_base": base,
            "rss_peak": rss.peak, "rss_after_batch_mib": [round(b / 2**20) for b in after],
            "threads": _torch_threads()}


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _run_worker(args: list[str], timeout: float) -> dict:
    env = {**os.environ, "TQDM_DISABLE": "1", "GX_ANALYTICS_ENABLED": "False",
           "AWS_EC2_METADATA_DISABLED": "true"}
    res = subprocess.run([sys.executable, __file__, "--worker", *args], capture_output=True,
                         text=True, timeout=timeout, env=env, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"worker {args[0]} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _model(tmp: Path) -> str:
    """The shipped weights, else an untrained checkpoint of the same architecture (throughput
    depends on the architecture, not on the weights)."""
    from bloodnet_ops.model.predictor import default_model_path

    path = default_model_path()
    if path.is_file():
        return str(path)
    import torch

    from bloodnet_ops.model.checkpoint import save_checkpoint
    from bloodnet_ops.model.net import get_model

    torch.manual_seed(0)
    out = tmp / "untrained.pt"
    save_checkpoint(out, get_model("bloodnet"), threshold=0.5, size=128, dataset={},
                    train_config={}, metrics={})
    return str(out)


# ---------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=500, help="studies in the peer night")
    ap.add_argument("--large", type=int, default=2000, help="studies in the large night")
    ap.add_argument("--base", type=int, default=24, help="generated studies to clone from")
    ap.add_argument("--infer", type=int, default=300, help="studies scored")
    ap.add_argument("--quick", action="store_true", help="50 vs 200 studies, 16 scored")
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        kind, *rest = args.worker
        out = (worker_validate(*rest) if kind == "validate" else
               worker_infer(rest[0], rest[1], rest[2], int(rest[3]), rest[4]))
        print(json.dumps(out))
        return
    if args.quick:
        args.small, args.large, args.base, args.infer = 50, 200, 8, 16

    from bloodnet_ops.db.session import migrate
    from bloodnet_ops.services import create_database, drop_database, ensure_postgres
    from bloodnet_ops.synth import generate_dataset

    work = Path(tempfile.mkdtemp(prefix="bloodnet-bench-load-"))
    server = ensure_postgres()
    databases: list[str] = []
    results: dict[str, dict] = {}
    try:
        t0 = time.perf_counter()
        generate_dataset(work / "base", studies=args.base, sites=4, seed=23, matrix=128,
                         progress=False)
        bases = read_base(work / "base")
        gen_s = time.perf_counter() - t0
        model = _model(work)
        for label, n in (("small", args.small), ("large", args.large)):
            folder = work / label
            t0 = time.perf_counter()
            objects = write_night(bases, folder, n)
            write_s = time.perf_counter() - t0
            name = f"bloodnet_bench_load_{uuid.uuid4().hex[:8]}"
            databases.append(name)
            url = create_database(server, name)
            migrate(url)
            print(f"[{label}] {n} studies, {objects} objects written in {write_s:.0f} s; "
                  "validating", file=sys.stderr, flush=True)
            results[label] = {"n": n, "write_s": write_s, "db": url,
                              **_run_worker(["validate", str(folder), url], timeout=7200)}
            r = results[label]
            print(f"[{label}] discover {r['discover_s']:.1f} s, validate {r['validate_s']:.1f} s,"
                  f" peak RSS {r['rss_peak'] / 2**20:.0f} MiB", file=sys.stderr, flush=True)
            if label == "small":
                shutil.rmtree(folder)
        large = results["large"]
        results["infer"] = _run_worker(
            ["infer", str(work / "large"), large["db"], large["run_id"], str(args.infer), model],
            timeout=7200)
    finally:
        for name in databases:
            drop_database(server, name)
        shutil.rmtree(work, ignore_errors=True)

    s, lg, inf = results["small"], results["large"], results["infer"]
    after = inf["rss_after_batch_mib"]
    for r in (s, lg):
        r.pop("db", None)
        r["wall_s"] = r["discover_s"] + r["validate_s"]
        r["studies_per_s"] = r["studies"] / r["wall_s"]
        r["objects_per_s"] = r["objects"] / r["wall_s"]
    grow = (lg["rss_peak"] - s["rss_peak"]) / max(1, lg["studies"] - s["studies"])
    over_base = {k: (r["rss_peak"] - r["rss_base"]) for k, r in (("small", s), ("large", lg))}
    res = {
        "cpu_count": os.cpu_count(), "matrix": 128, "base_studies": args.base,
        "generate_s": gen_s, "small": s, "large": lg, "infer": inf,
        "rss_growth_per_study_kib": grow / 1024,
        "rss_over_baseline_mib": {k: v / 2**20 for k, v in over_base.items()},
    }
    res["rows"] = [
        {"metric": f"peak RSS, night of {lg['studies']} studies (discover+validate)",
         "value": lg["rss_peak"] / 2**20, "unit": "MiB",
         "peer": f"{s['studies']} studies", "peer_value": s["rss_peak"] / 2**20,
         "ratio": lg["rss_peak"] / s["rss_peak"],
         "limit": f"grows {grow / 1024:.0f} KiB per study: compact verdicts and allocator"
                  " high-water; headers are validated and recorded in partitions"},
        {"metric": f"discover+validate throughput, {lg['studies']} studies",
         "value": lg["studies_per_s"], "unit": "studies/s",
         "peer": f"{s['studies']} studies", "peer_value": s["studies_per_s"],
         "ratio": lg["studies_per_s"] / s["studies_per_s"],
         "limit": f"{lg['objects_per_s']:.0f} objects/s: pydicom parsing and HU decoding, "
                  "one core (GIL)"},
        {"metric": f"inference, {inf['studies']} studies (infer_batch, CPU)",
         "value": inf["slices"] / inf["wall_s"], "unit": "slices/s",
         "peer": "studies/s", "peer_value": inf["studies"] / inf["wall_s"], "ratio": None,
         "limit": f"{inf['threads']} torch threads; load {inf['load_s']:.0f} s vs model "
                  f"{inf['infer_s']:.0f} s; peak RSS {inf['rss_peak'] / 2**20:.0f} MiB, after "
                  f"first/last batch {after[0]}/{after[-1]} MiB"},
    ]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "bench_load.json").write_text(json.dumps(res, indent=2))
    print(f"{'night':<8}{'studies':>8}{'objects':>9}{'discover s':>11}{'validate s':>11}"
          f"{'studies/s':>10}{'peak RSS MiB':>13}{'over base':>10}")
    for k, r in (("small", s), ("large", lg)):
        print(f"{k:<8}{r['studies']:>8}{r['objects']:>9}{r['discover_s']:>11.1f}"
              f"{r['validate_s']:>11.1f}{r['studies_per_s']:>10.2f}{r['rss_peak'] / 2**20:>13.0f}"
              f"{over_base[k] / 2**20:>10.0f}")
    print(f"peak RSS large/small: {lg['rss_peak'] / s['rss_peak']:.2f}x "
          f"({grow / 1024:.0f} KiB per extra study)")
    print(f"inference: {inf['studies']} studies, {inf['slices']} slices in {inf['wall_s']:.1f} s "
          f"= {inf['slices'] / inf['wall_s']:.1f} slices/s, {inf['studies'] / inf['wall_s']:.2f} "
          f"studies/s; peak RSS {inf['rss_peak'] / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
