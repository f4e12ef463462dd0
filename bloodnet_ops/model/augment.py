"""Training augmentation in HU, before windowing, on whole batches (torch, vectorised).

What varies between scanners and sites is what we randomise, so the model cannot lean on any one
vendor's look:

- geometry: left-right flips, small rotations and scales, shifts (a random crop of the head box);
- calibration: a global HU offset (intercept errors, ±20 HU) and a small gain (slope errors);
- reconstruction kernel: Gaussian blur (soft kernels) or unsharp masking (sharp kernels);
- dose: white and spatially correlated noise of random strength;
- slice thickness: partial-volume mixing of the slice with its neighbours;
- lesion contrast: blood a little denser or fainter (older or anaemic bleeds, other phantoms);
- lesion shape: random blobs of blood density pasted into blood-free brain (with their mask), so
  the network learns "hyperdense collection" rather than the shapes of one generator;
- dense mimics: blobs of calcification density (110-700 HU) pasted *without* a label, so "denser
  than brain" alone never means blood (a large choroid-plexus or falx calcification on another
  generator was the worst false alarm of a model trained without them).

Input and output: ``hu`` (B, 3, S, S) float32 (below, slice, above) and ``mask`` (B, S, S) uint8.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bloodnet_ops.model.prep import AIR_HU


@dataclass(frozen=True, slots=True)
class AugmentConfig:
    """Ranges of the random transforms (each drawn per sample)."""

    flip_p: float = 0.5
    rotate_deg: float = 15.0
    scale: tuple[float, float] = (0.85, 1.15)
    shift: float = 0.08  #: fraction of the image side
    hu_offset: float = 20.0  #: ± HU
    hu_gain: float = 0.12  #: ± fraction, contrast scaled about ``GAIN_CENTRE_HU``
    noise_sd: tuple[float, float] = (0.0, 9.0)  #: HU, white noise
    corr_noise_p: float = 0.4
    blur_p: float = 0.3
    blur_sigma: tuple[float, float] = (0.4, 1.3)  #: pixels
    sharpen_p: float = 0.3
    sharpen_amount: tuple[float, float] = (0.2, 0.8)
    partial_volume_p: float = 0.3
    lesion_hu: tuple[float, float] = (-8.0, 12.0)
    lesion_p: float = 0.3
    paste_p: float = 0.25  #: share of blood-free samples that get a pasted blob
    paste_hu: tuple[float, float] = (55.0, 90.0)
    paste_radius: tuple[float, float] = (2.0, 14.0)  #: pixels
    calc_p: float = 0.2  #: share of samples that get a calcification-density blob (no label)
    calc_hu: tuple[float, float] = (110.0, 700.0)
    calc_radius: tuple[float, float] = (1.0, 9.0)  #: pixels


#: Contrast changes scale HU about this value (grey/white matter), not about 0 HU.
GAIN_CENTRE_HU = 30.0
#: HU range where a pasted blob may sit (brain parenchyma, not CSF, bone or air).
BRAIN_HU = (15.0, 50.0)
#: Label code of a pasted blob (intraparenchymal: a collection within brain tissue).
PASTE_CODE = 4


def _gaussian_kernel(sigma: float, device: torch.device) -> torch.Tensor:
    r = max(1, math.ceil(2.5 * sigma))
    x = torch.arange(-r, r + 1, device=device, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W) with ``sigma`` pixels (reflect padding)."""
    if sigma <= 0:
        return x
    k = _gaussian_kernel(sigma, x.device)
    c = x.shape[1]
    r = k.numel() // 2
    x = F.pad(x, (r, r, r, r), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _blob(size: int, radius: float, g: torch.Generator) -> torch.Tensor:
    """A random smooth blob (size, size) in [0, 1]: thresholded sum of a few Gaussians, with an
    irregular outline and random elongation."""
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32),
                            torch.arange(size, dtype=torch.float32), indexing="ij")
    c = size / 2
    field = torch.zeros(size, size)
    u = torch.rand(4, 5, generator=g)
    for k in range(1 + int(u[0, 0] * 4)):
        cy, cx = c + (u[k, 1] - 0.5) * radius, c + (u[k, 2] - 0.5) * radius
        ry, rx = radius * (0.4 + u[k, 3]), radius * (0.4 + u[k, 4] * 0.8)
        field += torch.exp(-(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2))
    return ((field - 0.5) * 4).clamp(0, 1)


