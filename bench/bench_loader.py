"""HU loader benchmark: bloodnet's ``load_series_files`` against SimpleITK, MONAI and naive pydicom.

Writes 40 uncompressed 512² slices for three vendor profiles, then times each reader on the same
files in the same run (median of N repeats, page cache warm) and checks that they agree on HU
(padding voxels excluded: only bloodnet applies PixelPaddingValue). Also compares ranged-GET
header validation with a full download, in bytes read and time.

Usage::

    .venv/bin/python bench/bench_loader.py [--repeats 9] [--slices 40] [--matrix 512]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from badcorpus import Profile, SeriesSpec, make_series, to_bytes

from bloodnet_ops.headers import read_headers
from bloodnet_ops.hu import load_series_files
from bloodnet_ops.storage import HEADER_BYTES, LocalSource

VARIANTS = {
    "GE unsigned12 -1024 pad": Profile(bits_stored=12, intercept=-1024.0, padding=0),
    "Siemens signed16 -1024": Profile(signed=True, bits_stored=16, intercept=-1024.0,
                                      padding=None, implicit=True, manufacturer="SIEMENS"),
    "Philips unsigned16 slope .5": Profile(bits_stored=16, slope=0.5, intercept=-1024.0,
                                           padding=None, manufacturer="Philips"),
}


def write_variant(folder: Path, profile: Profile, n: int, matrix: int) -> list[Path]:
    spec = SeriesSpec(n=n, matrix=matrix, pixel_mm=0.45, spacing=5.0, profile=profile)
    paths = []
    rng = np.random.default_rng(0)
    datasets = make_series("bench", f"bench-{profile.manufacturer}", spec, seed=1)
    for k, j in enumerate(rng.permutation(n)):  # shuffled order, random names
        p = folder / f"{k:03d}-{rng.bytes(4).hex()}.dcm"
        p.write_bytes(to_bytes(datasets[j]))
        paths.append(p)
    return paths


def timed(readers: dict[str, Callable[[], np.ndarray]], repeats: dict[str, int]
          ) -> dict[str, tuple[float, np.ndarray]]:
    """Median time and last output per reader. Readers take turns in every round, so a busy
    machine slows them all alike and the ratios stay fair."""
    outs = {name: fn() for name, fn in readers.items()}  # warm-up (imports, page cache)
    times: dict[str, list[float]] = {name: [] for name in readers}
    for r in range(max(repeats.values())):
        for name, fn in readers.items():
            if r >= repeats[name]:
                continue
            t = time.perf_counter()
            outs[name] = fn()
            times[name].append(time.perf_counter() - t)
    return {name: (statistics.median(times[name]), outs[name]) for name in readers}


def read_bloodnet(paths: list[Path]) -> np.ndarray:
    return load_series_files(paths).hu


def read_sitk(sorted_paths: list[str]) -> np.ndarray:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sorted_paths)
    return sitk.GetArrayFromImage(reader.Execute())  # (z, y, x), rescaled


def read_monai(folder: Path) -> np.ndarray:
    from monai.transforms import LoadImage

    img = LoadImage(image_only=True, reader="PydicomReader")(str(folder))
    arr = np.asarray(img)
    return np.transpose(arr, (2, 1, 0))  # MONAI gives (x, y, z)


def read_naive(paths: list[Path]) -> np.ndarray:
    import pydicom

    slices = []
    for p in paths:
        ds = pydicom.dcmread(p)
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        slices.append((float(ds.ImagePositionPatient[2]), hu.astype(np.float32)))
    slices.sort(key=lambda s: s[0])
    return np.stack([s[1] for s in slices])


def header_vs_full(folder: Path) -> tuple[float, float, int, int]:
    src = LocalSource(folder)
    refs = list(src.list())
    t = time.perf_counter()
    read_headers(src, refs, workers=4)
    t_hdr = time.perf_counter() - t
    t = time.perf_counter()
    full = [src.get(r.key) for r in refs]
    read_headers(src, refs, workers=4, header_bytes=max(len(b) for b in full))
    t_full = time.perf_counter() - t
    return t_hdr, t_full, min(HEADER_BYTES, max(r.size for r in refs)) * len(refs), sum(
        r.size for r in refs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--slices", type=int, default=40)
    ap.add_argument("--matrix", type=int, default=512)
    ap.add_argument("--skip-monai", action="store_true")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    import SimpleITK as sitk

    print(f"SimpleITK threads: {sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()} (default)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, profile in VARIANTS.items():
            folder = Path(tmp) / name.split()[0]
            folder.mkdir()
            paths = write_variant(folder, profile, args.slices, args.matrix)
            sorted_paths = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
            readers = {
                "bloodnet": lambda p=paths: read_bloodnet(p),
                "sitk": lambda p=sorted_paths: read_sitk(p),
                "naive": lambda p=paths: read_naive(p),
            }
            if not args.skip_monai:
                readers["monai"] = lambda f=folder: read_monai(f)
            reps = {k: args.repeats for k in readers} | {"monai": max(3, args.repeats // 3)}
            res = timed(readers, reps)
            t_bn, v_bn = res["bloodnet"]
            t_sitk, v_sitk = res["sitk"]
            t_naive, v_naive = res["naive"]
            t_monai, v_monai = res.get("monai", (float("nan"), None))
            keep = v_bn > -1024  # padding and clipped air are -1024 in ours, raw in theirs
            agree = {
                "sitk": _max_diff(v_bn, v_sitk, keep),
                "monai": _max_diff(v_bn, v_monai, keep) if v_monai is not None else None,
                "naive": _max_diff(v_bn, v_naive, keep),
            }
            rows.append((name, t_bn, t_sitk, t_monai, t_naive, agree))
        hdr = header_vs_full(Path(tmp) / "GE")

    print(f"\n{args.slices} slices of {args.matrix}², uncompressed, median of {args.repeats} "
          "(MONAI: of max(3, repeats/3)); times in ms")
    print(f"{'variant':<30}{'bloodnet':>9}{'SimpleITK':>10}{'MONAI':>8}{'pydicom':>9}"
          f"{'bn/SITK':>9}{'bn/MONAI':>9}{'bn/naive':>9}  max|ΔHU| sitk/monai/naive")
    for name, t_bn, t_sitk, t_monai, t_naive, agree in rows:
        print(f"{name:<30}{t_bn * 1e3:>9.1f}{t_sitk * 1e3:>10.1f}{t_monai * 1e3:>8.1f}"
              f"{t_naive * 1e3:>9.1f}{t_bn / t_sitk:>9.2f}{t_bn / t_monai:>9.2f}"
              f"{t_bn / t_naive:>9.2f}  {agree['sitk']}/{agree['monai']}/{agree['naive']}")
    t_hdr, t_full, b_hdr, b_full = hdr
    print(f"\nheader validation of {args.slices} objects: ranged GET {b_hdr / 1e6:.2f} MB in "
          f"{t_hdr * 1e3:.0f} ms vs full objects {b_full / 1e6:.2f} MB in {t_full * 1e3:.0f} ms "
          f"({b_full / b_hdr:.0f}x the bytes)")


def _max_diff(ours: np.ndarray, theirs: np.ndarray | None, keep: np.ndarray) -> str:
    if theirs is None:
        return "-"
    if theirs.shape != ours.shape:
        return f"shape {theirs.shape}"
    theirs = theirs.astype(np.float32)
    diff = float(np.abs(ours[keep] - theirs[keep]).max())
    flipped = float(np.abs(ours[keep] - theirs[::-1][keep]).max())
    return f"{diff:g}" if diff <= flipped else f"{flipped:g} (z reversed)"


if __name__ == "__main__":
    main()
