"""What the HU suite checks, measured on one loaded volume (``bloodnet_ops.hu`` loads it)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bloodnet_ops.hu import PADDING_HU, HUVolume


@dataclass(slots=True)
class HUMeasures:
    """What the HU suite checks, measured on one volume (non-padding voxels only).

    Attributes (HU unless noted): ``air_peak`` histogram mode of values below -500, or ``None``
    when padding hides all air; ``dark_level`` the 0.5th percentile (where air should be when no
    air peak exists); ``brain_median`` median of tissue (> -300 HU) on the central slices;
    ``tissue_level`` histogram mode of the central slices between 600 and 1,400 HU above the
    darkest voxels (0.1th percentile), i.e. brain wherever air is, so a shifted intercept moves
    it even when the median of ``> -300 HU`` is diluted by air; ``outside_fraction`` share of
    voxels outside [-1150, 4000]; ``lung_fraction`` share of voxels in
    [-900, -400] on the central slices (lungs; a head has little); ``padding_fraction`` share of
    padded (declared or constant-fill) voxels.
    """

    air_peak: float | None
    dark_level: float
    brain_median: float | None
    tissue_level: float | None
    outside_fraction: float
    lung_fraction: float
    padding_fraction: float
    p01: float
    p99: float
    min: float
    max: float
    mean: float
    std: float


#: Physical HU range; beyond it (outside the padding) a voxel is not tissue, air or bone.
PHYSICAL_MIN_HU = -1150.0
PHYSICAL_MAX_HU = 4000.0


def measure(volume: HUVolume, *, stride: int = 2) -> HUMeasures:
    """HU statistics of a volume, on an in-plane subsample (every ``stride``-th row and column)."""
    hu = volume.hu[:, ::stride, ::stride]
    pad = volume.padding[:, ::stride, ::stride] if volume.padding is not None else None
    valid = ~pad if pad is not None else np.ones(hu.shape, bool)
    # Undeclared padding: many scanners fill outside the scan circle with one constant below air
    # (-2000, -3024, -2048 HU) without PixelPaddingValue. A constant minimum below -1100 HU
    # covering >= 0.1% of voxels is that fill (noisy air never repeats one value so often).
    lowest = float(hu[valid].min()) if valid.any() else PADDING_HU
    fill = hu == np.float32(lowest)
    if (lowest <= -1100.0 and fill.mean() >= 0.001) or _fills_outside_circle(fill, valid):
        valid &= ~fill
    values = hu[valid]
    n_total = hu.size
    padding_fraction = 1.0 - values.size / n_total if n_total else 0.0
    if values.size == 0:
        return HUMeasures(None, math.nan, None, None, 1.0, 0.0, padding_fraction,
                          *([math.nan] * 6))
    p01, p99, dark = np.percentile(values, [1, 99, 0.5])
    airish = values[values < -500.0]
    air_peak: float | None = None
    if airish.size >= max(50, 0.002 * values.size):
        counts, edges = np.histogram(airish, bins=np.arange(-1300.0, -495.0, 10.0))
        if counts.sum() > 0:
            k = int(np.argmax(counts))
            air_peak = float((edges[k] + edges[k + 1]) / 2)
        else:  # all below -1300: report where they are
            air_peak = float(np.median(airish))
    z = hu.shape[0]
    mid = slice(int(z * 0.3), max(int(z * 0.3) + 1, math.ceil(z * 0.7)))
    central, central_valid = hu[mid], valid[mid]
    tissue = central[central_valid & (central > -300.0)]
    brain_median = float(np.median(tissue)) if tissue.size >= 50 else None
    tissue_level = _tissue_mode(central[central_valid], float(np.percentile(values, 0.1)))
    cv = central[central_valid]
    lung = float(((cv >= -900.0) & (cv <= -400.0)).mean()) if cv.size else 0.0
    outside = float(((values < PHYSICAL_MIN_HU) | (values > PHYSICAL_MAX_HU)).mean())
    return HUMeasures(
        air_peak=air_peak,
        dark_level=float(dark),
        brain_median=brain_median,
        tissue_level=tissue_level,
        outside_fraction=outside,
        lung_fraction=lung,
        padding_fraction=float(padding_fraction),
        p01=float(p01),
        p99=float(p99),
        min=float(values.min()),
        max=float(values.max()),
        mean=float(values.mean(dtype=np.float64)),
        std=float(values.std(dtype=np.float64)),
    )


def _fills_outside_circle(fill: np.ndarray, valid: np.ndarray) -> bool:
    """Whether the lowest value is a fill: one constant on most voxels outside the scan circle.

    Reconstruction leaves the corners outside the circle empty; a scanner that does not declare
    PixelPaddingValue writes one constant there, whatever it reads as after rescaling (with a
    wrong intercept, -2048 stored can read -1024 and pass for air). Noisy air never repeats one
    value on half the corners.
    """
    _, rows, cols = fill.shape
    yy, xx = np.ogrid[:rows, :cols]
    r = min(rows, cols) / 2
    corners = ((yy - (rows - 1) / 2) ** 2 + (xx - (cols - 1) / 2) ** 2) > (r * 1.02) ** 2
    n = int((valid & corners).sum())
    return n >= 100 and int((fill & valid & corners).sum()) >= 0.5 * n


def _tissue_mode(central: np.ndarray, dark: float) -> float | None:
    """Mode of the soft tissue, 600-1,400 HU above the darkest voxels (see :class:`HUMeasures`)."""
    window = central[(central > dark + 600.0) & (central < dark + 1400.0)]
    if window.size < 50:
        return None
    counts, edges = np.histogram(window, bins=np.arange(dark + 600.0, dark + 1404.0, 4.0))
    smooth = np.convolve(counts, np.ones(5), mode="same")
    k = int(np.argmax(smooth))
    return float((edges[k] + edges[k + 1]) / 2)
