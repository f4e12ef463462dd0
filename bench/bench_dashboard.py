"""Dashboard page times over a year of nightly data for 20 sites.

Seeds two databases with the same generator (``tests/dashboard_seed.py``, written with COPY,
which fires the rollup triggers of migration 0003 like any writer):
``year`` (365 nights x 20 sites x ~20 studies = ~146k studies, ~1M expectation rows, findings,
reads, weekly audits, nightly drift runs) and its peer ``month`` (the last 30 nights only). Each
page is requested N times in-process through the real app (ASGI, real PostgreSQL); the figure is
the median of the server's own ``Server-Timing`` (handler wall time, rendering included). The
ratio year/month shows whether a page's cost grows with history.

    .venv/bin/python bench/bench_dashboard.py [--repeat 7] [--nights 365] [--sites 20]

Writes ``bench/out/dashboard.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import dashboard_seed as seed

TOKEN = "bench-dashboard-token-0123456789"
END = dt.date(2026, 3, 14)


def pages(end: dt.date) -> list[tuple[str, str]]:
    night = end - dt.timedelta(days=1)
    year_ago = end - dt.timedelta(days=364)
    return [
        ("overview (30 nights)", "/overview"),
        ("overview (365 nights)", "/overview?days=365"),
        ("quality (90 nights)", "/quality"),
        ("quality (1 site, 365 nights)", f"/quality?site=site-07&start={year_ago}"),
        ("reject drill-down (1 night)", f"/rejects?night={night}"),
        ("audit (worklist page 1)", "/audit"),
        ("audit (filtered, sorted, page 3)",
         "/audit?site=site-03&kind=reread_sample&sort=probability&direction=asc&page=3&"
         + "per_page=10"),
        ("drift", "/drift"),
        ("drift (1 site)", "/drift?site=site-20"),
        ("models", "/models"),
    ]


def seed_database(server_url: str, spec: seed.SeedSpec) -> tuple[str, str, dict[str, int], float]:
    from bloodnet_ops.db.session import migrate
    from bloodnet_ops.db.views import apply_views
    from bloodnet_ops.services import create_database

    name = f"bloodnet_bench_dash_{uuid.uuid4().hex[:8]}"
    url = create_database(server_url, name)
    migrate(url)
    apply_views(url)
    t0 = time.perf_counter()
    counts = seed.seed_bulk(url, seed.plan_world(spec))
    return name, url, counts, time.perf_counter() - t0


def measure(urls: dict[str, str], end: dt.date, repeat: int) -> dict[str, dict[str, dict]]:
    """Median server time per page and database; the databases alternate request by request so
    that a change in the machine's load hits both alike."""
    from fastapi.testclient import TestClient

    from bloodnet_ops.dashboard.app import create_app

    headers = {"Authorization": f"Bearer {TOKEN}"}
    clients = {k: TestClient(create_app(u, token=TOKEN)) for k, u in urls.items()}
    out: dict[str, dict[str, dict]] = {k: {} for k in urls}
    try:
        for label, path in pages(end):
            samples: dict[str, dict[str, list[float]]] = {
                k: {"server": [], "wall": []} for k in urls}
            size: dict[str, int] = {}
            for c in clients.values():
                c.get(path, headers=headers)  # warm: connection pool, plans, caches
            for _ in range(repeat):
                for key, client in clients.items():
                    t0 = time.perf_counter()
                    r = client.get(path, headers=headers)
                    samples[key]["wall"].append((time.perf_counter() - t0) * 1000)
                    if r.status_code != 200:
                        raise RuntimeError(f"{path}: HTTP {r.status_code}: {r.text[:300]}")
                    samples[key]["server"].append(
                        float(r.headers["server-timing"].split("dur=")[1]))
                    size[key] = len(r.content)
            for key in urls:
                out[key][label] = {
                    "server_ms": statistics.median(samples[key]["server"]),
                    # The fastest request: on a shared machine, the least disturbed by others.
                    "server_min_ms": min(samples[key]["server"]),
                    "wall_ms": statistics.median(samples[key]["wall"]),
                    "kib": size[key] / 1024,
                }
    finally:
        for c in clients.values():
            c.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--nights", type=int, default=365)
    parser.add_argument("--sites", type=int, default=20)
    parser.add_argument("--studies", type=int, default=20, help="per site and night")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark databases")
    parser.add_argument("--reuse", metavar="YEAR_DB,MONTH_DB",
                        help="measure databases kept by an earlier --keep run (views re-applied)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from bloodnet_ops.services import drop_database, ensure_postgres

    server_url = ensure_postgres()
    sites = tuple(f"site-{i:02d}" for i in range(1, args.sites + 1))
    specs = {
        "year": seed.SeedSpec(sites=sites, nights=args.nights, studies_per_site_night=args.studies,
                              end=END, seed=11, drift_nights=args.nights, unreadable_every=5),
        "month": seed.SeedSpec(sites=sites, nights=30, studies_per_site_night=args.studies,
                               end=END, seed=11, drift_nights=30, unreadable_every=5),
    }
    results: dict[str, dict] = {}
    created, urls = [], {}
    try:
        reuse = dict(zip(specs, args.reuse.split(","), strict=True)) if args.reuse else {}
        for key, spec in specs.items():
            if key in reuse:
                from bloodnet_ops.db.views import apply_views
                from bloodnet_ops.services import create_database

                urls[key] = create_database(server_url, reuse[key], exist_ok=True)
                apply_views(urls[key])
                results[key] = {"nights": spec.nights, "database": reuse[key]}
                continue
            name, url, counts, seconds = seed_database(server_url, spec)
            created.append(name)
            urls[key] = url
            print(f"[{key}] seeded in {seconds:.0f} s: {json.dumps(counts)}", file=sys.stderr)
            results[key] = {"nights": spec.nights, "rows": counts, "seed_s": seconds,
                            "database": name}
        for key, timings in measure(urls, END, args.repeat).items():
            results[key]["pages"] = timings
    finally:
        if not args.keep and not args.reuse:
            for name in created:
                drop_database(server_url, name)
    year, month = results["year"]["pages"], results["month"]["pages"]
    print(f"\n{'page':40s} {'year ms':>9s} {'(min)':>7s} {'month ms':>9s} {'(min)':>7s} "
          f"{'ratio':>6s} {'KiB':>7s}")
    for label in year:
        y, m = year[label], month[label]
        print(f"{label:40s} {y['server_ms']:9.1f} {y['server_min_ms']:7.1f} "
              f"{m['server_ms']:9.1f} {m['server_min_ms']:7.1f} "
              f"{y['server_ms'] / m['server_ms']:6.2f} {y['kib']:7.0f}")
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    doc = {"repeat": args.repeat, "sites": args.sites, "load_average": os.getloadavg(), **results}
    (out / "dashboard.json").write_text(json.dumps(doc, indent=2, default=str))
    print(f"\nmedian (and fastest) of {args.repeat} requests per page (server time, rendering "
          f"included); load average {os.getloadavg()[0]:.1f}; written to {out / 'dashboard.json'}")


if __name__ == "__main__":
    main()
