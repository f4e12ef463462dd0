"""Key images: where the model sees blood, as a reviewer looks at it.

One PNG per scored study: the slices with the most predicted blood (up to three), each in the
brain window (40/80) twice, plain and with the blood mask outlined, under a strip with the
probability, the flag and the volume. ``bloodnet explain`` writes them for failure analysis;
the review pages show the same picture (one function, so both show the same thing).

No PHI: nothing but the model's numbers and the slice index is drawn, and the PNG carries no
text chunks (Pillow writes none unless given ``pnginfo``).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

#: Brain window (centre, width) in HU.
BRAIN_WINDOW = (40.0, 80.0)
#: A voxel is drawn as blood at this probability (the volume uses the same cut).
MASK_PROB = 0.5
OUTLINE_RGB = (255, 40, 40)
TILE = 256


@dataclass(frozen=True, slots=True)
class KeySlice:
    index: int  #: slice index on the series' (ascending z) grid
    blood_voxels: int
    max_prob: float


def key_slices(blood: np.ndarray, *, n: int = 3) -> list[KeySlice]:
    """The ``n`` slices with the most voxels at or above :data:`MASK_PROB` (by the highest
    probability where no slice has any), in slice order."""
    z = blood.shape[0]
    flat = blood.reshape(z, -1)
    counts = (flat >= MASK_PROB).sum(axis=1)
    peak = flat.max(axis=1) if flat.size else np.zeros(z)
    order = np.lexsort((-peak, -counts))[:n] if counts.any() else np.argsort(-peak)[:1]
    return sorted((KeySlice(int(k), int(counts[k]), float(peak[k])) for k in order),
                  key=lambda s: s.index)


def window_u8(hu: np.ndarray, centre: float, width: float) -> np.ndarray:
    lo = centre - width / 2
    return (np.clip((hu - lo) / width, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def outline(mask: np.ndarray) -> np.ndarray:
    """The one-pixel inner edge of a 2D mask."""
    inner = mask.copy()
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


def _resize(a: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of a 2D array to size × size (keeps a mask a mask)."""
    iy = (np.arange(size) * a.shape[0] / size).astype(int)
    ix = (np.arange(size) * a.shape[1] / size).astype(int)
    return a[iy][:, ix]


def slice_pair(hu2d: np.ndarray, blood2d: np.ndarray, *, tile: int = TILE) -> np.ndarray:
    """(tile, 2·tile, 3) uint8: the slice in the brain window, plain and with the outline."""
    grey = _resize(window_u8(hu2d, *BRAIN_WINDOW), tile)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    marked = rgb.copy()
    edge = outline(_resize(blood2d >= MASK_PROB, tile))
    marked[edge] = OUTLINE_RGB
    return np.concatenate([rgb, marked], axis=1)


def render(hu: np.ndarray, blood: np.ndarray, *, probability: float, positive: bool,
           volume_ml: float, n: int = 3, tile: int = TILE) -> bytes:
    """The key image of one study as PNG bytes. ``hu`` and ``blood`` are (z, y, x) on the same
    grid, slices in ascending z."""
    from PIL import Image, ImageDraw

    if hu.shape != blood.shape:
        raise ValueError(f"HU {hu.shape} and blood map {blood.shape} differ in shape")
    picks = key_slices(blood, n=n)
    rows = [slice_pair(hu[k.index], blood[k.index], tile=tile) for k in picks]
    header = 22
    body = np.concatenate(rows, axis=0)
    img = Image.new("RGB", (body.shape[1], body.shape[0] + header + 16 * len(picks)), "black")
    img.paste(Image.fromarray(body), (0, header))
    d = ImageDraw.Draw(img)
    flag = "ICH flagged" if positive else "not flagged"
    d.text((6, 5), f"p = {probability:.3f}   {flag}   volume {volume_ml:.1f} mL",
           fill=(255, 230, 0))
    y = header + body.shape[0]
    for k in picks:
        d.text((6, y + 2), f"slice {k.index + 1}/{hu.shape[0]}: {k.blood_voxels} voxels "
               f">= {MASK_PROB}, max {k.max_prob:.2f}", fill=(0, 220, 0))
        y += 16
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()
