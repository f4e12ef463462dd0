"""Statistics of bloodnet_ops.model.metrics against scikit-learn, published values and brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from bloodnet_ops.model.metrics import (
    binary_metrics,
    bootstrap_auc_ci,
    choose_threshold,
    delong_ci,
    delong_covariance,
    delong_test,
    dice,
    roc_auc,
    roc_curve,
    wilson_ci,
)

# DeLong, DeLong & Clarke-Pearson (1988): ovarian cancer patients with intestinal obstruction,
# albumin, total protein and K-G score (as 10 - score, larger = better), outcome popind. The 43
# complete records as printed in the SAS/STAT PROC LOGISTIC example "Comparing Receiver Operating
# Characteristic Curves".
DELONG_1988 = np.array([
    [3.0, 5.8, 10, 0], [3.2, 6.3, 5, 1], [3.9, 6.8, 3, 1], [2.8, 4.8, 6, 0],
    [3.2, 5.8, 3, 1], [0.9, 4.0, 5, 0], [2.5, 5.7, 8, 0], [1.6, 5.6, 5, 1],
    [3.8, 5.7, 5, 1], [3.7, 6.7, 6, 1], [3.2, 5.4, 4, 1], [3.8, 6.6, 6, 1],
    [4.1, 6.6, 5, 1], [3.6, 5.7, 5, 1], [4.3, 7.0, 4, 1], [3.6, 6.7, 4, 0],
    [2.3, 4.4, 6, 1], [4.2, 7.6, 4, 0], [4.0, 6.6, 6, 0], [3.5, 5.8, 6, 1],
    [3.8, 6.8, 7, 1], [3.0, 4.7, 8, 0], [4.5, 7.4, 5, 1], [3.7, 7.4, 5, 1],
    [3.1, 6.6, 6, 1], [4.1, 8.2, 6, 1], [4.3, 7.0, 5, 1], [4.3, 6.5, 4, 1],
    [3.2, 5.1, 5, 1], [2.6, 4.7, 6, 1], [3.3, 6.8, 6, 0], [1.7, 4.0, 7, 0],
    [3.7, 6.1, 5, 1], [3.3, 6.3, 7, 1], [4.2, 7.7, 6, 1], [3.5, 6.2, 5, 1],
    [2.9, 5.7, 9, 0], [2.1, 4.8, 7, 1], [2.8, 6.2, 8, 0], [4.0, 7.0, 7, 1],
    [3.3, 5.7, 6, 1], [3.7, 6.9, 5, 1], [3.6, 6.6, 5, 1],
])


def _delong_data() -> tuple[np.ndarray, np.ndarray]:
    y = DELONG_1988[:, 3].astype(int)
    scores = np.vstack([DELONG_1988[:, 0], DELONG_1988[:, 1], 10 - DELONG_1988[:, 2]])
    return y, scores


def _brute_force_delong(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong (1988) by definition: ψ over every (positive, negative) pair, O(m·n)."""
    aucs, v10s, v01s = [], [], []
    for s in scores:
        x, z = s[y == 1], s[y == 0]
        psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
        aucs.append(psi.mean())
        v10s.append(psi.mean(axis=1))
        v01s.append(psi.mean(axis=0))
    v10, v01 = np.array(v10s), np.array(v01s)
    cov = np.cov(v10) / v10.shape[1] + np.cov(v01) / v01.shape[1]
    return np.array(aucs), np.atleast_2d(cov)


