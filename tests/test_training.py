"""Training learns, checkpoints load, and the model CLI works end to end on synthetic DICOM."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from bloodnet_ops.model.augment import PASTE_CODE, AugmentConfig, augment, paste_blob
from bloodnet_ops.model.data import CachedStudy, SliceSampler, StudyLabel, split_studies
from bloodnet_ops.model.infer import pick_device, sigmoid
from bloodnet_ops.model.metrics import roc_auc
from bloodnet_ops.model.train import TrainConfig, fit, study_scores

SIZE = 48
TINY_WIDTHS = (8, 16, 32, 64)


def _phantom_study(rng: np.random.Generator, uid: str, positive: bool, z: int = 10
                   ) -> CachedStudy:
    """A prepared head: skull ring, 35 HU brain, noise; positives get a 70 HU bleed over 1-3
    slices (a planted bright blob the model must find)."""
    yy, xx = np.mgrid[:SIZE, :SIZE] - SIZE / 2
    r = np.hypot(yy, xx)
    hu = np.full((z, SIZE, SIZE), -1000.0, np.float32)
    hu[:, r < SIZE * 0.45] = 1100.0
    hu[:, r < SIZE * 0.40] = 35.0
    hu += rng.normal(0, 4, hu.shape).astype(np.float32)
    mask = np.zeros(hu.shape, np.uint8)
    subs: tuple[str, ...] = ()
    if positive:
        k0, n = int(rng.integers(1, z - 3)), int(rng.integers(1, 4))
        cy, cx = rng.uniform(-SIZE * 0.2, SIZE * 0.2, 2)
        blob = np.hypot(yy - cy, xx - cx) < rng.uniform(2.5, 5)
        for k in range(k0, k0 + n):
            hu[k][blob] = 70.0 + rng.normal(0, 4, int(blob.sum()))
            mask[k][blob] = 4
        subs = ("IPH",)
    label = StudyLabel(uid, f"site-{int(uid[-1]) % 2}", positive, subs,
                       float(mask.astype(bool).sum() * 5 * 0.8 * 0.8 / 1000), "")
    return CachedStudy(label, hu.astype(np.float16), mask, (5.0, 0.8, 0.8))


def _phantoms(n: int, seed: int) -> list[CachedStudy]:
    rng = np.random.default_rng(seed)
    return [_phantom_study(rng, f"1.2.{seed}.{i}", i % 2 == 0) for i in range(n)]


def test_sampler_balances_blood_and_no_blood() -> None:
    studies = _phantoms(6, seed=1)
    sampler = SliceSampler(studies)
    hu, mask, labels, has = sampler.batch(np.random.default_rng(0), 20)
    assert hu.shape == (20, 3, SIZE, SIZE) and mask.shape == (20, SIZE, SIZE)
    assert labels.sum() == 10
    assert np.array_equal(labels > 0, (mask.reshape(20, -1) > 0).any(axis=1))
    assert has.all()


def test_sampler_balances_by_study_and_draws_the_hard_pool() -> None:
    studies = _phantoms(8, seed=4)
    sampler = SliceSampler(studies, pos_frac=0.25, hard_frac=0.5)
    rng = np.random.default_rng(0)
    _, _, labels, _ = sampler.batch(rng, 40)
    assert labels.sum() == 10  # negatives outnumber positives
    # every positive study is drawn about equally often, whatever its number of blood slices
    picks = sampler._draw_pos(rng, 4000)
    counts = np.bincount(picks[:, 0], minlength=len(studies))[sampler._pos_studies]
    assert counts.min() > 0.7 * counts.mean()
    # a hard pool of two slices, one scored much higher: drawn in proportion
    hard = sampler.neg[[0, 5]]
    sampler.set_hard(hard, np.array([0.9, 0.1]))
    neg = sampler._draw_neg(rng, 4000)
    is_a = (neg == hard[0]).all(axis=1).sum()
    is_b = (neg == hard[1]).all(axis=1).sum()
    assert 1600 < is_a + is_b < 2400  # hard_frac of the negatives (plus chance easy draws)
    assert is_a > 5 * is_b
    assert all(studies[i].slice_labels[j] == 0 for i, j in neg[:200])


def test_hard_negative_mining_returns_blood_free_slices_the_model_flags() -> None:
    from bloodnet_ops.model.net import get_model
    from bloodnet_ops.model.train import mine_hard_negatives

    studies = _phantoms(6, seed=5)
    sampler = SliceSampler(studies)
    model = get_model("bloodnet", widths=TINY_WIDTHS)
    with torch.no_grad():  # a blood channel that fires everywhere: every slice is "hard"
        model.seg_head.bias[0] = 8.0
    picks, score = mine_hard_negatives(model, sampler, np.random.default_rng(0),
                                       torch.device("cpu"), pool=30, min_score=0.0)
    assert len(picks) == 30 and score.shape == (30,)
    assert ((score >= 0) & (score <= 1)).all()
    assert all(studies[i].slice_labels[j] == 0 for i, j in picks)
    strict, s2 = mine_hard_negatives(model, sampler, np.random.default_rng(0),
                                     torch.device("cpu"), pool=30, min_score=float(score.max()))
    assert 1 <= len(strict) <= 30 and (s2 >= score.max() - 1e-6).all()


def test_soft_targets_at_lesion_edges_and_bone() -> None:
    from bloodnet_ops.model.train import seg_loss, soft_target

    mask = torch.zeros(1, 9, 9, dtype=torch.uint8)
    mask[0, 2:7, 2:7] = 2
    hu = torch.full((1, 9, 9), 35.0)
    hu[0, :, 8] = 1500.0  # bone two pixels right of the bleed's edge
    mask[0, 2:7, 7] = 2  # the bleed touches it
    t = soft_target(mask, hu)[0]
    assert t[4, 4] == 1.0  # interior
    assert t[2, 4] == pytest.approx(0.7)  # edge
    assert t[4, 7] == pytest.approx(0.5)  # against bone
    assert t[0, 0] == 0.0
    logits = torch.zeros(1, 6, 9, 9)
    assert float(seg_loss(logits, mask, hu)) != float(seg_loss(logits, mask))


def test_study_split_is_stratified_and_deterministic() -> None:
    studies = _phantoms(20, seed=2)
    a_train, a_val = split_studies(studies, val_frac=0.25, seed=5)
    _, b_val = split_studies(studies, val_frac=0.25, seed=5)
    assert [s.label.study_uid for s in a_val] == [s.label.study_uid for s in b_val]
    assert len(a_train) + len(a_val) == 20
    assert {s.label.ich for s in a_val} == {True, False}
    assert not {s.label.study_uid for s in a_train} & {s.label.study_uid for s in a_val}


def test_augmentation_keeps_shapes_labels_and_is_seeded() -> None:
    studies = _phantoms(4, seed=3)
    hu, mask, _, _ = SliceSampler(studies).batch(np.random.default_rng(1), 6)
    hu_t, mask_t = torch.from_numpy(hu), torch.from_numpy(mask)
    a = augment(hu_t, mask_t, generator=torch.Generator().manual_seed(4))
    b = augment(hu_t, mask_t, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].shape == hu_t.shape and a[1].shape == mask_t.shape
    assert set(torch.unique(a[1]).tolist()) <= {0, 4}
    # pure calibration shift: +offset HU everywhere, nothing else
    cfg = AugmentConfig(flip_p=0, rotate_deg=0, scale=(1, 1), shift=0, noise_sd=(0, 0),
                        corr_noise_p=0, blur_p=0, sharpen_p=0, partial_volume_p=0, lesion_p=0,
                        paste_p=0, calc_p=0, hu_gain=0, hu_offset=20)
    c, m = augment(hu_t, mask_t, cfg=cfg, generator=torch.Generator().manual_seed(0))
    diff = (c - hu_t).flatten(1)
    assert torch.allclose(diff.max(dim=1).values, diff.min(dim=1).values, atol=1e-2)
    assert float(diff.abs().max()) <= 20.0 + 1e-3
    assert torch.equal(m, mask_t)


def test_pasted_blobs_are_blood_dense_inside_brain_and_labelled() -> None:
    studies = _phantoms(4, seed=5)
    neg = next(s for s in studies if not s.label.ich)
    hu = torch.from_numpy(neg.hu[3:6].astype(np.float32))[None]
    mask = torch.zeros(SIZE, SIZE, dtype=torch.uint8)
    out, new = paste_blob(hu, mask, AugmentConfig(), torch.Generator().manual_seed(2))
    blob = new > 0
    assert blob.sum() > 3
    assert set(torch.unique(new).tolist()) == {0, PASTE_CODE}
    assert 45 < float(out[0, 1][blob].mean()) < 100  # blood density
    assert float(hu[0, 1][blob].mean()) < 45  # where brain was
    skull = hu[0, 1] > 500
    assert torch.equal(out[0, 1][skull], hu[0, 1][skull])  # bone and air are never touched


def test_pasted_calcifications_are_dense_and_never_labelled_blood() -> None:
    studies = _phantoms(4, seed=5)
    pos = next(s for s in studies if s.label.ich and s.mask is not None and s.mask.any())
    j = max(1, int(np.argmax((pos.mask > 0).reshape(pos.mask.shape[0], -1).sum(axis=1))))
    hu = torch.from_numpy(pos.hu[j - 1 : j + 2].astype(np.float32))[None]
    mask = torch.from_numpy(pos.mask[j].copy())
    out, new = paste_blob(hu, mask, AugmentConfig(), torch.Generator().manual_seed(4), dense=True)
    changed = (out[0, 1] - hu[0, 1]).abs() > 1
    core = changed & (out[0, 1] > 110)
    assert core.sum() > 0
    assert not bool((new[core] > 0).any())  # a calcification is background
    assert set(torch.unique(new).tolist()) <= set(torch.unique(mask).tolist())


def test_short_training_learns_a_planted_bleed() -> None:
    train, val, test = _phantoms(32, seed=10), _phantoms(10, seed=11), _phantoms(16, seed=12)
    cfg = TrainConfig(variant="bloodnet", size=SIZE, epochs=4, steps_per_epoch=20, batch_size=8,
                      widths=TINY_WIDTHS, study_epochs=15, progress=False, seed=0, threads=1)
    res = fit(train, val, cfg)
    losses = [h["loss"] for h in res.history]
    assert losses[-1] < losses[0]
    assert 0.0 < res.threshold < 1.0
    logits, bloods = study_scores(res.model, test, pick_device("cpu"))
    y = np.array([s.label.ich for s in test])
    auc = roc_auc(y, sigmoid(logits[:, 0]))
    assert auc >= 0.8, auc
    assert bloods[0] is not None and bloods[0].shape == test[0].hu.shape


def test_training_is_deterministic_for_a_seed() -> None:
    train = _phantoms(8, seed=20)
    cfg = TrainConfig(variant="cls-only", size=SIZE, epochs=1, steps_per_epoch=3, batch_size=4,
                      widths=TINY_WIDTHS, study_epochs=1, progress=False, seed=3, threads=1)
    a, b = fit(train, [], cfg), fit(train, [], cfg)
    for (na, pa), (_, pb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(pa, pb), na


# ----------------------------------------------------------------- synthetic DICOM + the CLI
@pytest.fixture(scope="module")
def cli_model(synth_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bloodnet_ops.cli import app

    out = tmp_path_factory.mktemp("model") / "tiny.pt"
    cache = tmp_path_factory.mktemp("cache")
    res = CliRunner().invoke(app, [
        "train", "--data", str(synth_small), "--out", str(out), "--epochs", "1", "--steps", "3",
        "--batch", "4", "--size", "64", "--widths", "4,8,16,32", "--study-epochs", "2",
        "--val-frac", "0.34", "--threads", "1", "--cache", str(cache)])
    assert res.exit_code == 0, res.output
    return out


def test_synthetic_data_set_loads_with_masks_aligned(synth_small: Path, tmp_path: Path) -> None:
    from bloodnet_ops.model.data import build_cache, read_labels

    labels = read_labels(synth_small / "labels.csv")
    studies = build_cache(synth_small, tmp_path, size=64, progress=False)
    assert len(studies) == len(labels) == 6
    for s in studies:
        assert s.mask is not None and s.mask.shape == s.hu.shape
        assert s.hu.shape[1:] == (64, 64)
        native = np.load(synth_small / "masks" / f"{s.label.study_uid}.npz")["mask"]
        assert bool(native.any()) == s.label.ich
        if s.label.ich and s.label.volume_ml > 5:  # large bleeds survive slabs and resampling
            est = float((s.mask > 0).sum() * np.prod(s.voxel_mm) / 1000)
            assert est == pytest.approx(s.label.volume_ml, rel=0.5)
    again = build_cache(synth_small, tmp_path, size=64, progress=False)  # from the cache
    assert [a.label for a in again] == [s.label for s in studies]


def test_cli_eval_reports_auc_with_ci(cli_model: Path, synth_small: Path, tmp_path: Path
                                      ) -> None:
    from bloodnet_ops.cli import app

    res = CliRunner().invoke(app, ["eval", "--data", str(synth_small), "--model", str(cli_model),
                                   "--json", "--boot", "200", "--cache", str(tmp_path)])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["studies"] == 6
    auc = rep["study_auc"]
    assert auc["ci_low"] <= auc["auc"] <= auc["ci_high"]
    assert set(rep["operating_point"]) >= {"sensitivity", "specificity", "ppv", "npv"}
    assert rep["per_site"] and rep["model_version"].startswith("bloodnet-bloodnet-")


def test_cli_predict_follows_the_json_contract(cli_model: Path, synth_small: Path) -> None:
    from bloodnet_ops.cli import app

    res = CliRunner().invoke(app, ["predict", str(synth_small), "--model", str(cli_model),
                                   "--json"])
    assert res.exit_code == 0, res.output
    docs = json.loads(res.stdout)
    assert isinstance(docs, list)
    studies = [d for d in docs if d["study_uid"] is not None]
    assert len(studies) == 6
    keys = {"study_uid", "series_uid", "site", "verdict", "reasons", "probability", "positive",
            "volume_ml", "subtypes"}
    for d in studies:
        assert keys <= set(d)
        assert d["verdict"] in ("accept", "accept_with_warning", "reject")
        if d["verdict"] == "reject":
            assert d["probability"] is None
        else:
            assert 0.0 <= d["probability"] <= 1.0
            assert isinstance(d["positive"], bool) and d["volume_ml"] >= 0
            assert set(d["subtypes"]) <= {"EDH", "SDH", "SAH", "IPH", "IVH"}
    for d in docs:
        if d["study_uid"] is None:
            assert d["key"] and d["reasons"]


def _png_chunks(data: bytes) -> list[bytes]:
    import struct

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    out, pos = [], 8
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        out.append(data[pos + 4:pos + 8])
        pos += 12 + n
    return out


def test_cli_explain_writes_a_key_image_per_scored_study(cli_model: Path, synth_small: Path,
                                                          tmp_path: Path) -> None:
    from PIL import Image

    from bloodnet_ops.cli import app

    out = tmp_path / "keys"
    res = CliRunner().invoke(app, ["explain", str(synth_small), "--out", str(out), "--model",
                                   str(cli_model)])
    assert res.exit_code == 0, res.output
    index = json.loads((out / "index.json").read_text())
    assert len(index) == 6
    for row in index:
        data = (out / row["file"]).read_bytes()
        assert set(_png_chunks(data)) == {b"IHDR", b"IDAT", b"IEND"}  # no text chunks: no PHI
        img = np.asarray(Image.open(out / row["file"]).convert("RGB"))
        assert img.shape[1] == 512 and img.shape[0] > 256  # plain | outlined, >= 1 slice row
        assert 0.0 <= row["probability"] <= 1.0 and row["volume_ml"] >= 0


def test_key_image_outlines_the_blood_and_picks_its_slices() -> None:
    import io

    from PIL import Image

    from bloodnet_ops import keyimage

    hu = np.full((6, 64, 64), 30.0, np.float32)
    blood = np.zeros_like(hu)
    blood[4, 20:30, 20:30] = 0.9
    blood[1, 10:12, 10:12] = 0.8
    picks = keyimage.key_slices(blood, n=2)
    assert [k.index for k in picks] == [1, 4] and picks[1].blood_voxels == 100
    png = keyimage.render(hu, blood, probability=0.97, positive=True, volume_ml=3.2, n=1,
                          tile=64)
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    red = (img[..., 0] == 255) & (img[..., 1] == 40) & (img[..., 2] == 40)
    cols = np.flatnonzero(red.any(axis=0))
    assert red.sum() > 20 and cols.min() >= 64  # the outline is on the right-hand copy only


def test_cli_calibrate_stores_the_map_and_a_threshold_for_the_target(
        cli_model: Path, synth_small: Path, tmp_path: Path) -> None:
    from bloodnet_ops.cli import app
    from bloodnet_ops.model.checkpoint import load_checkpoint

    out = tmp_path / "calibrated.pt"
    res = CliRunner().invoke(app, ["calibrate", "--data", str(synth_small), "--model",
                                   str(cli_model), "--out", str(out), "--json",
                                   "--target-sensitivity", "1.0", "--cache", str(tmp_path)])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["sensitivity"] == 1.0 and rep["studies"] == 6
    meta = load_checkpoint(out).meta
    assert meta["calibration"]["method"] == "platt"
    assert meta["threshold"] == pytest.approx(rep["threshold"])
    assert meta["selection"]["set"] == synth_small.name
    res = CliRunner().invoke(app, ["eval", "--data", str(synth_small), "--model", str(out),
                                   "--json", "--boot", "50", "--cache", str(tmp_path),
                                   "--target-sensitivity", "0.5", "--reliability",
                                   str(tmp_path / "rel.png")])
    assert res.exit_code == 0, res.output
    ev = json.loads(res.stdout)
    assert ev["operating_point"]["sensitivity"]["estimate"] == 1.0  # stored threshold
    assert ev["at_target"]["sensitivity"]["estimate"] >= 0.5
    assert 0.0 <= ev["calibration"]["ece"] <= 1.0 and (tmp_path / "rel.png").stat().st_size
    res = CliRunner().invoke(app, ["predict", str(synth_small), "--model", str(out), "--json"])
    docs = [d for d in json.loads(res.stdout) if d.get("probability") is not None]
    assert docs and all(d["positive"] == (d["probability"] >= meta["threshold"] - 1e-6)
                        for d in docs)


def test_gpu_recipe_renders_in_memory_and_respects_its_time_budget(tmp_path: Path) -> None:
    """The lent-GPU recipe, run on the CPU with a toy budget: studies rendered without DICOM,
    stage 1 stopped by the wall clock, a loadable checkpoint written."""
    from bloodnet_ops.model import gpu_recipe
    from bloodnet_ops.model.checkpoint import load_checkpoint
    from bloodnet_ops.model.synthdata import render_many

    studies = render_many(studies=3, sites=1, seed=5, matrix=128, size=48, positive_rate=0.7)
    assert len(studies) == 3 and all(s.hu.shape[1:] == (48, 48) for s in studies)
    for s in studies:
        assert s.mask is not None
        if not s.label.ich or s.label.volume_ml > 5:  # tiny bleeds may vanish at 48²
            assert bool((s.mask > 0).any()) == s.label.ich
        assert -1100 < float(s.hu.min()) and float(s.hu.max()) < 3100
    out = tmp_path / "gpu.pt"
    t0 = time.perf_counter()
    assert gpu_recipe.main(["--out", str(out), "--studies", "5", "--stack-studies", "3",
                            "--val-studies", "3", "--workers", "1", "--size", "48",
                            "--batch", "4", "--budget-s", "4", "--device", "cpu"]) == 0
    meta = load_checkpoint(out).meta
    assert meta["train_config"]["max_seconds"] == 4
    assert time.perf_counter() - t0 < 240
    hist = meta["metrics"]["history"]
    assert hist and len(hist) < 20  # stopped by the budget, not by the step count


def test_ablation_over_seeds_reports_mean_sd_and_delong_per_seed(synth_small: Path,
                                                                 tmp_path: Path) -> None:
    from bloodnet_ops.model.ablation import run_ablation_seeds

    cfg = TrainConfig(size=48, epochs=1, steps_per_epoch=2, batch_size=4, widths=TINY_WIDTHS,
                      study_epochs=1, progress=False, threads=1, mine_every=1)
    doc = run_ablation_seeds(synth_small, tmp_path / "abl", base=cfg, seeds=[0, 1],
                             variants=["bloodnet", "seg-only"], n_boot=50, cache_root=tmp_path,
                             test_dir=synth_small)
    rows = {r["variant"]: r for r in doc["summary"]}
    assert set(rows) == {"bloodnet", "seg-only"}
    for r in rows.values():
        assert len(r["auc_per_seed"]) == 2
        assert r["auc_mean"] == pytest.approx(np.mean(r["auc_per_seed"]))
        assert r["auc_sd"] == pytest.approx(np.std(r["auc_per_seed"], ddof=1))
    assert rows["bloodnet"]["delong_p_per_seed"] == [None, None]
    assert all(0 <= p <= 1 for p in rows["seg-only"]["delong_p_per_seed"])
    md = (tmp_path / "abl" / "ablation.md").read_text()
    assert "mean ± sd" in md and "`seg-only`" in md
    assert (tmp_path / "abl" / "seed-1" / "ablation.json").exists()
