"""Header validation by ranged GET against full-object download, on SeaweedFS (S3 over loopback).

The same synthetic studies are uploaded once; then, alternating, in this one run:

- ``ranged`` (the product path): ``headers.read_headers`` with ranged GETs of
  ``storage.HEADER_BYTES`` (one full GET only for a header longer than that);
- ``full`` (the peer): every object downloaded whole, then parsed the same way;
- ``parse`` (the ceiling): the same parser on prefixes already in memory, no I/O at all.

Each mode also runs the rest of header validation (``pipeline.validate_source`` with
``hu_check=False``: grouping, series selection and the great-expectations header suite), which
costs the same in every mode. Reported: studies/s and objects/s, bytes read from the store, and
the ratios ranged/full. Bytes are counted on what the store returned.

Usage::

    .venv/bin/python bench/bench_headers.py [--studies 8] [--matrix 256] [--repeats 3] [--quick]

Writes ``bench/out/bench_headers.json`` (``rows``: the figures ``bench/run_all.py`` tabulates).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"


class CountingSource:
    """A source wrapper that counts requests and bytes; ``full=True`` turns every ranged GET into
    a full download (the peer)."""

    def __init__(self, inner, *, full: bool = False) -> None:
        self.inner, self.full = inner, full
        self.uri = inner.uri
        self.bytes = self.requests = 0
        self._lock = threading.Lock()

    def _count(self, data: bytes) -> bytes:
        with self._lock:
            self.bytes += len(data)
            self.requests += 1
        return data

    def list(self):
        return self.inner.list()

    def get_range(self, key: str, length: int) -> bytes:
        if self.full:
            return self._count(self.inner.get(key))
        return self._count(self.inner.get_range(key, length))

    def get(self, key: str) -> bytes:
        return self._count(self.inner.get(key))

    def put(self, key: str, data: bytes, content_type: str = "application/dicom") -> None:
        self.inner.put(key, data, content_type)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=8)
    ap.add_argument("--matrix", type=int, default=256, choices=(128, 256, 512))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=16, help="concurrent GETs (the default)")
    ap.add_argument("--link-mbps", type=float, default=1000.0,
                    help="bandwidth of the shaped link (megabits/s)")
    ap.add_argument("--latency-ms", type=float, default=1.0, help="latency per request on it")
    ap.add_argument("--quick", action="store_true", help="6 studies, 3 repeats")
    args = ap.parse_args()
    if args.quick:
        args.studies, args.repeats = min(args.studies, 6), min(args.repeats, 3)
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    sys.path.insert(0, str(ROOT / "tests"))

    from faultproxy import FaultPlan, FaultProxy

    from bloodnet_ops.headers import quiet_pydicom, read_header, read_headers
    from bloodnet_ops.pipeline import validate_source
    from bloodnet_ops.services import start_seaweedfs
    from bloodnet_ops.storage import HEADER_BYTES, S3Source, upload_folder
    from bloodnet_ops.synth import generate_dataset

    quiet_pydicom()
    work = Path(tempfile.mkdtemp(prefix="bloodnet-bench-headers-"))
    s3 = start_seaweedfs(work / "s3")
    link = FaultPlan(delay_s=args.latency_ms / 1000, link_bps=args.link_mbps * 1e6 / 8)
    try:
        os.environ.update(s3.env())
        data = work / "data"
        generate_dataset(data, studies=args.studies, sites=2, seed=17, matrix=args.matrix,
                         progress=False)
        for site in sorted(p for p in data.iterdir() if p.is_dir() and p.name != "masks"):
            upload_folder(site, "bench", f"night/{site.name}")
        store = S3Source("bench", "night")
        refs = list(store.list())
        total_bytes = sum(r.size for r in refs)
        print(f"{args.studies} studies, {len(refs)} objects at {args.matrix}², "
              f"{total_bytes / 1e6:.1f} MB in SeaweedFS", file=sys.stderr, flush=True)

        # the ceiling: the parser alone on prefixes already in memory
        blobs = {r.key: store.get(r.key) for r in refs}
        t0 = time.perf_counter()
        for r in refs:
            read_header(r, blobs[r.key][:HEADER_BYTES], lambda k=r.key: blobs[k])
        t_parse = time.perf_counter() - t0
        blobs.clear()

        validate_source(store, objects=refs, hu_check=False, workers=args.workers)  # warm GX
        modes = ("ranged", "full")
        timings: dict[str, list[float]] = {f"{w}/{m}": [] for w in ("loopback", "link", "gx")
                                           for m in modes}
        counted: dict[str, tuple[int, int]] = {}
        studies_found = 0
        with FaultProxy(s3.endpoint, link) as proxy:
            shaped = S3Source("bench", "night", endpoint=proxy.endpoint)
            for rep in range(args.repeats):
                # alternate the order, so neither mode always runs on a warmer machine
                for mode in (modes if rep % 2 == 0 else modes[::-1]):
                    for where, inner in (("loopback", store), ("link", shaped)):
                        src = CountingSource(inner, full=mode == "full")
                        t0 = time.perf_counter()
                        parsed = read_headers(src, refs, workers=args.workers)
                        timings[f"{where}/{mode}"].append(time.perf_counter() - t0)
                        assert len(parsed) == len(refs)
                        counted[mode] = (src.bytes, src.requests)
                    src = CountingSource(store, full=mode == "full")
                    t0 = time.perf_counter()
                    report = validate_source(src, objects=refs, hu_check=False,
                                             workers=args.workers)
                    timings[f"gx/{mode}"].append(time.perf_counter() - t0)
                    studies_found = len(report.studies)
    finally:
        s3.stop()

    n = studies_found
    best = {k: min(v) for k, v in timings.items()}  # least disturbed by other processes
    rate = {k: n / v for k, v in best.items()}
    ranged_b, full_b = counted["ranged"][0], counted["full"][0]
    link_txt = f"{args.link_mbps:.0f} Mb/s, {args.latency_ms:g} ms"
    res = {
        "studies": n, "objects": len(refs), "matrix": args.matrix, "repeats": args.repeats,
        "workers": args.workers, "cpu_count": os.cpu_count(), "header_bytes": HEADER_BYTES,
        "object_bytes_total": total_bytes, "link": link_txt,
        "bytes_read": {m: counted[m][0] for m in counted},
        "requests": {m: counted[m][1] for m in counted},
        "seconds_best": best, "seconds_all": timings, "parse_only_s": t_parse,
        "studies_per_s": {**rate, "parse_only": n / t_parse},
    }
    res["rows"] = [
        {"metric": f"header read over a {link_txt} link, ranged GET", "unit": "studies/s",
         "value": rate["link/ranged"], "peer": "full download",
         "peer_value": rate["link/full"], "ratio": rate["link/ranged"] / rate["link/full"],
         "limit": f"full download is link-bound ({full_b * 8 / 1e6 / args.link_mbps:.2f} s of "
                  f"transfer); ranged is parse-bound ({n / t_parse:.1f} studies/s with no I/O)"},
        {"metric": "header read on loopback S3, ranged GET", "unit": "studies/s",
         "value": rate["loopback/ranged"], "peer": "full download",
         "peer_value": rate["loopback/full"],
         "ratio": rate["loopback/ranged"] / rate["loopback/full"],
         "limit": "no network: both are pydicom parsing on one core (GIL)"},
        {"metric": "bytes read for headers", "value": ranged_b / 1e6, "unit": "MB",
         "peer": "full download", "peer_value": full_b / 1e6, "ratio": ranged_b / full_b,
         "limit": f"{HEADER_BYTES // 1024} KiB per object vs {total_bytes / len(refs) / 1024:.0f}"
                  f" KiB objects at {args.matrix}² (x4 more at 512²)"},
        {"metric": "header validation incl. GX suite (loopback)", "unit": "studies/s",
         "value": rate["gx/ranged"], "peer": "full download", "peer_value": rate["gx/full"],
         "ratio": rate["gx/ranged"] / rate["gx/full"],
         "limit": "the GX header suite and the parse, both CPU"},
    ]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "bench_headers.json").write_text(json.dumps(res, indent=2))
    print(f"{n} studies, {len(refs)} objects at {args.matrix}², {args.workers} concurrent GETs, "
          f"best of {args.repeats}; link: {link_txt} through a shaping proxy")
    print(f"{'mode':<8}{'loopback s':>11}{'studies/s':>10}{'link s':>9}{'studies/s':>10}"
          f"{'+GX s':>8}{'MB read':>9}{'GETs':>6}")
    for m in modes:
        print(f"{m:<8}{best['loopback/' + m]:>11.2f}{rate['loopback/' + m]:>10.1f}"
              f"{best['link/' + m]:>9.2f}{rate['link/' + m]:>10.1f}{best['gx/' + m]:>8.2f}"
              f"{counted[m][0] / 1e6:>9.1f}{counted[m][1]:>6}")
    print(f"parse only (in memory): {t_parse:.2f} s, {n / t_parse:.1f} studies/s")
    print(f"ranged/full over the link: {rate['link/ranged'] / rate['link/full']:.2f}x the "
          f"studies/s, {full_b / ranged_b:.1f}x fewer bytes")


if __name__ == "__main__":
    main()
