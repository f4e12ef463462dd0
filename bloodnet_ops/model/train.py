"""Training: stage 1 learns the slice model, stage 2 the study aggregator on frozen slices.

Stage 1 draws batches of slices balanced by study (``pos_frac`` with blood, the rest without,
half of those hard negatives once mining has run), augments them in HU
(:mod:`bloodnet_ops.model.augment`), windows them and minimises

- segmentation (variants that segment): BCE + soft Dice on the blood channel over the batch
  (positives and negatives) against *soft* targets (1 inside a bleed, 0.7 on its edge and 0.5
  where it touches bone: partial volume makes those voxels uncertain, and a hard 0 there taught
  earlier models to miss thin subdural rims), plus BCE on the subtype channels inside blood;
- classification (variants with a learned slice classifier): BCE on the slice label.

Hard-negative mining (PatchFCN, DeepBleed and the RSNA-2019 winners all mine or re-weight
their false positives): every ``mine_every`` steps the current model scores a random pool of
blood-free slices, and those where it sees blood (the mean of its top-k blood probabilities
above ``mine_min``) become the hard pool, sampled in proportion to that score. Normal anatomy
that the model reads as blood (falx, sinuses, tentorium, skull base, streaks) is then what the
negatives of the next steps show.

Stage 2 runs the frozen slice model over every training study (one clean and one augmented pass)
and fits the bidirectional-GRU study head on the sequences (BCE on ICH, class-weighted, and on the
five subtypes). ``seg-only`` has nothing to learn in stage 2.

Finally the study probabilities of the validation studies give the operating threshold (maximum
Youden index) and the validation metrics stored in the checkpoint.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from bloodnet_ops.model.augment import AugmentConfig, augment
from bloodnet_ops.model.checkpoint import save_checkpoint
from bloodnet_ops.model.data import BONE_HU, CachedStudy, SliceSampler, summarise
from bloodnet_ops.model.infer import (
    forward_slices,
    pad_sequences,
    pick_device,
    prepare_model,
    sigmoid,
)
from bloodnet_ops.model.metrics import choose_threshold, roc_auc
from bloodnet_ops.model.net import SliceModel, get_model
from bloodnet_ops.model.windows import context_stack, window_stack

log = logging.getLogger(__name__)


@dataclass(slots=True)
class TrainConfig:
    """Everything that determines a training run (stored in the checkpoint)."""

    variant: str = "bloodnet"
    size: int = 128
    epochs: int = 8
    steps_per_epoch: int = 150
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    device: str = "cpu"
    threads: int = 2
    widths: tuple[int, ...] = (16, 32, 64, 128, 192)
    study_epochs: int = 15
    augmented_passes: int = 1
    augment: bool = True
    progress: bool = True
    init: str | None = None  #: checkpoint to start from (fine-tuning); must match variant/widths
    pos_frac: float = 0.4  #: share of each batch with blood
    hard_frac: float = 0.5  #: share of the blood-free samples drawn from the hard pool
    mine_every: int = 300  #: steps between hard-negative mining rounds (0: never)
    mine_pool: int = 1200  #: blood-free slices scored per round
    mine_min: float = 0.15  #: top-k blood probability above which a slice is hard
    max_seconds: float = 0.0  #: stage-1 wall-clock budget; the schedule follows it (0: off)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d


@dataclass(slots=True)
class TrainResult:
    model: SliceModel
    threshold: float
    val_auc: float | None
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def soft_target(mask: torch.Tensor, hu_centre: torch.Tensor) -> torch.Tensor:
    """(B, S, S) float targets: 1 inside blood, 0.7 on its one-pixel edge, 0.5 where it touches
    bone (> ``BONE_HU``), 0 elsewhere."""
    blood = (mask > 0).float()[:, None]
    interior = -F.max_pool2d(-blood, 3, stride=1, padding=1)  # erosion
    near_bone = F.max_pool2d((hu_centre > BONE_HU).float()[:, None], 3, stride=1, padding=1)
    t = torch.where(interior > 0, 1.0, 0.7 * blood)
    t = torch.where((near_bone > 0) & (blood > 0), torch.full_like(t, 0.5), t)
    return t[:, 0]


def seg_loss(seg_logits: torch.Tensor, mask: torch.Tensor,
             hu_centre: torch.Tensor | None = None) -> torch.Tensor:
    """BCE + batch soft Dice on blood (soft targets when ``hu_centre`` is given), BCE on the
    subtype channels inside blood."""
    target = (mask > 0).float() if hu_centre is None else soft_target(mask, hu_centre)
    blood = seg_logits[:, 0].float()
    bce = F.binary_cross_entropy_with_logits(blood, target)
    p = torch.sigmoid(blood)
    dice = 1 - (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
    loss = bce + dice
    inside = mask > 0
    if inside.any():
        onehot = F.one_hot((mask.long() - 1).clamp_min(0), seg_logits.shape[1] - 1)
        sub = seg_logits[:, 1:].float().permute(0, 2, 3, 1)[inside]
        loss = loss + 0.5 * F.binary_cross_entropy_with_logits(sub, onehot[inside].float())
    return loss


@torch.no_grad()
def mine_hard_negatives(model: SliceModel, sampler: SliceSampler, rng: np.random.Generator,
                        device: torch.device, *, pool: int, min_score: float, k: int = 20,
                        batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Score ``pool`` random blood-free slices; return those whose mean top-``k`` blood
    probability reaches ``min_score``, with that score. The pool is drawn half from negative
    studies (where the mimics live) and half from every study."""
    if not model.has_seg:
        return sampler.neg[:0], np.zeros(0)
    picks = sampler.neg[rng.choice(len(sampler.neg), min(pool, len(sampler.neg)),
                                   replace=False)]
    was_training = model.training
    model.eval()
    scores = []
    for start in range(0, len(picks), batch):
        hu, _, _, _ = sampler.slices(picks[start:start + batch])
        out = model(window_stack(torch.from_numpy(hu).to(device)))
        prob = torch.sigmoid(out.seg_logits[:, 0].float()).flatten(1)
        scores.append(prob.topk(min(k, prob.shape[1]), dim=1).values.mean(dim=1).cpu().numpy())
    model.train(was_training)
    score = np.concatenate(scores) if scores else np.zeros(0)
    keep = score >= min_score
    return picks[keep], score[keep]


