"""Geometry normalisation before windowing: thick slabs along z, a head crop, a fixed matrix.

Training and inference call the same :func:`prepare_volume`, so the network sees the same thing
whatever the vendor's matrix, field of view or slice thickness:

1. **Slabs along z.** Slices thinner than ``SLAB_MM * 0.75`` are averaged in groups to about
   ``SLAB_MM`` (a thick reconstruction, like the 5 mm series radiologists read). Thin slices are
   noisy; thick slabs make noise and partial-volume look alike across sites.
2. **Head crop.** The bounding box of the head (largest connected soft-tissue component of the
   maximum projection, so a table or headrest apart from the head is ignored), made square, with
   a margin. FOV differences between sites disappear.
3. **Resample** the crop in-plane to ``size × size`` (area averaging when shrinking).

The record keeps what is needed to map results back to the native grid and to turn voxel
counts into millilitres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

#: Target slab thickness along z in mm (the usual thick head-CT reconstruction).
SLAB_MM = 5.0
#: HU above which a voxel counts as head (soft tissue, bone), below = air, padding, foam pads.
HEAD_HU = -300.0
#: Fraction of the crop side added as margin on each side.
CROP_MARGIN = 0.04
#: HU used outside the native image when the square crop overhangs it.
AIR_HU = -1024.0


@dataclass(slots=True)
class PreparedVolume:
    """A study volume ready for windowing.

    Attributes
    ----------
    hu : array (z', size, size) float32
        HU on the slab grid, cropped and resampled.
    groups : array (z',) of int
        Native slices per slab (1 when the series was already thick).
    crop : (y0, x0, side)
        Square crop on the native grid, in native pixels; may overhang the image.
    native_shape : (z, y, x) of the input volume
    voxel_mm : (dz', dy', dx') in mm on the prepared grid
    """

    hu: np.ndarray
    groups: np.ndarray
    crop: tuple[int, int, int]
    native_shape: tuple[int, int, int]
    voxel_mm: tuple[float, float, float]

    @property
    def voxel_ml(self) -> float:
        """Volume of one prepared voxel in mL (mm³ / 1000)."""
        dz, dy, dx = self.voxel_mm
        return dz * dy * dx / 1000.0


def slab_groups(n: int, dz: float, *, slab_mm: float = SLAB_MM) -> np.ndarray:
    """Sizes of consecutive groups of native slices that make slabs of about ``slab_mm``."""
    if n <= 0:
        raise ValueError(f"n must be positive; got {n}")
    g = 1 if dz >= 0.75 * slab_mm or dz <= 0 else max(1, round(slab_mm / dz))
    sizes = [g] * (n // g)
    if n % g:
        sizes.append(n % g)
    return np.asarray(sizes, dtype=np.int64)


def slab_average(volume: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Mean of each group of consecutive slices: (z, ...) → (len(groups), ...)."""
    if int(groups.sum()) != volume.shape[0]:
        raise ValueError(f"groups sum to {int(groups.sum())}, volume has {volume.shape[0]} slices")
    if np.all(groups == 1):
        return volume
    starts = np.concatenate([[0], np.cumsum(groups)[:-1]])
    return np.add.reduceat(volume.astype(np.float32), starts, axis=0) / groups.reshape(
        -1, *([1] * (volume.ndim - 1))
    )


def head_box(hu: np.ndarray, *, margin: float = CROP_MARGIN) -> tuple[int, int, int]:
    """Square crop (y0, x0, side) around the head, from a volume (z, y, x) in HU."""
    proj = hu.max(axis=0) > HEAD_HU
    proj = ndimage.binary_opening(proj, iterations=2)
    labels, n = ndimage.label(proj)
    ny, nx = hu.shape[1:]
    if n == 0:
        side = max(ny, nx)
        return (ny - side) // 2, (nx - side) // 2, side
    sizes = ndimage.sum_labels(proj, labels, index=np.arange(1, n + 1))
    ys, xs = np.nonzero(labels == 1 + int(np.argmax(sizes)))
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    side = round(max(y1 - y0, x1 - x0) * (1 + 2 * margin))
    side = max(side, 16)
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    return round(cy - side / 2), round(cx - side / 2), side


def crop_square(volume: np.ndarray, box: tuple[int, int, int], fill: float) -> np.ndarray:
    """Cut the square ``box`` out of (z, y, x), filling any overhang with ``fill``."""
    y0, x0, side = box
    z, ny, nx = volume.shape
    out = np.full((z, side, side), fill, dtype=volume.dtype)
    sy0, sx0 = max(y0, 0), max(x0, 0)
    sy1, sx1 = min(y0 + side, ny), min(x0 + side, nx)
    if sy1 > sy0 and sx1 > sx0:
        out[:, sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = volume[:, sy0:sy1, sx0:sx1]
    return out


def resize_stack(stack: np.ndarray, size: int, *, mode: str = "area") -> np.ndarray:
    """Resize (z, s, s) to (z, size, size); ``area`` when shrinking, bilinear when growing,
    ``nearest`` for label maps."""
    t = torch.from_numpy(np.ascontiguousarray(stack, dtype=np.float32))[:, None]
    if mode == "nearest":
        out = F.interpolate(t, size=(size, size), mode="nearest")
    elif t.shape[-1] >= size:
        out = F.interpolate(t, size=(size, size), mode="area")
    else:
        out = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    return out[:, 0].numpy()


def prepare_volume(hu: np.ndarray, spacing: tuple[float, float, float], *, size: int,
                   slab_mm: float = SLAB_MM) -> PreparedVolume:
    """Slab, crop and resample one volume (z, y, x) in HU with ``spacing`` (dz, dy, dx) mm."""
    if hu.ndim != 3:
        raise ValueError(f"hu must have shape (z, y, x); got {hu.shape}")
    dz, dy, dx = (float(s) for s in spacing)
    groups = slab_groups(hu.shape[0], dz, slab_mm=slab_mm)
    box = head_box(hu)
    cropped = crop_square(hu.astype(np.float32, copy=False), box, AIR_HU)
    slabs = slab_average(cropped, groups)
    out = resize_stack(slabs, size).astype(np.float32)
    scale = box[2] / size
    dz_eff = dz * float(groups.max())
    return PreparedVolume(out, groups, box, tuple(hu.shape), (dz_eff, dy * scale, dx * scale))


def prepare_mask(mask: np.ndarray, prep: PreparedVolume, size: int) -> np.ndarray:
    """The label map (z, y, x) (0 = background, 1..5 = subtype) on the prepared grid.

    A prepared voxel is blood when at least half of its native voxels are (the same partial-volume
    rule the slab average applies to HU); its subtype is the largest code among them.
    """
    if tuple(mask.shape) != prep.native_shape:
        raise ValueError(f"mask shape {mask.shape} != volume shape {prep.native_shape}")
    cropped = crop_square(mask.astype(np.uint8), prep.crop, 0)
    blood = slab_average((cropped > 0).astype(np.float32), prep.groups)
    blood = resize_stack(blood, size) >= 0.5
    starts = np.concatenate([[0], np.cumsum(prep.groups)[:-1]])
    code = np.maximum.reduceat(cropped, starts, axis=0)
    code = resize_stack(code.astype(np.float32), size, mode="nearest").astype(np.uint8)
    # where blood survives but nearest sampling missed the lesion, default to the dominant code
    fallback = int(np.bincount(cropped[cropped > 0], minlength=6).argmax()) if blood.any() else 0
    code = np.where(code > 0, code, fallback)
    return np.where(blood, code, 0).astype(np.uint8)


def to_native(prob: np.ndarray, prep: PreparedVolume) -> np.ndarray:
    """Map a map (z', size, size) on the prepared grid back to the native grid (z, y, x)."""
    z, ny, nx = prep.native_shape
    y0, x0, side = prep.crop
    t = torch.from_numpy(np.ascontiguousarray(prob, dtype=np.float32))[:, None]
    up = F.interpolate(t, size=(side, side), mode="bilinear", align_corners=False)[:, 0].numpy()
    up = np.repeat(up, prep.groups, axis=0)
    out = np.zeros((z, ny, nx), dtype=np.float32)
    sy0, sx0 = max(y0, 0), max(x0, 0)
    sy1, sx1 = min(y0 + side, ny), min(x0 + side, nx)
    if sy1 > sy0 and sx1 > sx0:
        out[:, sy0:sy1, sx0:sx1] = up[:, sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0]
    return out
