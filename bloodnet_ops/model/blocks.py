"""Small building blocks shared by every BloodNet variant (torchvision-style, one concept each).

Shapes follow PyTorch: images are (N, C, H, W); sequences along z are (B, Z, E).
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn


def norm(ch: int) -> nn.GroupNorm:
    """GroupNorm: independent of batch composition, so a slice scores the same whether it is
    batched with slices of its own study or of others."""
    return nn.GroupNorm(max(1, min(8, ch // 4)), ch)


class ConvNormAct(nn.Sequential):
    """3×3 (or k×k) conv → GroupNorm → ReLU."""

    def __init__(self, cin: int, cout: int, *, stride: int = 1, k: int = 3) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False),
            norm(cout),
            nn.ReLU(inplace=True),
        )


class BasicBlock(nn.Module):
    """Residual block of two 3×3 convs (ResNet's BasicBlock), projecting the skip when needed."""

    def __init__(self, cin: int, cout: int, *, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.norm1 = norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.norm2 = norm(cout)
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                      norm(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)), inplace=True)
        out = self.norm2(self.conv2(out))
        return F.relu(out + self.skip(x), inplace=True)


class Encoder(nn.Module):
    """Stem at full resolution, then one stride-2 stage per further width.

    Returns the feature map of every level, finest first: widths[i] channels at
    H / (stem_stride · 2**i).
    """

    def __init__(self, in_channels: int, widths: tuple[int, ...], *, stem_stride: int = 1
                 ) -> None:
        super().__init__()
        # a stride-2 stem (5×5, so no input pixel is skipped) halves every later feature map
        self.stem = ConvNormAct(in_channels, widths[0], stride=stem_stride,
                                k=3 if stem_stride == 1 else 5)
        self.stages = nn.ModuleList(
            BasicBlock(cin, cout, stride=2) for cin, cout in itertools.pairwise(widths)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [self.stem(x)]
        for stage in self.stages:
            feats.append(stage(feats[-1]))
        return feats


class UpBlock(nn.Module):
    """Upsample ×2 (bilinear), concatenate the skip, one conv."""

    def __init__(self, cin: int, cskip: int, cout: int) -> None:
        super().__init__()
        self.conv = ConvNormAct(cin + cskip, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(torch.cat([x, skip], dim=1))


class Decoder(nn.Module):
    """U-Net decoder: from the deepest level up to full resolution (widths[0] channels)."""

    def __init__(self, widths: tuple[int, ...]) -> None:
        super().__init__()
        rev = widths[::-1]
        self.ups = nn.ModuleList(UpBlock(rev[i], rev[i + 1], rev[i + 1]) for i in range(len(rev) - 1))

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = feats[-1]
        for up, skip in zip(self.ups, feats[-2::-1]):
            x = up(x, skip)
        return x


def attention_pool(feat: torch.Tensor, weight: torch.Tensor, *, prior: float = 1.0) -> torch.Tensor:
    """Pool (N, C, h, w) features with a (N, 1, H, W) weight map (resized to h × w).

    ``sum(F · w) / (sum(w) + prior)``: with no blood the pooled vector fades to zero instead of
    amplifying noise, and its size grows with the evidence.
    """
    if weight.shape[-2:] != feat.shape[-2:]:
        weight = F.adaptive_avg_pool2d(weight, feat.shape[-2:])
    num = (feat * weight).sum(dim=(2, 3))
    return num / (weight.sum(dim=(2, 3)) + prior)


def seg_stats(prob: torch.Tensor, *, topk_frac: float = 1 / 512) -> torch.Tensor:
    """Statistics of a blood-probability map (N, 1, H, W) → (N, 4):
    top-k mean, max, log(1 + soft area in pixels), mean."""
    flat = prob.flatten(1)
    k = max(4, int(flat.shape[1] * topk_frac))
    top = flat.topk(k, dim=1).values.mean(dim=1)
    return torch.stack(
        [top, flat.amax(dim=1), torch.log1p(flat.sum(dim=1)), flat.mean(dim=1)], dim=1
    )


class MLP(nn.Sequential):
    """Linear → ReLU → Dropout → Linear."""

    def __init__(self, cin: int, hidden: int, cout: int, *, dropout: float = 0.1) -> None:
        super().__init__(nn.Linear(cin, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                         nn.Linear(hidden, cout))


class StudyHead(nn.Module):
    """Aggregate slice embeddings along z with a bidirectional GRU (as the RSNA-2019 winners did).

    Input: embeddings (B, Z, E), slice logits (B, Z), a validity mask (B, Z).
    Output: (B, 1 + n_subtypes) logits: ICH, then EDH, SDH, SAH, IPH, IVH.
    The ICH logit adds ``gain · max_z slice logit``: a study with one convincing slice stays
    positive however unusual the rest of the sequence looks.
    """

    def __init__(self, embed_dim: int, hidden: int, n_subtypes: int) -> None:
        super().__init__()
        self.gru = nn.GRU(embed_dim + 1, hidden, batch_first=True, bidirectional=True)
        self.out = nn.Linear(4 * hidden, 1 + n_subtypes)
        nn.init.zeros_(self.out.weight)  # start as "the most convincing slice decides"
        nn.init.zeros_(self.out.bias)
        self.gain = nn.Parameter(torch.tensor(1.0))

    def forward(self, emb: torch.Tensor, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = torch.cat([emb, logits.unsqueeze(-1)], dim=-1)
        h, _ = self.gru(x)
        m = mask.unsqueeze(-1).to(h.dtype)
        hmax = h.masked_fill(m == 0, -1e4).amax(dim=1)
        hmean = (h * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)
        out = self.out(torch.cat([hmax, hmean], dim=1))
        top = logits.masked_fill(mask == 0, -1e4).amax(dim=1)
        return torch.cat([out[:, :1] + self.gain * top.unsqueeze(1), out[:, 1:]], dim=1)