def _batch_tensors(sampler: SliceSampler, rng: np.random.Generator, gen: torch.Generator,
                   cfg: TrainConfig, aug_cfg: AugmentConfig
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    hu, mask, labels, has_mask = sampler.batch(rng, cfg.batch_size)
    hu_t, mask_t = torch.from_numpy(hu), torch.from_numpy(mask)
    if cfg.augment:
        hu_t, mask_t = augment(hu_t, mask_t, cfg=aug_cfg, generator=gen)
        # a shift may cut the blood out of the picture: relabel from the moved mask
        moved = (mask_t.flatten(1) > 0).any(dim=1).float().numpy()
        labels = np.where(has_mask, moved, labels)
    return (hu_t, mask_t, torch.from_numpy(np.asarray(labels, dtype=np.float32)),
            torch.from_numpy(has_mask))


def train_slices(model: SliceModel, train: list[CachedStudy], cfg: TrainConfig,
                 device: torch.device) -> list[dict]:
    """Stage 1. Returns per-epoch mean losses."""
    sampler = SliceSampler(train, pos_frac=cfg.pos_frac, hard_frac=cfg.hard_frac)
    rng = np.random.default_rng(cfg.seed)
    mine_rng = np.random.default_rng(cfg.seed + 1)
    gen = torch.Generator().manual_seed(cfg.seed)
    aug_cfg = AugmentConfig()
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.epochs * cfg.steps_per_epoch
    warm = max(1, total // 20)

    def lr_at(step: int, progress: float) -> float:
        """Linear warm-up, then cosine over ``progress`` (steps done, or the share of the time
        budget used when that is further along)."""
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress))) * 0.98 + 0.02

    t_start = time.perf_counter()
    history = []
    n_hard = 0
    bar = tqdm(total=total, desc=f"train {model.variant}", disable=not cfg.progress)
    for epoch in range(cfg.epochs):
        sums = {"loss": 0.0, "seg": 0.0, "cls": 0.0}
        for i in range(cfg.steps_per_epoch):
            step = epoch * cfg.steps_per_epoch + i
            progress = (step - warm) / max(1, total - warm)
            if cfg.max_seconds:
                progress = max(progress, (time.perf_counter() - t_start) / cfg.max_seconds)
                if progress >= 1.0:
                    break
            for group in opt.param_groups:
                group["lr"] = cfg.lr * lr_at(step, progress)
            if cfg.mine_every and cfg.hard_frac > 0 and step % cfg.mine_every == 0 and (
                    step > 0 or cfg.init):
                hard, score = mine_hard_negatives(model, sampler, mine_rng, device,
                                                  pool=cfg.mine_pool, min_score=cfg.mine_min)
                sampler.set_hard(hard, score)
                log.info("step %d: %d hard negatives of %d scored (mean score %.3f)", step,
                         len(hard), cfg.mine_pool, float(score.mean()) if score.size else 0.0)
                n_hard = len(hard)
            hu, mask, labels, has_mask = _batch_tensors(sampler, rng, gen, cfg, aug_cfg)
            x = window_stack(hu.to(device))
            out = model(x)
            loss = torch.zeros((), device=device)
            if model.has_seg and out.seg_logits is not None and bool(has_mask.any()):
                keep = has_mask.to(device)
                ls = seg_loss(out.seg_logits[keep], mask.to(device)[keep],
                              hu[:, 1].to(device)[keep])
                loss = loss + ls
                sums["seg"] += ls.item()
            if model.learns_cls:
                lc = F.binary_cross_entropy_with_logits(out.slice_logit.float(), labels.to(device))
                loss = loss + lc
                sums["cls"] += lc.item()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            sums["loss"] += loss.item()
            bar.update(1)
        rec = {k: v / cfg.steps_per_epoch for k, v in sums.items()}
        rec["epoch"] = epoch + 1
        rec["hard_negatives"] = n_hard
        history.append(rec)
        bar.set_postfix(loss=f"{rec['loss']:.3f}")
        log.info("epoch %d: loss %.4f seg %.4f cls %.4f", epoch + 1, rec["loss"], rec["seg"],
                 rec["cls"])
        if cfg.max_seconds and time.perf_counter() - t_start >= cfg.max_seconds:
            log.info("time budget of %.0f s reached after epoch %d", cfg.max_seconds, epoch + 1)
            break
    bar.close()
    return history


