"""BloodNet: ICH classification that depends on segmentation (arXiv 1907.00148), its ablation
variants, training, inference, evaluation and statistics.

Modules (one concept each):

- ``windows``     HU → CT window channels, neighbour-slice context
- ``prep``        5 mm slabs, head crop, fixed matrix (shared by training and inference)
- ``blocks``      conv blocks, U-Net encoder/decoder, attention pooling, the GRU study head
- ``net``         ``bloodnet``, ``independent``, ``cls-only``, ``seg-only``; ``get_model``,
                  ``list_models``
- ``augment``     HU-space augmentation (geometry, calibration, kernel, noise, thickness)
- ``data``        labelled data sets → cached prepared volumes, class-balanced slice batches
- ``train``       two-stage training; ``checkpoint`` saving/loading with hashes and metadata
- ``infer``       the shared inference core; ``predictor`` the batched, prefetching Predictor
- ``metrics``     ROC AUC, bootstrap and DeLong CIs, DeLong's test, Wilson CIs, Dice
                  (numpy/scipy only: cheap to import for audits)
- ``evaluate``    ``bloodnet eval``; ``ablation`` the four-variant comparison
- ``rsna``, ``cq500``  real-data loaders (RSNA-2019 ICH, CQ500)

This package imports no torch at import time; the names below load lazily.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "Predictor": "bloodnet_ops.model.predictor",
    "get_model": "bloodnet_ops.model.net",
    "list_models": "bloodnet_ops.model.net",
    "ModelConfig": "bloodnet_ops.model.net",
    "SUBTYPES": "bloodnet_ops.model.net",
}

__all__ = ["SUBTYPES", "ModelConfig", "Predictor", "get_model", "list_models"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bloodnet_ops.model' has no attribute {name!r}")
