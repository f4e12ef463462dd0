"""``make bench``: run every ``bench/bench_*.py`` and print one table of figures and ratios.

Each benchmark runs as its own subprocess, one after the other (they would skew each other's
timings on a small machine), in a quick configuration sized so that the whole run takes under
10 minutes on a 2-core machine; ``--full`` runs each with its own defaults instead.

Convention for results: a script writes ``bench/out/<script stem>.json`` with a top-level
``rows`` list of ``{metric, value, unit, peer, peer_value, ratio, limit}`` (the peer is measured
in the same run; ``limit`` says what bounds the figure). Those rows are tabulated as they are.
Scripts that do not write rows yet are adapted below from their own JSON or their stdout, and
an unknown new ``bench_*.py`` is run with ``--quick`` when its ``--help`` offers it.

Writes ``bench/out/summary.json`` and ``bench/out/summary.md``.

Usage::

    .venv/bin/python bench/run_all.py [--full] [--only headers load ...] [--skip dag ...]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
OUT = BENCH / "out"

Row = dict[str, object]


@dataclass
class Run:
    """One benchmark's subprocess: its outcome and output."""

    name: str
    args: list[str]
    started: float = 0.0
    seconds: float = 0.0
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""
    timed_out: bool = False


# --------------------------------------------------------------------------------------------
# adapters for scripts that do not write ``rows`` themselves


def _fresh_json(path: Path, run: Run) -> dict | None:
    """The JSON file if this run wrote it (an older file from another run does not count)."""
    if not path.is_file() or path.stat().st_mtime < run.started:
        return None
    return json.loads(path.read_text())


def loader_rows(run: Run) -> list[Row]:
    """bench_loader.py (HU loading vs SimpleITK, MONAI, pydicom) prints a fixed-width table."""
    rows: list[Row] = []
    head = re.search(r"(\d+) slices of (\d+)²", run.stdout)
    size = f"{head.group(1)}×{head.group(2)}²" if head else ""
    threads = re.search(r"SimpleITK threads: (\d+)", run.stdout)
    monai_ratios = []
    for line in run.stdout.splitlines():
        cells = line[30:].split()
        if len(cells) < 7 or not re.fullmatch(r"[\d.]+", cells[0]):
            continue
        name = line[:30].strip()
        bn, sitk, monai, naive = (float(c) for c in cells[:4])
        rows.append({
            "metric": f"HU volume load {size}, {name}", "value": bn, "unit": "ms",
            "peer": "SimpleITK", "peer_value": sitk, "ratio": bn / sitk,
            "limit": f"target ≤0.55; pydicom loop {naive:.0f} ms; SimpleITK uses "
                     f"{threads.group(1) if threads else '?'} threads, ours one core + decode",
        })
        if math.isfinite(monai):
            monai_ratios.append((bn, monai))
    if monai_ratios:
        bn = sum(b for b, _ in monai_ratios) / len(monai_ratios)
        mo = sum(m for _, m in monai_ratios) / len(monai_ratios)
        rows.append({"metric": f"HU volume load {size}, mean of variants", "value": bn,
                     "unit": "ms", "peer": "MONAI LoadImage", "peer_value": mo,
                     "ratio": bn / mo, "limit": "MONAI reads through pydicom too"})
    return rows


def inference_rows(run: Run) -> list[Row]:
    res = _fresh_json(OUT / "bench_inference.json", run)
    if res is None:
        return []
    if "rows" in res:
        return list(res["rows"])
    sps = res["slices_per_s"]
    gained = res["overlap_gained"]
    hidden = ("the loading is too short to measure what the overlap hid" if gained > 1.0
              else f"the overlap hid {gained:.0%} of the shorter stage")
    return [
        {"metric": f"inference {res['device']}, {res['studies']} studies at {res['matrix']}², "
                   "overlapped load+compute", "value": sps["overlapped"], "unit": "slices/s",
         "peer": "sequential load→score", "peer_value": sps["sequential"],
         "ratio": res["speedup_overlapped_vs_sequential"],
         "limit": f"{hidden}; {res['threads']} torch threads"},
        {"metric": "inference, compute only (volumes in memory): the ceiling",
         "value": sps["compute"], "unit": "slices/s", "peer": "overlapped (product path)",
         "peer_value": sps["overlapped"], "ratio": sps["overlapped"] / sps["compute"],
         "limit": f"loading {res['share_loading']:.0%} / compute {res['share_compute']:.0%} of "
                  f"stage time; batch {res['batch_size']}; CPU convolutions"},
    ]