def study_sequences(model: SliceModel, studies: list[CachedStudy], device: torch.device, *,
                    augmented: bool = False, seed: int = 0, batch: int = 32,
                    progress: bool = False) -> tuple[list[np.ndarray], list[np.ndarray],
                                                     list[np.ndarray]]:
    """Slice embeddings, slice logits and blood maps of each study (frozen model)."""
    model = prepare_model(model, device)
    gen = torch.Generator().manual_seed(seed)
    aug_cfg = AugmentConfig(rotate_deg=8.0, scale=(0.92, 1.08), shift=0.04, lesion_p=0.0)
    embs, logits, bloods = [], [], []
    for s in tqdm(studies, desc="slices", disable=not progress):
        e_parts, l_parts, b_parts = [], [], []
        z = s.hu.shape[0]
        for start in range(0, z, batch):
            idx = np.arange(start, min(z, start + batch))
            hu = context_stack(s.hu.astype(np.float32), idx)
            if augmented:
                hu, _ = augment(hu, torch.zeros(hu.shape[0], *hu.shape[2:], dtype=torch.uint8),
                                cfg=aug_cfg, generator=gen)
            r = forward_slices(model, hu, device)
            e_parts.append(r.emb)
            l_parts.append(r.logits)
            if r.blood is not None:
                b_parts.append(r.blood.astype(np.float16))
        embs.append(np.concatenate(e_parts))
        logits.append(np.concatenate(l_parts))
        bloods.append(np.concatenate(b_parts) if b_parts else None)
    return embs, logits, bloods