def _random(n: int = 150, seed: int = 3, ties: bool = False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s1 = rng.normal(size=n) + 1.2 * y
    s2 = rng.normal(size=n) + 0.4 * y
    if ties:
        s1, s2 = np.round(s1), np.round(s2 * 2) / 2
    return y, s1, s2


@pytest.mark.parametrize("ties", [False, True])
def test_auc_matches_scikit_learn(ties: bool) -> None:
    y, s1, s2 = _random(ties=ties)
    assert roc_auc(y, s1) == pytest.approx(roc_auc_score(y, s1), abs=1e-12)
    assert roc_auc(y, s2) == pytest.approx(roc_auc_score(y, s2), abs=1e-12)
    # invariant to monotone transforms
    assert roc_auc(y, np.exp(s1)) == pytest.approx(roc_auc(y, s1), abs=1e-12)


def test_auc_of_the_hanley_mcneil_rating_example() -> None:
    # Hanley & McNeil (1982), Radiology 143:29, Table 1: CT ratings 1..5 of 58 normal and 51
    # abnormal patients; published trapezoidal area 0.893.
    normal, abnormal = [33, 6, 6, 11, 2], [3, 2, 2, 11, 33]
    y = np.r_[np.zeros(58), np.ones(51)]
    s = np.r_[np.repeat(np.arange(1, 6), normal), np.repeat(np.arange(1, 6), abnormal)]
    assert round(roc_auc(y, s), 3) == 0.893


def test_roc_curve_matches_scikit_learn() -> None:
    y, _, s2 = _random(ties=True)
    fpr, tpr, thr = roc_curve(y, s2)
    sk_fpr, sk_tpr, sk_thr = sk_roc_curve(y, s2, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    np.testing.assert_allclose(thr[1:], sk_thr[1:])
    assert np.isinf(thr[0])


def test_delong_covariance_matches_brute_force_on_the_delong_1988_data() -> None:
    y, scores = _delong_data()
    aucs, cov = delong_covariance(y, scores)
    ref_aucs, ref_cov = _brute_force_delong(y, scores)
    np.testing.assert_allclose(aucs, ref_aucs, atol=1e-12)
    np.testing.assert_allclose(cov, ref_cov, atol=1e-12)
    for k in range(3):
        assert aucs[k] == pytest.approx(roc_auc_score(y, scores[k]), abs=1e-12)


@pytest.mark.parametrize("ties", [False, True])
def test_delong_covariance_matches_brute_force_on_random_data(ties: bool) -> None:
    y, s1, s2 = _random(n=90, ties=ties)
    aucs, cov = delong_covariance(y, np.vstack([s1, s2]))
    ref_aucs, ref_cov = _brute_force_delong(y, np.vstack([s1, s2]))
    np.testing.assert_allclose(aucs, ref_aucs, atol=1e-12)
    np.testing.assert_allclose(cov, ref_cov, atol=1e-12)


def test_delong_test_statistic_and_symmetry() -> None:
    y, scores = _delong_data()
    res = delong_test(y, scores[0], scores[2])
    _, cov = _brute_force_delong(y, scores[[0, 2]])
    z = (res.auc1 - res.auc2) / math.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    assert res.z == pytest.approx(z, rel=1e-10)
    assert res.p_value == pytest.approx(math.erfc(abs(z) / math.sqrt(2)), rel=1e-10)
    swapped = delong_test(y, scores[2], scores[0])
    assert swapped.z == pytest.approx(-res.z)
    assert swapped.p_value == pytest.approx(res.p_value)
    assert res.ci.low < res.difference < res.ci.high


def test_delong_test_of_identical_scores_is_z0_p1() -> None:
    y, s1, _ = _random()
    res = delong_test(y, s1, s1)
    assert (res.z, res.p_value, res.difference) == (0.0, 1.0, 0.0)


def test_delong_test_separates_a_strong_from_a_weak_marker() -> None:
    y, s1, s2 = _random(n=400)
    assert delong_test(y, s1, s2).p_value < 1e-4
    rng = np.random.default_rng(11)
    same = rng.normal(size=y.size) + 1.2 * y
    assert delong_test(y, s1, same).p_value > 0.05


def test_delong_ci_contains_the_auc() -> None:
    y, s1, _ = _random()
    ci = delong_ci(y, s1)
    assert ci.low < ci.estimate < ci.high
    _, cov = _brute_force_delong(y, s1[None])
    assert ci.high - ci.estimate == pytest.approx(1.959964 * math.sqrt(cov[0, 0]), rel=1e-5)


def test_bootstrap_ci_is_reproducible_and_shrinks_with_n() -> None:
    y, s1, _ = _random(n=120)
    a = bootstrap_auc_ci(y, s1, n_boot=500, seed=1)
    b = bootstrap_auc_ci(y, s1, n_boot=500, seed=1)
    assert a == b
    assert a.low < a.estimate < a.high
    yl, sl, _ = _random(n=1200)
    big = bootstrap_auc_ci(yl, sl, n_boot=500, seed=1)
    assert (big.high - big.low) < (a.high - a.low)
    # bootstrap and DeLong agree roughly on the width
    dl = delong_ci(yl, sl)
    assert (big.high - big.low) == pytest.approx(dl.high - dl.low, rel=0.2)
    plain = bootstrap_auc_ci(y, s1, n_boot=200, seed=2, stratified=False)
    assert plain.low < plain.estimate < plain.high


@pytest.mark.parametrize(("k", "n", "low", "high"), [
    # Newcombe (1998), Stat Med 17:857, Table I, method 3 (Wilson score, no continuity correction)
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0000, 0.1611),
    (1, 29, 0.0061, 0.1718),
])
def test_wilson_interval_matches_newcombe_1998(k: int, n: int, low: float, high: float) -> None:
    ci = wilson_ci(k, n)
    assert ci.estimate == pytest.approx(k / n)
    assert round(ci.low, 4) == low
    assert round(ci.high, 4) == high


def test_wilson_edge_cases() -> None:
    empty = wilson_ci(0, 0)
    assert math.isnan(empty.estimate) and (empty.low, empty.high) == (0.0, 1.0)
    assert wilson_ci(10, 10).high == 1.0
    with pytest.raises(ValueError, match="k=5, n=3"):
        wilson_ci(5, 3)


def test_binary_metrics_counts_and_rates() -> None:
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    s = np.array([0.9, 0.8, 0.7, 0.2, 0.75, 0.3, 0.2, 0.1, 0.1, 0.0])
    m = binary_metrics(y, s, 0.5)
    assert (m.tp, m.fn, m.fp, m.tn) == (3, 1, 1, 5)
    assert m.sensitivity.estimate == pytest.approx(0.75)
    assert m.specificity.estimate == pytest.approx(5 / 6)
    assert m.ppv.estimate == pytest.approx(0.75)
    assert m.npv.estimate == pytest.approx(5 / 6)
    assert m.sensitivity == wilson_ci(3, 4)
    none = binary_metrics(y, s, 2.0)
    assert math.isnan(none.ppv.estimate)
    assert none.as_dict()["tn"] == 6


def test_choose_threshold() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.8])
    t = choose_threshold(y, s)
    assert 0.3 < t < 0.6
    y2 = np.array([0, 0, 1, 0, 1, 1, 1, 0])
    s2 = np.array([0.1, 0.2, 0.25, 0.3, 0.5, 0.6, 0.7, 0.8])
    t2 = choose_threshold(y2, s2, min_sensitivity=1.0)
    assert binary_metrics(y2, s2, t2).sensitivity.estimate == 1.0
    assert 0.2 < t2 < 0.25


def test_dice() -> None:
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    assert dice(a, b) == 1.0
    a[0, :2] = True
    b[0, 1:3] = True
    assert dice(a, b) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="shapes differ"):
        dice(a, b[:2])


def test_inputs_are_checked() -> None:
    with pytest.raises(ValueError, match="both classes"):
        roc_auc(np.ones(4), np.arange(4.0))
    with pytest.raises(ValueError, match="5 cases, y has 4"):
        roc_auc(np.array([0, 1, 0, 1]), np.arange(5.0))
    with pytest.raises(ValueError, match="1 positive, 3 negative"):
        delong_ci(np.array([0, 1, 0, 0]), np.arange(4.0))
    with pytest.raises(ValueError, match="only 0 and 1"):
        roc_auc(np.array([0, 2, 0, 1]), np.arange(4.0))
