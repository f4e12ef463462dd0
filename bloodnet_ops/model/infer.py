"""The inference core shared by training (validation), evaluation and the :class:`Predictor`.

``prepared HU slabs → windows → slice model → study aggregator``, with the device handling in
one place: on CUDA the slice model runs under bf16 autocast in channels-last layout; the study
aggregator (a GRU over ~30 steps) always runs in float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from bloodnet_ops.model.net import SliceModel
from bloodnet_ops.model.windows import window_stack

#: A prepared voxel counts as blood for volumes when its probability reaches this.
BLOOD_PROB = 0.5


@dataclass(slots=True)
class SliceBatchResult:
    """Per-slice outputs on the CPU."""

    logits: np.ndarray  #: (n,) float32
    emb: np.ndarray  #: (n, E) float32
    blood: np.ndarray | None  #: (n, S, S) float32 blood probability, None without segmentation
    subtype: np.ndarray | None  #: (n, 5, S, S) float16 subtype probability, when asked for


def pick_device(device: str | None = None) -> torch.device:
    """``cuda`` when available (or asked for), else ``cpu``; an unavailable CUDA is an error."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return dev


def prepare_model(model: SliceModel, device: torch.device, *, channels_last: bool = True
                  ) -> SliceModel:
    model = model.to(device).eval()
    if device.type == "cuda" and channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


@torch.no_grad()
def forward_slices(model: SliceModel, hu_triplets: torch.Tensor, device: torch.device, *,
                   keep_subtypes: bool = False, amp: bool = True, channels_last: bool = True
                   ) -> SliceBatchResult:
    """Run the slice model on HU triplets (n, 3, S, S); windows are applied on the device.

    On CUDA: bf16 autocast (``amp``) and channels-last input (``channels_last``) by default.
    """
    x = window_stack(hu_triplets.to(device, non_blocking=True))
    cuda = device.type == "cuda"
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if cuda and amp else nullcontext()
    if cuda and channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with ctx:
        out = model(x)
    blood = sub = None
    if out.seg_logits is not None:
        blood = torch.sigmoid(out.seg_logits[:, 0].float()).cpu().numpy()
        if keep_subtypes:
            sub = torch.sigmoid(out.seg_logits[:, 1:].float()).half().cpu().numpy()
    return SliceBatchResult(out.slice_logit.float().cpu().numpy(),
                            out.embedding.float().cpu().numpy(), blood, sub)


@torch.no_grad()
def study_logits(model: SliceModel, embs: Sequence[np.ndarray], logits: Sequence[np.ndarray],
                 device: torch.device) -> np.ndarray:
    """Study logits (B, 6) for B studies given per-slice embeddings and logits."""
    emb_t, log_t, mask = pad_sequences(embs, logits)
    out = model.aggregate(emb_t.to(device), log_t.to(device), mask.to(device))
    return out.float().cpu().numpy()


def pad_sequences(embs: Sequence[np.ndarray], logits: Sequence[np.ndarray]
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad variable-length slice sequences to (B, Zmax, E), (B, Zmax) and a mask (B, Zmax)."""
    b = len(embs)
    zmax = max(e.shape[0] for e in embs)
    dim = embs[0].shape[1]
    emb_t = torch.zeros(b, zmax, dim)
    log_t = torch.zeros(b, zmax)
    mask = torch.zeros(b, zmax)
    for i, (e, lg) in enumerate(zip(embs, logits)):
        n = e.shape[0]
        emb_t[i, :n] = torch.from_numpy(np.asarray(e, dtype=np.float32))
        log_t[i, :n] = torch.from_numpy(np.asarray(lg, dtype=np.float32))
        mask[i, :n] = 1
    return emb_t, log_t, mask


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def blood_volume_ml(blood: np.ndarray | None, voxel_ml: float) -> float:
    """Blood volume: voxels with probability ≥ ``BLOOD_PROB`` × the prepared voxel volume."""
    if blood is None:
        return 0.0
    return float((blood >= BLOOD_PROB).sum() * voxel_ml)