def paste_blob(x: torch.Tensor, mask: torch.Tensor, cfg: AugmentConfig, g: torch.Generator, *,
               dense: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste one blood-density blob into brain of (1, 3, S, S) HU; returns new (x, mask (S, S)).

    ``dense=True`` pastes a calcification-density blob instead, labelled background."""
    hu_range, radius_range = ((cfg.calc_hu, cfg.calc_radius) if dense
                              else (cfg.paste_hu, cfg.paste_radius))
    code = 0 if dense else PASTE_CODE
    s = x.shape[-1]
    centre = x[0, 1]
    brain = (centre > BRAIN_HU[0]) & (centre < BRAIN_HU[1])
    ys, xs = torch.nonzero(brain, as_tuple=True)
    if ys.numel() < 50:
        return x, mask
    u = torch.rand(4, generator=g)
    i = int(u[0] * ys.numel())
    radius = radius_range[0] + float(u[1]) * (radius_range[1] - radius_range[0])
    box = int(radius * 3) | 1
    blob = _blob(box, radius, g)
    full = torch.zeros(s, s)
    y0, x0 = int(ys[i]) - box // 2, int(xs[i]) - box // 2
    sy0, sx0, sy1, sx1 = max(y0, 0), max(x0, 0), min(y0 + box, s), min(x0 + box, s)
    full[sy0:sy1, sx0:sx1] = blob[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0]
    full = full * brain.float()  # blood stays inside the brain
    target = hu_range[0] + float(u[2]) * (hu_range[1] - hu_range[0])
    # raise the local tissue by a constant: the image's own noise texture stays in the blob
    delta = target - float(centre[brain].median())
    out = x.clone()
    out[0, 1] = centre + full * delta
    for k, keep in ((0, u[3] < 0.5), (2, u[3] < 0.75)):  # often continues on a neighbour
        if keep:
            shrunk = (full - 0.3).clamp(0, 1) / 0.7
            out[0, k] = x[0, k] + shrunk * delta * brain.float()
    new_mask = torch.where(full >= 0.5, torch.tensor(code, dtype=mask.dtype), mask)
    return out, new_mask


def _affine(hu: torch.Tensor, mask: torch.Tensor, cfg: AugmentConfig, g: torch.Generator
            ) -> tuple[torch.Tensor, torch.Tensor]:
    b = hu.shape[0]
    u = torch.rand(b, 5, generator=g)
    ang = (u[:, 0] * 2 - 1) * math.radians(cfg.rotate_deg)
    scale = cfg.scale[0] + u[:, 1] * (cfg.scale[1] - cfg.scale[0])
    flip = torch.where(u[:, 2] < cfg.flip_p, -1.0, 1.0)
    tx, ty = (u[:, 3] * 2 - 1) * cfg.shift * 2, (u[:, 4] * 2 - 1) * cfg.shift * 2
    cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
    theta = torch.stack([
        torch.stack([cos * flip, -sin, tx], dim=1),
        torch.stack([sin * flip, cos, ty], dim=1),
    ], dim=1).to(hu.device)
    grid = F.affine_grid(theta, list(hu.shape), align_corners=False)
    out = F.grid_sample(hu - AIR_HU, grid, mode="bilinear", padding_mode="zeros",
                        align_corners=False) + AIR_HU
    m = F.grid_sample(mask[:, None].float(), grid, mode="nearest", padding_mode="zeros",
                      align_corners=False)[:, 0]
    return out, m.round().to(torch.uint8)


def augment(hu: torch.Tensor, mask: torch.Tensor, *, cfg: AugmentConfig | None = None,
            generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Randomly transform a batch; returns new (hu, mask) tensors of the same shapes."""
    cfg = cfg or AugmentConfig()
    g = generator or torch.Generator().manual_seed(0)
    if hu.ndim != 4 or hu.shape[1] != 3 or mask.shape != (hu.shape[0], *hu.shape[2:]):
        raise ValueError(f"need hu (B, 3, S, S) and mask (B, S, S); got {tuple(hu.shape)}, "
                         f"{tuple(mask.shape)}")
    hu, mask = _affine(hu.float(), mask, cfg, g)
    mask = mask.clone()
    b = hu.shape[0]
    r = torch.rand(b, 13, generator=g)
    out = []
    for i in range(b):
        x = hu[i : i + 1]
        if r[i, 0] < cfg.partial_volume_p:  # thicker slice: mix in the neighbours
            a = 0.35 * r[i, 1].item()
            mixed = (1 - a) * x[:, 1] + a * 0.5 * (x[:, 0] + x[:, 2])
            x = torch.stack([x[:, 0], mixed, x[:, 2]], dim=1)
        if r[i, 11] < cfg.paste_p and not bool(mask[i].any()):
            x, mask[i] = paste_blob(x, mask[i], cfg, g)
        elif r[i, 2] < cfg.lesion_p and bool(mask[i].any()):
            d = cfg.lesion_hu[0] + r[i, 3].item() * (cfg.lesion_hu[1] - cfg.lesion_hu[0])
            soft = gaussian_blur((mask[i] > 0).float()[None, None], 0.7)[:, 0]
            x = torch.cat([x[:, :1], x[:, 1:2] + d * soft[:, None], x[:, 2:]], dim=1)
        if r[i, 12] < cfg.calc_p:
            x, mask[i] = paste_blob(x, mask[i], cfg, g, dense=True)
        sd = cfg.noise_sd[0] + r[i, 4].item() * (cfg.noise_sd[1] - cfg.noise_sd[0])
        noise = torch.randn(x.shape, generator=g) * sd
        if r[i, 5] < cfg.corr_noise_p:
            noise = gaussian_blur(noise, 0.8) * 2.0  # keep roughly the same SD after smoothing
        x = x + noise.to(x.device)
        if r[i, 6] < cfg.blur_p:
            sig = cfg.blur_sigma[0] + r[i, 7].item() * (cfg.blur_sigma[1] - cfg.blur_sigma[0])
            x = gaussian_blur(x, sig)
        elif r[i, 6] < cfg.blur_p + cfg.sharpen_p:
            amt = cfg.sharpen_amount[0] + r[i, 8].item() * (
                cfg.sharpen_amount[1] - cfg.sharpen_amount[0])
            x = x + amt * (x - gaussian_blur(x, 1.0))
        gain = 1 + (r[i, 9].item() * 2 - 1) * cfg.hu_gain
        offset = (r[i, 10].item() * 2 - 1) * cfg.hu_offset
        out.append(GAIN_CENTRE_HU + (x - GAIN_CENTRE_HU) * gain + offset)
    return torch.cat(out), mask
