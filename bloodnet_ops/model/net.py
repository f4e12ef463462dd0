"""BloodNet and its ablation variants, selectable by name through a small registry.

Every variant is a *slice model* plus a *study aggregator*:

- ``forward(x)`` takes slices (N, 5, H, W) (see :mod:`bloodnet_ops.model.windows`) and returns a
  :class:`SliceOutput`: per-pixel segmentation logits (blood + 5 subtypes, or ``None``), a slice
  ICH logit and a slice embedding.
- ``aggregate(emb, logits, mask)`` turns the slices of each study (B, Z, ·) into study logits
  (B, 6): ICH, then EDH, SDH, SAH, IPH, IVH.

Variants (DESIGN.md §1):

``bloodnet``     U-Net; the slice logit is computed **from** the segmentation: features pooled with
                 the blood-probability map as attention plus statistics of that map. The
                 classification loss back-propagates into the segmentation head.
``independent``  the same U-Net, but the slice logit comes from globally pooled encoder features;
                 segmentation and classification share only the encoder.
``cls-only``     a ResNet-18-style classifier (no segmentation).
``seg-only``     the U-Net alone; a slice scores the top-k mean of its blood map and a study the
                 maximum over its slices. Nothing is learned beyond segmentation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from bloodnet_ops.model.blocks import (
    MLP,
    BasicBlock,
    ConvNormAct,
    Decoder,
    Encoder,
    StudyHead,
    attention_pool,
    seg_stats,
)
from bloodnet_ops.model.windows import N_CHANNELS

SUBTYPES: tuple[str, ...] = ("EDH", "SDH", "SAH", "IPH", "IVH")


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """Architecture settings, stored in every checkpoint and checked on load."""

    in_channels: int = N_CHANNELS
    widths: tuple[int, ...] = (16, 32, 64, 128, 192)
    embed_dim: int = 32
    gru_hidden: int = 32
    n_subtypes: int = len(SUBTYPES)
    topk_frac: float = 1 / 512
    stem_stride: int = 2  #: 2 = features and segmentation at half resolution (4× cheaper)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        d = dict(d)
        d["widths"] = tuple(d["widths"])
        d.setdefault("stem_stride", 1)  # checkpoints from before the option had a full-res stem
        return cls(**d)


@dataclass(slots=True)
class SliceOutput:
    """What a slice model returns for N slices."""

    seg_logits: torch.Tensor | None  #: (N, 1 + n_subtypes, H, W); channel 0 = blood
    slice_logit: torch.Tensor  #: (N,)
    embedding: torch.Tensor  #: (N, E)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


class SliceModel(nn.Module):
    """Base class: a variant name, whether it segments, and the study aggregator."""

    variant: str = ""
    has_seg: bool = False
    learns_cls: bool = True  #: trained with a slice classification loss

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.study = StudyHead(cfg.embed_dim, cfg.gru_hidden, cfg.n_subtypes)

    def aggregate(self, emb: torch.Tensor, logits: torch.Tensor, mask: torch.Tensor
                  ) -> torch.Tensor:
        """Study logits (B, 1 + n_subtypes) from slice embeddings (B, Z, E) and logits (B, Z)."""
        return self.study(emb, logits, mask)


class _UNetBase(SliceModel):
    has_seg = True

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.encoder = Encoder(cfg.in_channels, cfg.widths, stem_stride=cfg.stem_stride)
        self.decoder = Decoder(cfg.widths)
        self.seg_head = nn.Conv2d(cfg.widths[0], 1 + cfg.n_subtypes, 1)
        nn.init.constant_(self.seg_head.bias[:1], -4.0)  # blood is rare: start near p = 0.02

    def _segment(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        feats = self.encoder(x)
        dec = self.decoder(feats)
        seg = self.seg_head(dec)
        if seg.shape[-2:] != x.shape[-2:]:  # half-resolution stem: logits back to the input grid
            seg = F.interpolate(seg, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return feats, dec, seg


class BloodNet(_UNetBase):
    """Task-dependent model: classification computed from the segmentation."""

    variant = "bloodnet"

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        w = cfg.widths
        n_in = w[0] + w[-1] + w[-2] + cfg.n_subtypes + 4
        self.cls = MLP(n_in, 2 * cfg.embed_dim, cfg.embed_dim)
        self.logit = nn.Linear(cfg.embed_dim, 1)

    def forward(self, x: torch.Tensor) -> SliceOutput:
        feats, dec, seg = self._segment(x)
        prob = torch.sigmoid(seg[:, :1].float())
        sub = torch.sigmoid(seg[:, 1:].float())
        pooled = [
            attention_pool(dec.float(), prob),
            attention_pool(feats[-1].float(), prob),
            attention_pool(feats[-2].float(), prob),
            attention_pool(sub, prob),
            seg_stats(prob, topk_frac=self.cfg.topk_frac),
        ]
        emb = torch.relu(self.cls(torch.cat(pooled, dim=1)))
        return SliceOutput(seg, self.logit(emb)[:, 0], emb)


class Independent(_UNetBase):
    """Shared encoder, parallel heads: classification never sees the segmentation."""

    variant = "independent"

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.cls = MLP(2 * cfg.widths[-1], 2 * cfg.embed_dim, cfg.embed_dim)
        self.logit = nn.Linear(cfg.embed_dim, 1)

    def forward(self, x: torch.Tensor) -> SliceOutput:
        feats, _, seg = self._segment(x)
        top = feats[-1].float()
        g = torch.cat([top.mean(dim=(2, 3)), top.amax(dim=(2, 3))], dim=1)
        emb = torch.relu(self.cls(g))
        return SliceOutput(seg, self.logit(emb)[:, 0], emb)


class ClsOnly(SliceModel):
    """ResNet-18-style classifier: stride-2 stem, four stages of two BasicBlocks, pooled head."""

    variant = "cls-only"

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        w = cfg.widths
        self.stem = ConvNormAct(cfg.in_channels, w[0], stride=2)
        stages = []
        for i, cout in enumerate(w):
            cin = w[max(i - 1, 0)]
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(cin, cout, stride=stride),
                                        BasicBlock(cout, cout)))
        self.stages = nn.Sequential(*stages)
        self.cls = MLP(2 * w[-1], 2 * cfg.embed_dim, cfg.embed_dim)
        self.logit = nn.Linear(cfg.embed_dim, 1)

    def forward(self, x: torch.Tensor) -> SliceOutput:
        top = self.stages(self.stem(x)).float()
        g = torch.cat([top.mean(dim=(2, 3)), top.amax(dim=(2, 3))], dim=1)
        emb = torch.relu(self.cls(g))
        return SliceOutput(None, self.logit(emb)[:, 0], emb)


class SegOnly(_UNetBase):
    """Segmentation alone: slice score = top-k mean of the blood map, study = max over slices."""

    variant = "seg-only"
    learns_cls = False

    def forward(self, x: torch.Tensor) -> SliceOutput:
        _, _, seg = self._segment(x)
        prob = torch.sigmoid(seg[:, :1].float())
        stats = seg_stats(prob, topk_frac=self.cfg.topk_frac)
        sub = attention_pool(torch.sigmoid(seg[:, 1:].float()), prob)
        top = stats[:, 0].clamp(1e-6, 1 - 1e-6)
        return SliceOutput(seg, torch.logit(top), torch.cat([stats, sub], dim=1))

    def aggregate(self, emb: torch.Tensor, logits: torch.Tensor, mask: torch.Tensor
                  ) -> torch.Tensor:
        m = mask.unsqueeze(-1).to(emb.dtype)
        ich = logits.masked_fill(mask == 0, -1e4).amax(dim=1, keepdim=True)
        # subtype score: the pooled subtype probability of the most blood-laden slices
        w = (emb[..., 2:3].exp() - 1) * m  # soft area per slice
        sub = (emb[..., 4:] * w).sum(dim=1) / w.sum(dim=1).clamp_min(1e-6)
        return torch.cat([ich, torch.logit(sub.clamp(1e-6, 1 - 1e-6))], dim=1)


_REGISTRY: dict[str, Callable[[ModelConfig], SliceModel]] = {}


def register_model(name: str, builder: Callable[[ModelConfig], SliceModel]) -> None:
    """Add a builder under ``name``; a duplicate name is an error."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = builder


for _cls in (BloodNet, Independent, ClsOnly, SegOnly):
    register_model(_cls.variant, _cls)


def list_models() -> list[str]:
    """Registered variant names, in registration order."""
    return list(_REGISTRY)


def get_model(name: str, *, config: ModelConfig | None = None, **overrides) -> SliceModel:
    """Build variant ``name`` from ``config`` (default :class:`ModelConfig`), with keyword
    ``overrides`` of its fields (e.g. ``widths=(8, 16, 32, 64)``)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; expected one of {list_models()}")
    cfg = config or ModelConfig()
    if overrides:
        unknown = set(overrides) - set(ModelConfig.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown ModelConfig fields {sorted(unknown)}")
        cfg = ModelConfig(**{**cfg.as_dict(), **overrides})
    return _REGISTRY[name](cfg)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
