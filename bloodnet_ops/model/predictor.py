"""The Predictor: HU volumes in, :class:`~bloodnet_ops.records.StudyFinding` out.

- **Device**: CUDA when present (or asked for), else CPU. On CUDA the slice model runs in bf16
  autocast and channels-last, with pinned host buffers.
- **Batching across studies**: slices of consecutive studies fill one batch, so short studies do
  not leave the device idle.
- **Overlap**: a background thread pulls the next items (the caller's iterator may fetch from S3
  and decode DICOM), prepares them (slabs, head crop, resampling) and queues them while the
  current batch computes.
- **OOM**: a CUDA out-of-memory error halves the batch size and retries; the run continues.

Default weights: ``$BLOODNET_MODEL`` if set, else ``models/bloodnet.pt`` in the repository root.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bloodnet_ops.model.calibration import Calibration
from bloodnet_ops.model.checkpoint import load_checkpoint
from bloodnet_ops.model.infer import (
    blood_volume_ml,
    forward_slices,
    pick_device,
    prepare_model,
    sigmoid,
    study_logits,
)
from bloodnet_ops.model.net import SUBTYPES
from bloodnet_ops.model.prep import PreparedVolume, prepare_volume, to_native
from bloodnet_ops.model.windows import context_stack
from bloodnet_ops.records import StudyFinding
from bloodnet_ops.resources import released_model

log = logging.getLogger(__name__)

#: The shipped weights, relative to the repository root.
DEFAULT_MODEL = released_model()
_DONE = object()


def default_model_path() -> Path:
    from bloodnet_ops.settings import current

    env = current().model
    return Path(env) if env else DEFAULT_MODEL


@dataclass(slots=True)
class _Study:
    """A prepared study waiting for, or collecting, slice results."""

    study_uid: str
    series_uid: str
    prep: PreparedVolume
    triplets: torch.Tensor  #: (z', 3, S, S) HU
    load_seconds: float
    logits: list[np.ndarray] = field(default_factory=list)
    emb: list[np.ndarray] = field(default_factory=list)
    blood: list[np.ndarray] = field(default_factory=list)
    done: int = 0
    infer_seconds: float = 0.0

    @property
    def n(self) -> int:
        return int(self.triplets.shape[0])


class Predictor:
    """Score HU volumes with a BloodNet checkpoint.

    Parameters
    ----------
    model_path : checkpoint path; default ``$BLOODNET_MODEL`` or ``models/bloodnet.pt``
    device : ``"cuda"``, ``"cpu"`` or None (CUDA when available)
    batch_size : slices per forward pass (default 256 on CUDA, 32 on CPU)
    prefetch : studies prepared ahead by the loading thread (0 = load in the calling thread,
        no overlap; the benchmark's peer)
    amp, channels_last : bf16 autocast and channels-last layout on CUDA (ignored on CPU)
    """

    def __init__(self, model_path: str | Path | None = None, device: str | None = None, *,
                 batch_size: int | None = None, prefetch: int = 2, amp: bool = True,
                 channels_last: bool = True) -> None:
        path = Path(model_path) if model_path else default_model_path()
        loaded = load_checkpoint(path)
        self.model_path = path
        self.device = pick_device(device)
        self.amp, self.channels_last = amp, channels_last
        self.model = prepare_model(loaded.model, self.device, channels_last=channels_last)
        self.meta: dict[str, Any] = loaded.meta
        self.weights_sha256: str = loaded.weights_sha256
        self.model_version: str = loaded.model_version
        self.variant: str = loaded.model.variant
        self.threshold: float = float(loaded.meta["threshold"])
        #: logit -> probability map fitted on the selection set (identity for old checkpoints)
        self.calibration = Calibration.from_dict(loaded.meta.get("calibration"))
        self.size: int = int(loaded.meta["size"])
        self.batch_size = batch_size or (256 if self.device.type == "cuda" else 32)
        self.prefetch = max(0, prefetch)

    # -- public API -------------------------------------------------------------------------
    def predict(self, items: Iterable[tuple[str, str, Any]]) -> list[StudyFinding]:
        """Findings for ``(study_uid, series_uid, HUVolume)`` items, in input order."""
        return [f for f, _ in self.predict_iter(items)]

    def predict_iter(self, items: Iterable[tuple[str, str, Any]], *, keep_masks: bool = False
                     ) -> Iterator[tuple[StudyFinding, np.ndarray | None]]:
        """``(finding, blood probability (z, y, x) or None)`` per item, in input order, each as
        soon as its last slab is scored: volumes are loaded on a thread ahead of the device
        (``prefetch``) and ``items`` is consumed lazily, so a night never sits in memory."""
        return self._run(items, keep_masks=keep_masks)

    def predict_masks(self, items: Iterable[tuple[str, str, Any]]
                      ) -> tuple[list[StudyFinding], list[np.ndarray]]:
        """Findings plus the blood probability (z, y, x) float32 on each volume's native grid."""
        pairs = list(self.predict_iter(items, keep_masks=True))
        return [f for f, _ in pairs], [m for _, m in pairs]

    # -- loading thread ---------------------------------------------------------------------
    def _prepare(self, item: tuple[str, str, Any], t0: float) -> _Study:
        study_uid, series_uid, vol = item
        prep = prepare_volume(np.asarray(vol.hu), tuple(vol.spacing), size=self.size)
        trip = context_stack(prep.hu)
        if self.device.type == "cuda":
            trip = trip.pin_memory()  # lets the host→device copy run asynchronously
        return _Study(study_uid, series_uid, prep, trip, time.perf_counter() - t0)

    def _loader(self, items: Iterable[tuple[str, str, Any]], out: queue.Queue,
                stop: threading.Event) -> None:
        try:
            it = iter(items)
            while not stop.is_set():
                t0 = time.perf_counter()  # pulling the item is loading (S3 GETs, decoding)
                try:
                    item = next(it)
                except StopIteration:
                    break
                out.put(self._prepare(item, t0))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, re-raised there
            out.put(exc)
        finally:
            out.put(_DONE)

    def _studies(self, items: Iterable[tuple[str, str, Any]]) -> Iterator[_Study]:
        if self.prefetch == 0:  # no thread: load, then compute, strictly in turn
            it = iter(items)
            while True:
                t0 = time.perf_counter()
                item = next(it, None)
                if item is None:
                    return
                yield self._prepare(item, t0)
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        thread = threading.Thread(target=self._loader, args=(items, q, stop), daemon=True,
                                  name="bloodnet-prefetch")
        thread.start()
        try:
            while True:
                got = q.get()
                if got is _DONE:
                    return
                if isinstance(got, BaseException):
                    raise got
                yield got
        finally:
            stop.set()
            while thread.is_alive():  # drain so the loader never blocks on a full queue
                try:
                    q.get(timeout=0.1)
                except queue.Empty:
                    pass

    # -- compute ----------------------------------------------------------------------------
    def _forward(self, hu: torch.Tensor):
        """One forward pass; on CUDA OOM halve the batch size and split."""
        try:
            return [forward_slices(self.model, hu, self.device, amp=self.amp,
                                   channels_last=self.channels_last)]
        except torch.OutOfMemoryError:
            if hu.shape[0] <= 1:
                raise
            torch.cuda.empty_cache()
            self.batch_size = max(1, hu.shape[0] // 2)
            log.warning("CUDA out of memory; batch size now %d", self.batch_size)
            half = hu.shape[0] // 2
            return self._forward(hu[:half]) + self._forward(hu[half:])

    def _run(self, items: Iterable[tuple[str, str, Any]], *, keep_masks: bool
             ) -> Iterator[tuple[StudyFinding, np.ndarray | None]]:
        pending: list[_Study] = []  # studies with slices not yet scored, in input order
        finished: list[_Study] = []
        source = self._studies(items)
        exhausted = False
        while True:
            queued = sum(s.n - s.done for s in pending)
            if not exhausted and queued < self.batch_size:
                nxt = next(source, None)
                if nxt is None:
                    exhausted = True
                else:
                    pending.append(nxt)
                    continue
            if not pending:
                break
            self._score_batch(pending)
            while pending and pending[0].done == pending[0].n:
                finished.append(pending.pop(0))
            for s in finished:
                yield self._finish(s, keep_masks)
            finished.clear()

    def _score_batch(self, pending: list[_Study]) -> None:
        parts, owners = [], []
        room = self.batch_size
        for s in pending:
            take = min(room, s.n - s.done)
            if take <= 0:
                continue
            parts.append(s.triplets[s.done : s.done + take])
            owners.append((s, take))
            room -= take
            if room == 0:
                break
        hu = torch.cat(parts) if len(parts) > 1 else parts[0]
        t0 = time.perf_counter()
        results = self._forward(hu)
        seconds = time.perf_counter() - t0
        logits = np.concatenate([r.logits for r in results])
        emb = np.concatenate([r.emb for r in results])
        blood = None if results[0].blood is None else np.concatenate([r.blood for r in results])
        pos = 0
        for s, take in owners:
            s.logits.append(logits[pos : pos + take])
            s.emb.append(emb[pos : pos + take])
            if blood is not None:
                s.blood.append(blood[pos : pos + take])
            s.infer_seconds += seconds * take / hu.shape[0]
            s.done += take
            pos += take

    def _finish(self, s: _Study, keep_masks: bool) -> tuple[StudyFinding, np.ndarray | None]:
        t0 = time.perf_counter()
        logits = np.concatenate(s.logits)
        emb = np.concatenate(s.emb)
        out = study_logits(self.model, [emb], [logits], self.device)[0]
        prob = float(self.calibration(out[0]))
        blood = np.concatenate(s.blood) if s.blood else None
        finding = StudyFinding(
            study_uid=s.study_uid,
            series_uid=s.series_uid,
            probability=prob,
            positive=prob >= self.threshold,
            volume_ml=round(blood_volume_ml(blood, s.prep.voxel_ml), 3),
            subtypes={name: float(sigmoid(v)) for name, v in zip(SUBTYPES, out[1:])},
            n_slices=int(s.prep.native_shape[0]),
            load_seconds=round(s.load_seconds, 4),
            infer_seconds=round(s.infer_seconds + time.perf_counter() - t0, 4),
        )
        native = None
        if keep_masks:
            native = (to_native(blood, s.prep) if blood is not None
                      else np.zeros(s.prep.native_shape, np.float32))
        return finding, native