def generalisation_rows(run: Run) -> list[Row]:
    """bench_generalisation.py: the model's AUC on the outside phantom against the HU-threshold
    peer scored on the same studies."""
    res = _fresh_json(OUT / "bench_generalisation.json", run)
    if res is None or res.get("auc", {}).get("auc") is None:
        return []
    peer = res.get("peer_hu_threshold") or {}
    return [{"metric": f"study AUC, outside phantom ({res['n_studies']} studies, "
                       f"{res['config']['matrix']}²)", "value": res["auc"]["auc"], "unit": "AUC",
             "peer": "HU threshold 55-90 in the skull", "peer_value": peer.get("auc"),
             "ratio": (res["auc"]["auc"] / peer["auc"]) if peer.get("auc") else None,
             "limit": "quick mode: few studies, wide CI"}]


def dag_rows(run: Run) -> list[Row]:
    res = _fresh_json(OUT / "bench_dag.json", run)
    if res is None:
        return []
    if "rows" in res:
        return list(res["rows"])
    inside = res.get("airflow_share_in_run", res.get("airflow_share_outside_tasks"))
    share = f"Airflow share {res['airflow_share_vs_peer']:.0%} vs the peer"
    if inside is not None:
        share += f", {inside:.0%} of the run outside bloodnet_ops functions"
    return [{
        "metric": f"nightly DAG end to end, {res['studies']} studies at {res['matrix']}²",
        "value": res["dag_studies_per_min"], "unit": "studies/min",
        "peer": "bloodnet screen (same functions, no Airflow)",
        "peer_value": res["screen_studies_per_min"],
        "ratio": res["dag_studies_per_min"] / res["screen_studies_per_min"],
        "limit": f"{share} (dags test: one process, tasks in series)",
    }]


def dashboard_rows(run: Run) -> list[Row]:
    res = _fresh_json(OUT / "dashboard.json", run)
    if res is None:
        return []
    if "rows" in res:
        return list(res["rows"])
    year, month = res["year"], res["month"]
    rows: list[Row] = []
    for label, page in year["pages"].items():
        peer = month["pages"][label]
        rows.append({
            "metric": f"dashboard {label}", "value": page["server_ms"], "unit": "ms",
            "peer": f"{month['nights']} nights of history",
            "peer_value": peer["server_ms"], "ratio": page["server_ms"] / peer["server_ms"],
            "limit": f"{year['nights']} nights x {res['sites']} sites; {page['kib']:.0f} KiB",
        })
    return rows


def own_rows(stem: str) -> Callable[[Run], list[Row]]:
    def rows(run: Run) -> list[Row]:
        res = _fresh_json(OUT / f"{stem}.json", run)
        return list(res.get("rows", [])) if res else []

    return rows


@dataclass
class Spec:
    quick: list[str]
    rows: Callable[[Run], list[Row]]
    timeout: float = 300.0
    full: list[str] = field(default_factory=list)


def specs() -> dict[str, Spec]:
    """Quick arguments per known script, sized for < 10 min in all on 2 cores."""
    return {
        "bench_headers": Spec(["--quick"], own_rows("bench_headers"), 240),
        "bench_loader": Spec(["--repeats", "3", "--slices", "40", "--matrix", "512"],
                             loader_rows, 240),
        "bench_inference": Spec(["--studies", "4", "--matrix", "128", "--repeats", "2",
                                 "--json", str(OUT / "bench_inference.json")],
                                inference_rows, 240,
                                full=["--json", str(OUT / "bench_inference.json")]),
        "bench_load": Spec(["--quick"], own_rows("bench_load"), 360),
        "bench_dag": Spec(["--studies", "6", "--matrix", "128", "--batch-size", "3"], dag_rows,
                          360),
        "bench_generalisation": Spec(["--studies", "24", "--matrix", "256", "--baseline",
                                      "--n-boot", "300", "--out",
                                      str(OUT / "bench_generalisation.json")],
                                     generalisation_rows, 420,
                                     full=["--studies", "100", "--seed", "7", "--baseline",
                                           "--out", str(OUT / "bench_generalisation.json")]),
        "bench_dashboard": Spec(["--repeat", "3", "--nights", "365", "--sites", "10",
                                 "--studies", "10"], dashboard_rows, 300),
    }


def _offers_quick(script: Path) -> bool:
    res = subprocess.run([sys.executable, str(script), "--help"], capture_output=True,
                         text=True, timeout=120, check=False)
    return "--quick" in res.stdout


