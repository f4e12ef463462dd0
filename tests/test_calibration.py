"""Calibration: fitted maps lower the ECE of a miscalibrated model, keep its ranking, and the
threshold for a target sensitivity is the one a hand count gives."""

from __future__ import annotations

import numpy as np
import pytest

from bloodnet_ops.model.calibration import (
    Calibration,
    ece,
    fit,
    reliability_png,
    reliability_table,
    threshold_for_sensitivity,
)
from bloodnet_ops.model.metrics import roc_auc


def _overconfident(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """True probabilities from a logistic model; the "model" reports logits 4x too large and
    shifted, as an over-confident network does on new data."""
    rng = np.random.default_rng(seed)
    z_true = rng.normal(-0.5, 1.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z_true))).astype(int)
    return 4.0 * z_true + 2.0, y


def test_ece_of_a_hand_example() -> None:
    # two bins used: [0.1, 0.2) holds p=0.1 x2 with rate 0.5; [0.9, 1.0] holds p=0.9 x2, rate 1
    y = np.array([0, 1, 1, 1])
    p = np.array([0.1, 0.1, 0.9, 0.9])
    assert ece(y, p) == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)
    assert ece(np.array([0, 1]), np.array([0.0, 1.0])) == 0.0
    table = reliability_table(y, p)
    assert sum(r["n"] for r in table) == 4 and table[1]["observed_rate"] == 0.5


@pytest.mark.parametrize("method", ["temperature", "platt", "isotonic"])
def test_fitting_lowers_ece_and_keeps_the_ranking(method: str) -> None:
    z, y = _overconfident()
    before = ece(y, Calibration()(z))
    cal = fit(z, y, method=method)
    p = cal(z)
    assert before > 0.1
    assert ece(y, p) < 0.5 * before
    if method != "temperature":  # one parameter cannot undo the shift as well
        assert ece(y, p) < 0.05
    if method != "isotonic":  # strictly monotone: same AUC
        assert roc_auc(y, p) == pytest.approx(roc_auc(y, Calibration()(z)))
    # held-out data from the same process is calibrated too
    z2, y2 = _overconfident(seed=1)
    assert ece(y2, cal(z2)) < 0.5 * ece(y2, Calibration()(z2))
    again = Calibration.from_dict(cal.as_dict())
    assert np.allclose(again(z2), cal(z2))


def test_platt_recovers_the_scaling() -> None:
    z, y = _overconfident(20000, seed=2)
    cal = fit(z, y, method="platt")
    assert cal.a == pytest.approx(0.25, abs=0.03)  # undoes the factor 4
    assert cal.b == pytest.approx(-0.5, abs=0.12)  # and the shift of 2


def test_threshold_for_sensitivity_matches_a_hand_count() -> None:
    y = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0])
    p = np.array([0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.35, 0.65])
    assert threshold_for_sensitivity(y, p, 1.0) == 0.2
    assert threshold_for_sensitivity(y, p, 0.9) == 0.3  # one positive of ten may fall below
    assert threshold_for_sensitivity(y, p, 0.8) == 0.4
    t = threshold_for_sensitivity(y, p, 0.95)
    assert np.mean(p[y == 1] >= t) >= 0.95
    with pytest.raises(ValueError):
        threshold_for_sensitivity(y, p, 0.0)
    with pytest.raises(ValueError):
        fit(np.zeros(4), np.zeros(4))


def test_reliability_png(tmp_path) -> None:
    z, y = _overconfident(500)
    path = reliability_png(y, Calibration()(z), tmp_path / "rel.png", title="test")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    from PIL import Image

    img = np.asarray(Image.open(path).convert("RGB"))
    red = (img[..., 0] > 150) & (img[..., 1] < 80) & (img[..., 2] < 80)
    assert red.sum() > 50  # the curve is drawn
