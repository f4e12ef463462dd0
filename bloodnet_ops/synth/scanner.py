"""What the scanner adds to the anatomy: slab averaging, blur (kernel), correlated noise, beam
hardening streaks, the reconstruction circle, the head holder, and the lateral localizer."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from bloodnet_ops.synth.headparams import AnatomyParams


def blur(hu: np.ndarray, sigma_mm: float, pixel_mm: float) -> np.ndarray:
    """In-plane Gaussian PSF (partial volume along x/y)."""
    s = sigma_mm / pixel_mm
    return ndimage.gaussian_filter(hu, (0, s, s), mode="nearest", truncate=3.0)


def sharpen(hu: np.ndarray, pixel_mm: float, amount: float) -> np.ndarray:
    """A bone kernel: unsharp masking, which also gives the typical overshoot at bone edges."""
    low = ndimage.gaussian_filter(hu, (0, 0.9 / pixel_mm, 0.9 / pixel_mm), truncate=3.0)
    return hu + np.float32(amount) * (hu - low)


def correlate(white: np.ndarray, corr_px: float) -> np.ndarray:
    """Unit-variance noise with the short in-plane correlation of filtered back-projection, from
    white noise."""
    n = ndimage.gaussian_filter(white, (0, corr_px, corr_px), truncate=3.0)
    n *= np.float32(1.0 / max(float(n[0].std()), 1e-6))
    return n


#: Reference acquisition of the vendor noise ranges: 250 mA at 120 kVp, 5 mm slices.
_REF_MA, _REF_KVP, _REF_THICKNESS = 250.0, 120.0, 5.0


def dose_noise(sigma_ref: float, kvp: float, tube_ma: float, thickness: float) -> float:
    """Quantum noise (HU sd) of an acquisition: sd ~ 1/sqrt(mA * thickness), and about
    (120/kVp)^1.5 with tube voltage; capped at 18 HU (a very thin, low-dose slice)."""
    dose = (tube_ma / _REF_MA) * (thickness / _REF_THICKNESS) * (kvp / _REF_KVP) ** 3
    return float(min(18.0, sigma_ref / np.sqrt(max(dose, 1e-3))))


def nps_noise(white: np.ndarray, rng: np.random.Generator, pixel_mm: float) -> np.ndarray:
    """Unit-variance noise with the band-pass power spectrum of filtered back-projection: a
    smoothing kernel (``fine``) minus a share of a coarser one, so the grain peaks at a kernel-
    dependent spatial frequency (soft kernels coarse and blotchy, sharper ones fine)."""
    fine = rng.uniform(0.35, 0.9) / pixel_mm
    coarse = fine * rng.uniform(2.0, 4.0)
    k = np.float32(rng.uniform(0.0, 0.8))
    n = ndimage.gaussian_filter(white, (0, fine, fine), truncate=3.0)
    if k > 0:
        n -= k * ndimage.gaussian_filter(n, (0, coarse, coarse), truncate=2.5)
    n *= np.float32(1.0 / max(float(n[0].std()), 1e-6))
    return n


def rings(rng: np.random.Generator, shape2d: tuple[int, int], centre_px: tuple[float, float],
          pixel_mm: float) -> np.ndarray:
    """Ring artefacts of a miscalibrated detector channel: 1-3 concentric rings about the
    reconstruction centre, +/-4-15 HU, 0.5-1.5 mm wide (an additive HU image)."""
    ny, nx = shape2d
    yy, xx = np.ogrid[0:ny, 0:nx]
    r = np.hypot(yy - centre_px[0], xx - centre_px[1]).astype(np.float32)
    out = np.zeros(shape2d, dtype=np.float32)
    for _ in range(int(rng.integers(1, 4))):
        r0 = rng.uniform(10.0, 90.0) / pixel_mm
        width = rng.uniform(0.5, 1.5) / pixel_mm
        amp = rng.uniform(4.0, 15.0) * (1 if rng.random() < 0.6 else -1)
        out += np.float32(amp) * np.exp(-0.5 * ((r - r0) / width) ** 2)
    return out


def motion(rng: np.random.Generator, hu: np.ndarray, pixel_mm: float) -> None:
    """Patient motion during a few consecutive slices, in place: a faint ghost of the head
    displaced by 1-4 mm (doubled skull edges, bright lines inside the brain) and streaks."""
    nz = hu.shape[0]
    n = int(rng.integers(1, max(2, min(6, nz // 4))))
    k0 = int(rng.integers(0, max(1, nz - n)))
    for k in range(k0, min(nz, k0 + n)):
        dy, dx = (rng.uniform(-4.0, 4.0, 2) / pixel_mm).round().astype(int)
        alpha = np.float32(rng.uniform(0.05, 0.2))
        ghost = np.roll(hu[k], (int(dy), int(dx)), axis=(0, 1))
        inside = hu[k] > -300
        hu[k] += alpha * (ghost - hu[k]) * inside


def streaks(
    rng: np.random.Generator,
    shape2d: tuple[int, int],
    ends: tuple[tuple[float, float], tuple[float, float]],
    amplitude: float,
    width_px: float,
    n_radial: int,
) -> np.ndarray:
    """One slice of beam hardening: a dark band between two dense structures (the
    "Hounsfield bar" between the petrous bones) plus thin bright/dark streaks through them.

    ``ends`` are (row, col) pixel positions. Returns an additive HU image.
    """
    ny, nx = shape2d
    yy = np.arange(ny, dtype=np.float32)[:, None]
    xx = np.arange(nx, dtype=np.float32)[None, :]
    (r0, c0), (r1, c1) = ends
    out = np.zeros(shape2d, dtype=np.float32)
    dr, dc = r1 - r0, c1 - c0
    ln2 = dr * dr + dc * dc
    if ln2 > 1:
        t = np.clip(((yy - r0) * dr + (xx - c0) * dc) / ln2, 0, 1)
        d = np.hypot(yy - (r0 + t * dr), xx - (c0 + t * dc))
        out -= np.float32(amplitude) * np.exp(-0.5 * (d / width_px) ** 2)
    for _ in range(n_radial):
        r, c = (r0, c0) if rng.random() < 0.5 else (r1, c1)
        ang = rng.uniform(0, np.pi)
        d = np.abs((yy - r) * np.cos(ang) - (xx - c) * np.sin(ang))
        along = np.abs((yy - r) * np.sin(ang) + (xx - c) * np.cos(ang))
        sign = 1.0 if rng.random() < 0.4 else -1.0
        amp = sign * amplitude * rng.uniform(0.3, 0.8)
        out += np.float32(amp) * np.exp(-0.5 * (d / 0.8) ** 2) * np.exp(-along / (0.35 * nx))
    return out


def recon_circle(shape2d: tuple[int, int], centre_px: tuple[float, float],
                 radius_px: float) -> np.ndarray:
    """True outside the reconstruction circle (where scanners write padding)."""
    ny, nx = shape2d
    yy, xx = np.ogrid[0:ny, 0:nx]
    return (yy - centre_px[0]) ** 2 + (xx - centre_px[1]) ** 2 > radius_px**2


def head_holder(
    y: np.ndarray, x: np.ndarray, centre: tuple[float, float], semi_axes: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """The carbon/plastic cradle under the occiput: an elliptic arc just behind the head
    (patient +y), and the foam cushion inside it. Returns (holder, cushion) masks (ny, nx)."""
    yy, xx = y[:, None] - centre[1], x[None, :] - centre[0]
    ax, ay = semi_axes
    r = np.sqrt((xx / ax) ** 2 + (yy / ay) ** 2)  # 1 on the holder's inner surface
    behind = yy > 0.25 * ay
    shell = behind & (r >= 1.0) & (r < 1.0 + 2.5 / ay)
    cushion = behind & (r < 1.0) & (r > 1.0 - 9.0 / ay)
    return shell, cushion


def lateral_localizer(
    p: AnatomyParams,
    head_centre: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """A lateral scout (rows = z from top to bottom, columns = y) in pseudo-HU, from chord
    lengths through the head's shells plus a neck with a spine. Cheap, and enough to look like a
    topogram."""
    yy = (y[None, :] - head_centre[1]).astype(np.float32)
    zz = (z[:, None] - head_centre[2]).astype(np.float32)

    def chord(a: float, b: float, c: float) -> np.ndarray:
        cc = np.where(zz > 0, c, c * p.c_low / p.c)
        q = 1 - (yy / b) ** 2 - (zz / cc) ** 2
        return 2 * a * np.sqrt(np.clip(q, 0, None))

    sk, sc = p.skull_t, p.skull_t + p.scalp_t
    inner = chord(p.a, p.b, p.c)
    bone_outer = chord(p.a + sk, p.b + sk, p.c + sk)
    outer = chord(p.a + sc, p.b + sc, p.c + sc)
    neck = (zz < -0.55 * p.c_low) & (np.abs(yy - 0.15 * p.b) < 0.55 * p.b)
    neck_len = np.where(neck, 2 * 0.6 * p.a, 0.0)
    spine = (zz < -0.5 * p.c_low) & (np.abs(yy - 0.28 * p.b) < 9)
    path = 0.0192 * inner + 0.05 * (bone_outer - inner) + 0.02 * (outer - bone_outer)
    path = np.maximum(path, 0.02 * neck_len + 0.9 * spine)
    img = -1024.0 + 900.0 * (1 - np.exp(-path / 2.5)) * 2.4
    img += rng.normal(0, 6, size=img.shape)
    return img.astype(np.float32)