def run_script(script: Path, args: list[str], timeout: float) -> Run:
    run = Run(script.stem, args)
    env = {**os.environ, "TQDM_DISABLE": "1", "GX_ANALYTICS_ENABLED": "False",
           "AWS_EC2_METADATA_DISABLED": "true", "PYTHONUNBUFFERED": "1"}
    run.started = time.time() - 1  # mtime resolution
    t0 = time.perf_counter()
    try:
        res = subprocess.run([sys.executable, str(script), *args], capture_output=True,
                             text=True, timeout=timeout, env=env, cwd=ROOT, check=False)
        run.returncode, run.stdout, run.stderr = res.returncode, res.stdout, res.stderr
    except subprocess.TimeoutExpired as exc:
        run.timed_out = True
        run.stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        run.stderr = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
    run.seconds = time.perf_counter() - t0
    return run


# --------------------------------------------------------------------------------------------
# the table


def _fmt(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "-"
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def table(rows: list[tuple[str, Row]]) -> str:
    head = ("bench", "metric", "value", "unit", "peer", "peer value", "ratio", "limited by")
    body = [(b, str(r["metric"]), _fmt(r.get("value")), str(r.get("unit") or ""),
             str(r.get("peer") or "-"), _fmt(r.get("peer_value")), _fmt(r.get("ratio")),
             str(r.get("limit") or "")) for b, r in rows]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head) - 1)]
    lines = []
    for cells in [head, tuple("-" * w for w in widths) + ("-" * 10,), *body]:
        left = "  ".join(c.ljust(w) if i in (0, 1, 3, 4) else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=False)))
        lines.append(f"{left}  {cells[-1]}")
    return "\n".join(lines)


def markdown(rows: list[tuple[str, Row]]) -> str:
    out = ["| bench | metric | value | unit | peer | peer value | ratio | limited by |",
           "|---|---|---:|---|---|---:|---:|---|"]
    for b, r in rows:
        out.append(f"| {b} | {r['metric']} | {_fmt(r.get('value'))} | {r.get('unit') or ''} | "
                   f"{r.get('peer') or '-'} | {_fmt(r.get('peer_value'))} | "
                   f"{_fmt(r.get('ratio'))} | {r.get('limit') or ''} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="each script's own defaults (long)")
    ap.add_argument("--only", nargs="+", default=None, help="names like headers, load, dag")
    ap.add_argument("--skip", nargs="+", default=[], help="names to leave out")
    args = ap.parse_args()

    known = specs()
    scripts = sorted(BENCH.glob("bench_*.py"),
                     key=lambda p: (list(known).index(p.stem) if p.stem in known else 99, p.name))

    def short(p: Path) -> str:
        return p.stem.removeprefix("bench_")

    if args.only:
        scripts = [p for p in scripts if short(p) in args.only or p.stem in args.only]
    scripts = [p for p in scripts if short(p) not in args.skip and p.stem not in args.skip]
    OUT.mkdir(parents=True, exist_ok=True)

    t_all = time.perf_counter()
    runs: list[Run] = []
    rows: list[tuple[str, Row]] = []
    for script in scripts:
        spec = known.get(script.stem)
        if spec is None:
            spec = Spec(["--quick"] if _offers_quick(script) else [], own_rows(script.stem))
        argv = spec.full if args.full else spec.quick
        timeout = spec.timeout * (8 if args.full else 1)
        print(f"== {script.name} {' '.join(argv)}", file=sys.stderr, flush=True)
        run = run_script(script, argv, timeout)
        runs.append(run)
        status = ("timed out" if run.timed_out else
                  "ok" if run.returncode == 0 else f"exit {run.returncode}")
        print(f"   {status} in {run.seconds:.0f} s", file=sys.stderr, flush=True)
        got = spec.rows(run) if run.returncode == 0 else []
        if not got:
            why = (status if status != "ok" else "no figures found in its output")
            last = (run.stderr.strip().splitlines() or run.stdout.strip().splitlines() or [""])
            got = [{"metric": f"FAILED: {why}", "value": None, "limit": last[-1][:160]}]
        rows.extend((short(script), r) for r in got)
    wall = time.perf_counter() - t_all

    print()
    print(table(rows))
    print(f"\n{len(runs)} benchmarks in {wall:.0f} s ({os.cpu_count()} CPUs; "
          f"{'full' if args.full else 'quick'} configuration): "
          + ", ".join(f"{r.name.removeprefix('bench_')} {r.seconds:.0f} s" for r in runs))
    summary = {
        "wall_s": wall, "cpu_count": os.cpu_count(), "full": args.full,
        "runs": [{"name": r.name, "args": r.args, "seconds": r.seconds,
                  "returncode": r.returncode, "timed_out": r.timed_out} for r in runs],
        "rows": [{"bench": b, **r} for b, r in rows],
    }
    (OUT / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    (OUT / "summary.md").write_text(markdown(rows) + "\n")
    failed = [r.name for r in runs if r.returncode != 0]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
