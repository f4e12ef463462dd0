"""Checkpoints: weights as data, with the metadata that makes them reproducible and checkable.

A checkpoint is ``torch.save`` of a plain dict (loaded with ``weights_only=True``):

``state_dict``, ``config`` (ModelConfig), ``variant``, ``threshold`` (operating point on the study
probability, chosen on validation data), ``size`` (input matrix), ``preprocessing_version``,
``windows``, ``in_channels``, ``dataset`` (summary of the training data), ``train_config``,
``metrics`` (validation), ``code_version`` (``git describe`` when available), ``content_sha256``
(hash of the tensors), ``trained_on`` and ``intended_use``; after ``bloodnet calibrate`` also
``calibration`` (:mod:`bloodnet_ops.model.calibration`) and ``selection`` (the set the
calibration and the threshold were chosen on, and the figures there).
"""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bloodnet_ops import PREPROCESSING_VERSION
from bloodnet_ops.errors import UserError
from bloodnet_ops.model.net import ModelConfig, SliceModel, get_model
from bloodnet_ops.model.windows import N_CHANNELS, WINDOWS

INTENDED_USE = "research only; not a medical device; no clinical validity"


def content_hash(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over parameter names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def code_version() -> str:
    """``git describe --always --dirty`` of the package's repository, or ``unknown``."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=5, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def save_checkpoint(path: Path, model: SliceModel, *, threshold: float, size: int,
                    dataset: dict, train_config: dict, metrics: dict,
                    trained_on: str = "synthetic") -> str:
    """Write the checkpoint atomically; returns the sha256 of the file."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    doc: dict[str, Any] = {
        "state_dict": state,
        "config": model.cfg.as_dict(),
        "variant": model.variant,
        "threshold": float(threshold),
        "size": int(size),
        "preprocessing_version": PREPROCESSING_VERSION,
        "windows": [(w.name, w.centre, w.width) for w in WINDOWS],
        "in_channels": N_CHANNELS,
        "dataset": dataset,
        "train_config": train_config,
        "metrics": metrics,
        "code_version": code_version(),
        "content_sha256": content_hash(state),
        "trained_on": trained_on,
        "intended_use": INTENDED_USE,
    }
    return _write(doc, Path(path))


def _write(doc: dict[str, Any], path: Path) -> str:
    """``torch.save`` through a ``.part`` file and a rename, so a reader never sees half a
    checkpoint; returns the file's sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".part")
    torch.save(doc, tmp)
    tmp.replace(path)
    return file_sha256(path)


def update_checkpoint(src: Path, dst: Path, **fields: Any) -> str:
    """Copy a checkpoint with some metadata replaced (the weights and their hash unchanged);
    returns the new file's sha256."""
    doc = torch.load(Path(src), map_location="cpu", weights_only=True)
    _expect("content_sha256", doc.get("content_sha256"), content_hash(doc["state_dict"]))
    doc.update(fields)
    return _write(doc, Path(dst))


@dataclass(slots=True)
class LoadedModel:
    model: SliceModel
    meta: dict[str, Any]  #: the checkpoint without ``state_dict``
    weights_sha256: str

    @property
    def model_version(self) -> str:
        return f"bloodnet-{self.model.variant}-{self.weights_sha256[:8]}"


class ModelFileError(UserError, ValueError):
    """The model file exists but cannot be used: unreadable, damaged, or for other code."""


def _expect(name: str, expected: Any, got: Any) -> None:
    if expected != got:
        raise ModelFileError(f"checkpoint {name}: expected {expected!r}, got {got!r}",
                             "the file is damaged or was written for another version of the code")


def load_checkpoint(path: Path, *, variant: str | None = None) -> LoadedModel:
    """Load and check a checkpoint: preprocessing, windows, channels, content hash, variant."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model checkpoint not found: {path}")
    try:
        doc = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a torch file, or pickled objects we refuse
        raise ModelFileError(f"model file {path} is not a readable checkpoint "
                             f"({type(exc).__name__})",
                             "copy models/bloodnet.pt again or pass --model with a good one") from exc
    if not isinstance(doc, dict) or "state_dict" not in doc:
        raise ModelFileError(f"model file {path} holds no BloodNet checkpoint",
                             "pass --model with a checkpoint written by `bloodnet train`")
    _expect("preprocessing_version", PREPROCESSING_VERSION, doc.get("preprocessing_version"))
    _expect("in_channels", N_CHANNELS, doc.get("in_channels"))
    _expect("windows", [(w.name, w.centre, w.width) for w in WINDOWS],
            [tuple(w) for w in doc.get("windows", [])])
    if variant is not None:
        _expect("variant", variant, doc.get("variant"))
    _expect("content_sha256", doc.get("content_sha256"), content_hash(doc["state_dict"]))
    model = get_model(doc["variant"], config=ModelConfig.from_dict(doc["config"]))
    model.load_state_dict(doc["state_dict"])
    model.eval()
    meta = {k: v for k, v in doc.items() if k != "state_dict"}
    return LoadedModel(model, meta, file_sha256(path))
