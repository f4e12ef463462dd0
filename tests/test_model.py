"""BloodNet architecture, preprocessing, checkpoints and the Predictor (tiny widths, CPU)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from bloodnet_ops.model.checkpoint import content_hash, load_checkpoint, save_checkpoint
from bloodnet_ops.model.net import SUBTYPES, ModelConfig, get_model, list_models, register_model
from bloodnet_ops.model.prep import (
    prepare_mask,
    prepare_volume,
    slab_average,
    slab_groups,
    to_native,
)
from bloodnet_ops.model.windows import BONE, BRAIN, N_CHANNELS, SUBDURAL, slice_channels

TINY = {"widths": (4, 8, 16, 32), "embed_dim": 8, "gru_hidden": 8}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize("stem_stride", [1, 2])
@pytest.mark.parametrize("name", list_models())
def test_every_variant_has_the_documented_shapes(name: str, stem_stride: int) -> None:
    model = get_model(name, **TINY, stem_stride=stem_stride).eval()
    out = model(torch.rand(3, N_CHANNELS, 32, 32))
    assert out.slice_logit.shape == (3,)
    assert out.embedding.shape[0] == 3
    if model.has_seg:
        assert out.seg_logits is not None
        assert out.seg_logits.shape == (3, 1 + len(SUBTYPES), 32, 32)
    else:
        assert out.seg_logits is None
    emb = out.embedding.detach().unsqueeze(0).repeat(2, 1, 1)
    logits = out.slice_logit.detach().unsqueeze(0).repeat(2, 1)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    study = model.aggregate(emb, logits, mask)
    assert study.shape == (2, 1 + len(SUBTYPES))
    assert torch.isfinite(study).all()


def test_registry_rejects_unknown_and_duplicate_names() -> None:
    assert list_models() == ["bloodnet", "independent", "cls-only", "seg-only"]
    with pytest.raises(ValueError, match="unknown model 'resnet50'"):
        get_model("resnet50")
    with pytest.raises(ValueError, match="already registered"):
        register_model("bloodnet", lambda cfg: get_model("bloodnet", config=cfg))
    with pytest.raises(ValueError, match="unknown ModelConfig fields"):
        get_model("bloodnet", depth=3)


def _cls_grads(name: str) -> dict[str, torch.Tensor | None]:
    model = get_model(name, **TINY).train()
    out = model(torch.rand(4, N_CHANNELS, 32, 32))
    torch.nn.functional.binary_cross_entropy_with_logits(
        out.slice_logit, torch.tensor([1.0, 0.0, 1.0, 0.0])).backward()
    return {n: p.grad for n, p in model.named_parameters()}


def test_classification_gradients_reach_segmentation_head_in_bloodnet() -> None:
    grads = _cls_grads("bloodnet")
    seg = [g for n, g in grads.items() if n.startswith(("seg_head.", "decoder."))]
    assert seg and all(g is not None for g in seg)
    assert sum(float(g.abs().sum()) for g in seg) > 0


def test_classification_gradients_do_not_reach_segmentation_head_in_independent() -> None:
    grads = _cls_grads("independent")
    seg = [g for n, g in grads.items() if n.startswith(("seg_head.", "decoder."))]
    assert seg
    assert all(g is None or float(g.abs().sum()) == 0 for g in seg)
    enc = [g for n, g in grads.items() if n.startswith("encoder.")]
    assert sum(float(g.abs().sum()) for g in enc if g is not None) > 0  # the shared part learns


def test_windows_map_hu_to_unit_range() -> None:
    hu = torch.tensor([-1024.0, 0.0, 40.0, 80.0, 1000.0, 3000.0])
    assert BRAIN(hu.clone()).tolist() == pytest.approx([0, 0, 0.5, 1, 1, 1])
    assert SUBDURAL(hu.clone()).tolist() == pytest.approx([0, 0.1, 0.3, 0.5, 1, 1])
    assert BONE(hu.clone())[4].item() == pytest.approx((1000 + 800) / 2800)


def test_slice_channels_carry_the_neighbours() -> None:
    vol = np.stack([np.full((4, 4), v, np.float32) for v in (0.0, 40.0, 80.0)])
    ch = slice_channels(vol)
    assert ch.shape == (3, N_CHANNELS, 4, 4)
    # slice 1: brain window of itself 0.5, below (0 HU) 0, above (80 HU) 1
    assert ch[1, 0, 0, 0] == pytest.approx(0.5)
    assert ch[1, 3, 0, 0] == pytest.approx(0.0)
    assert ch[1, 4, 0, 0] == pytest.approx(1.0)
    assert ch[0, 3, 0, 0] == pytest.approx(0.0)  # edge repeats itself


def _head(z: int = 20, n: int = 96, radius: float = 30.0, centre: tuple = (50, 44)
          ) -> np.ndarray:
    yy, xx = np.mgrid[:n, :n]
    r = np.hypot(yy - centre[0], xx - centre[1])
    vol = np.full((z, n, n), -1024.0, np.float32)
    vol[:, r < radius] = 1200.0
    vol[:, r < radius - 3] = 35.0
    return vol


@pytest.mark.parametrize(("dz", "group"), [(5.0, 1), (4.0, 1), (2.5, 2), (1.25, 4), (0.625, 8)])
def test_thin_slices_are_averaged_into_5mm_slabs(dz: float, group: int) -> None:
    sizes = slab_groups(17, dz)
    assert sizes.sum() == 17
    assert sizes.max() == group
    vol = np.arange(17, dtype=np.float32)[:, None] * np.ones((1, 3))
    slabs = slab_average(vol, sizes)
    assert slabs[0, 0] == pytest.approx(np.arange(group).mean())


def test_prepare_volume_crops_the_head_and_records_voxel_size() -> None:
    vol = _head()
    prep = prepare_volume(vol, (2.5, 0.8, 0.8), size=32)
    assert prep.hu.shape == (10, 32, 32)
    y0, x0, side = prep.crop
    assert 58 <= side <= 70  # the head (diameter 60 px) plus a small margin, square
    assert y0 <= 20 and x0 <= 14
    assert prep.voxel_mm[0] == pytest.approx(5.0)
    assert prep.voxel_mm[1] == pytest.approx(0.8 * side / 32)
    # a table far from the head does not widen the crop
    with_table = vol.copy()
    with_table[:, 90:94, 5:90] = 0.0
    assert prepare_volume(with_table, (2.5, 0.8, 0.8), size=32).crop == prep.crop


def test_mask_and_native_mapping_round_trip() -> None:
    vol = _head()
    mask = np.zeros(vol.shape, np.uint8)
    mask[4:8, 40:56, 40:52] = 2
    prep = prepare_volume(vol, (2.5, 0.8, 0.8), size=48)
    small = prepare_mask(mask, prep, 48)
    assert set(np.unique(small)) == {0, 2}
    native = to_native((small > 0).astype(np.float32), prep)
    assert native.shape == vol.shape
    inter = np.logical_and(native >= 0.5, mask > 0).sum()
    assert 2 * inter / ((native >= 0.5).sum() + (mask > 0).sum()) > 0.8


def _checkpoint(tmp_path, variant: str = "bloodnet", size: int = 32):
    model = get_model(variant, **TINY)
    path = tmp_path / f"{variant}.pt"
    save_checkpoint(path, model, threshold=0.4, size=size, dataset={"studies": 0},
                    train_config={}, metrics={})
    return path, model


def test_checkpoint_round_trip_checks_hash_and_config(tmp_path) -> None:
    path, model = _checkpoint(tmp_path)
    loaded = load_checkpoint(path)
    assert loaded.meta["threshold"] == 0.4
    assert loaded.meta["trained_on"] == "synthetic"
    assert "not a medical device" in loaded.meta["intended_use"]
    assert content_hash(loaded.model.state_dict()) == content_hash(model.state_dict())
    assert loaded.model_version == f"bloodnet-bloodnet-{loaded.weights_sha256[:8]}"
    with pytest.raises(ValueError, match="expected 'independent', got 'bloodnet'"):
        load_checkpoint(path, variant="independent")
    doc = torch.load(path, weights_only=True)
    doc["state_dict"]["seg_head.bias"] += 1.0
    torch.save(doc, path)
    with pytest.raises(ValueError, match="content_sha256"):
        load_checkpoint(path)


@dataclass
class _Vol:
    hu: np.ndarray
    spacing: tuple[float, float, float]
    positions: np.ndarray
    sop_uids: list[str]


def test_predictor_scores_studies_and_computes_volume_in_ml(tmp_path) -> None:
    from bloodnet_ops.model.predictor import Predictor

    path, _ = _checkpoint(tmp_path)
    pred = Predictor(path, "cpu", batch_size=7)  # batches cut across studies
    assert pred.model_version.startswith("bloodnet-bloodnet-")
    assert pred.threshold == pytest.approx(0.4)
    vols = [_Vol(_head(z), (5.0, 0.5, 0.5), np.arange(z) * 5.0, [str(i) for i in range(z)])
            for z in (9, 4, 12)]
    items = [(f"1.2.{i}", f"1.3.{i}", v) for i, v in enumerate(vols)]
    findings, masks = pred.predict_masks(items)
    assert [f.study_uid for f in findings] == ["1.2.0", "1.2.1", "1.2.2"]
    for f, v, m in zip(findings, vols, masks):
        assert 0.0 <= f.probability <= 1.0
        assert f.positive == (f.probability >= 0.4)
        assert set(f.subtypes) == set(SUBTYPES)
        assert f.n_slices == v.hu.shape[0]
        assert m.shape == v.hu.shape
    again = pred.predict(items[:1])
    assert again[0].probability == pytest.approx(findings[0].probability, abs=1e-5)


def test_blood_volume_uses_true_spacing_after_resampling() -> None:
    from bloodnet_ops.model.infer import blood_volume_ml

    vol = _head(z=8, n=96)
    prep = prepare_volume(vol, (1.25, 0.5, 0.5), size=32)  # 4 slices → one 5 mm slab
    side = prep.crop[2]
    blood = np.zeros(prep.hu.shape, np.float32)
    blood[0, :10, :10] = 0.9  # 100 prepared voxels of 5 × (0.5·side/32)² mm³
    expected = 100 * 5.0 * (0.5 * side / 32) ** 2 / 1000
    assert blood_volume_ml(blood, prep.voxel_ml) == pytest.approx(expected)
    assert blood_volume_ml(None, prep.voxel_ml) == 0.0


def test_config_round_trip() -> None:
    cfg = ModelConfig(widths=(8, 16, 32, 64))
    assert ModelConfig.from_dict(cfg.as_dict()) == cfg