def train_study_head(model: SliceModel, studies: list[CachedStudy], cfg: TrainConfig,
                     device: torch.device) -> None:
    """Stage 2: fit ``model.study`` on frozen slice outputs (skipped for seg-only)."""
    if model.variant == "seg-only":
        return
    seqs_e, seqs_l, ys, subs = [], [], [], []
    for p in range(1 + cfg.augmented_passes):
        e, lg, _ = study_sequences(model, studies, device, augmented=p > 0, seed=cfg.seed + p,
                                   progress=cfg.progress)
        seqs_e += e
        seqs_l += lg
        ys += [float(s.label.ich) for s in studies]
        subs += [s.label.subtype_vector() for s in studies]
    y = torch.tensor(ys)
    sub = torch.from_numpy(np.stack(subs))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny GRU: more threads only add synchronisation overhead
    n_pos = float(y.sum())
    pos_weight = torch.tensor((len(ys) - n_pos) / max(n_pos, 1.0))
    for p in model.parameters():
        p.requires_grad_(False)
    head = model.study.to(device).train()
    for p in head.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=1e-2)
    rng = np.random.default_rng(cfg.seed)
    for _ in range(cfg.study_epochs):
        order = rng.permutation(len(ys))
        for start in range(0, len(order), 16):
            idx = order[start : start + 16]
            emb, lg, mask = pad_sequences([seqs_e[i] for i in idx], [seqs_l[i] for i in idx])
            emb = F.dropout(emb, p=0.2)  # the head must not hang on single embedding features
            out = head(emb.to(device), lg.to(device), mask.to(device))
            loss = F.binary_cross_entropy_with_logits(out[:, 0], y[idx].to(device),
                                                      pos_weight=pos_weight.to(device))
            loss = loss + 0.5 * F.binary_cross_entropy_with_logits(out[:, 1:], sub[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    for p in model.parameters():
        p.requires_grad_(True)
    torch.set_num_threads(threads)
    model.eval()


def study_scores(model: SliceModel, studies: list[CachedStudy], device: torch.device, *,
                 progress: bool = False) -> tuple[np.ndarray, list[np.ndarray | None]]:
    """Study logits (B, 6) and blood maps of ``studies`` (clean pass)."""
    from bloodnet_ops.model.infer import study_logits

    embs, logits, bloods = study_sequences(model, studies, device, progress=progress)
    out = np.concatenate([study_logits(model, embs[i : i + 32], logits[i : i + 32], device)
                          for i in range(0, len(embs), 32)])
    return out, bloods


def fit(train: list[CachedStudy], val: list[CachedStudy], cfg: TrainConfig, *,
        stack: list[CachedStudy] | None = None) -> TrainResult:
    """Stage 1 on ``train`` + stage 2 + threshold on ``val``.

    Stage 2 (the study head) learns from ``stack`` when given: studies the slice model never
    saw, so the head learns from slice outputs as confident as they will be on new data (on its
    own training studies the slice model is over-confident and the head learns to trust it).
    """
    t0 = time.time()
    torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    model = get_model(cfg.variant, widths=tuple(cfg.widths))
    if cfg.init:
        from bloodnet_ops.model.checkpoint import load_checkpoint

        start = load_checkpoint(Path(cfg.init), variant=cfg.variant)
        model.load_state_dict(start.model.state_dict())
        log.info("starting from %s", start.model_version)
    history = train_slices(model, train, cfg, device)
    train_study_head(model, stack or train, cfg, device)
    model.eval()
    threshold, val_auc = 0.5, None
    if val:
        y = np.array([s.label.ich for s in val], dtype=int)
        logits, _ = study_scores(model, val, device)
        prob = sigmoid(logits[:, 0])
        if 0 < y.sum() < y.size:
            val_auc = roc_auc(y, prob)
            threshold = choose_threshold(y, prob)
    return TrainResult(model.cpu(), threshold, val_auc, history, time.time() - t0)


def train_to_file(train: list[CachedStudy], val: list[CachedStudy], cfg: TrainConfig,
                  out: Path, *, stack: list[CachedStudy] | None = None,
                  extra_metrics: dict | None = None) -> tuple[TrainResult, str]:
    """:func:`fit` and write the checkpoint; returns the result and the file's sha256."""
    res = fit(train, val, cfg, stack=stack)
    metrics = {"val_auc": res.val_auc, "val_studies": len(val), "history": res.history,
               "train_seconds": round(res.seconds, 1), **(extra_metrics or {})}
    dataset = {"train": summarise(train), "val": summarise(val)}
    if stack:
        dataset["study_head"] = summarise(stack)
    sha = save_checkpoint(out, res.model, threshold=res.threshold, size=cfg.size,
                          dataset=dataset, train_config=cfg.as_dict(), metrics=metrics)
    return res, sha
