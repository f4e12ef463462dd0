"""Diagnostic-accuracy statistics: ROC AUC with confidence intervals, DeLong's test, proportions.

Plain numpy/scipy, no torch, so the audit and drift code can import it cheaply. Conventions:

- ``y`` is a 0/1 array (1 = ICH present); ``scores`` are real numbers, larger = more likely ICH.
- AUC is the Mann–Whitney probability P(score_pos > score_neg) + ½ P(tie) (ties count half).
- Confidence intervals are two-sided at level ``1 - alpha`` and returned as :class:`Interval`.

References: DeLong, DeLong & Clarke-Pearson (1988) *Biometrics* 44:837; the fast midrank
algorithm of Sun & Xu (2014) *IEEE Signal Process. Lett.* 21:1389; Wilson (1927) *JASA* 22:209;
Hanley & McNeil (1982) *Radiology* 143:29.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

__all__ = [
    "BinaryMetrics",
    "DeLongResult",
    "Interval",
    "binary_metrics",
    "bootstrap_auc_ci",
    "choose_threshold",
    "delong_ci",
    "delong_covariance",
    "delong_test",
    "dice",
    "roc_auc",
    "roc_curve",
    "wilson_ci",
]


@dataclass(frozen=True, slots=True)
class Interval:
    """A point estimate with a two-sided confidence interval."""

    estimate: float
    low: float
    high: float
    level: float = 0.95

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class DeLongResult:
    """DeLong's test of H0: AUC1 == AUC2 for two scores on the same cases."""

    auc1: float
    auc2: float
    difference: float  #: auc1 - auc2
    z: float
    p_value: float  #: two-sided
    ci: Interval  #: CI of the difference

    def as_dict(self) -> dict:
        d = asdict(self)
        d["ci"] = self.ci.as_dict()
        return d


@dataclass(frozen=True, slots=True)
class BinaryMetrics:
    """Counts and rates at one threshold; every rate carries a Wilson interval.

    A rate whose denominator is zero is ``nan`` with interval (0, 1).
    """

    threshold: float
    tp: int
    fp: int
    tn: int
    fn: int
    sensitivity: Interval
    specificity: Interval
    ppv: Interval
    npv: Interval

    def as_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("threshold", "tp", "fp", "tn", "fn")}
        for k in ("sensitivity", "specificity", "ppv", "npv"):
            d[k] = getattr(self, k).as_dict()
        return d


def _check(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(int).ravel()
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 1:
        s = s[None]
    if s.shape[-1] != y.size:
        raise ValueError(f"scores have {s.shape[-1]} cases, y has {y.size}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y must contain only 0 and 1")
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        raise ValueError(f"AUC needs both classes; got {n_pos} positives of {y.size}")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    return y, s


def roc_auc(y: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann–Whitney, ties count ½). Equals sklearn's roc_auc_score."""
    y, s = _check(y, scores)
    ranks = stats.rankdata(s[0])
    m = int(y.sum())
    n = y.size - m
    return float((ranks[y == 1].sum() - m * (m + 1) / 2) / (m * n))


def roc_curve(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points (fpr, tpr, thresholds), thresholds descending; a case is positive when
    ``score >= threshold``. The first point is (0, 0) at threshold +inf."""
    y, s = _check(y, scores)
    s = s[0]
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last = np.r_[np.nonzero(np.diff(s_sorted))[0], y.size - 1]
    tps = np.cumsum(y_sorted)[last]
    fps = (last + 1) - tps
    tpr = np.r_[0.0, tps / y.sum()]
    fpr = np.r_[0.0, fps / (y.size - y.sum())]
    return fpr, tpr, np.r_[np.inf, s_sorted[last]]


def _structural_components(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                  np.ndarray]:
    """AUCs (k,), V10 (k, m) for positives and V01 (k, n) for negatives, via midranks."""
    pos, neg = s[:, y == 1], s[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    tx = stats.rankdata(pos, axis=1)
    ty = stats.rankdata(neg, axis=1)
    tz = stats.rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    aucs = (tz[:, :m].sum(axis=1) / m - (m + 1) / 2) / n
    v10 = (tz[:, :m] - tx) / n  # share of negatives below each positive
    v01 = 1.0 - (tz[:, m:] - ty) / m  # share of positives above each negative
    return aucs, v10, v01


def delong_covariance(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs (k,) and their DeLong covariance matrix (k, k) for k scores (k, N) on the same cases.

    O(k · N log N) (Sun & Xu's midrank formulation); the same estimator as pROC's ``var``.
    """
    y, s = _check(y, scores)
    aucs, v10, v01 = _structural_components(y, s)
    m, n = v10.shape[1], v01.shape[1]
    if m < 2 or n < 2:
        raise ValueError(f"DeLong's variance needs >= 2 cases per class; got {m} positive, "
                         f"{n} negative")
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return aucs, cov


def delong_ci(y: np.ndarray, scores: np.ndarray, *, alpha: float = 0.05) -> Interval:
    """AUC with a DeLong (asymptotic normal) interval, clipped to [0, 1]."""
    aucs, cov = delong_covariance(y, scores)
    se = float(np.sqrt(max(cov[0, 0], 0.0)))
    zc = stats.norm.ppf(1 - alpha / 2)
    a = float(aucs[0])
    return Interval(a, float(max(0.0, a - zc * se)), float(min(1.0, a + zc * se)), 1 - alpha)


def delong_test(y: np.ndarray, scores1: np.ndarray, scores2: np.ndarray, *,
                alpha: float = 0.05) -> DeLongResult:
    """DeLong's test for two correlated AUCs (two scores of the same cases).

    Identical scores give z = 0 and p = 1 (the 0/0 case), as pROC does.
    """
    aucs, cov = delong_covariance(y, np.vstack([np.ravel(scores1), np.ravel(scores2)]))
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    if var <= 1e-300:
        z, p, se = 0.0 if diff == 0 else np.copysign(np.inf, diff), 1.0 if diff == 0 else 0.0, 0.0
    else:
        se = np.sqrt(var)
        z = diff / se
        p = float(2 * stats.norm.sf(abs(z)))
    zc = stats.norm.ppf(1 - alpha / 2)
    ci = Interval(diff, float(diff - zc * se), float(diff + zc * se), 1 - alpha)
    return DeLongResult(float(aucs[0]), float(aucs[1]), diff, float(z), float(p), ci)


def bootstrap_auc_ci(y: np.ndarray, scores: np.ndarray, *, n_boot: int = 2000,
                     alpha: float = 0.05, seed: int = 0, stratified: bool = True) -> Interval:
    """AUC with a percentile bootstrap interval.

    Stratified resampling (positives and negatives separately, as pROC's default) keeps both
    classes in every replicate. Vectorised: one rank pass over an (n_boot, N) matrix.
    """
    y, s = _check(y, scores)
    s = s[0]
    rng = np.random.default_rng(seed)
    pos, neg = s[y == 1], s[y == 0]
    m, n = pos.size, neg.size
    if stratified:
        bp = pos[rng.integers(0, m, size=(n_boot, m))]
        bn = neg[rng.integers(0, n, size=(n_boot, n))]
    else:
        idx = rng.integers(0, y.size, size=(n_boot, y.size))
        yy, ss = y[idx], s[idx]
        keep = (yy.sum(axis=1) > 0) & (yy.sum(axis=1) < y.size)
        aucs = np.array([roc_auc(a, b) for a, b in zip(yy[keep], ss[keep])])
        lo, hi = np.quantile(aucs, [alpha / 2, 1 - alpha / 2])
        return Interval(roc_auc(y, s), float(lo), float(hi), 1 - alpha)
    ranks = stats.rankdata(np.concatenate([bp, bn], axis=1), axis=1)
    aucs = (ranks[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)
    lo, hi = np.quantile(aucs, [alpha / 2, 1 - alpha / 2])
    return Interval(roc_auc(y, s), float(lo), float(hi), 1 - alpha)


def wilson_ci(k: int, n: int, *, alpha: float = 0.05) -> Interval:
    """Proportion k/n with the Wilson score interval (no continuity correction).

    ``n == 0`` gives estimate ``nan`` and the uninformative interval (0, 1).
    """
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n; got k={k}, n={n}")
    if n == 0:
        return Interval(float("nan"), 0.0, 1.0, 1 - alpha)
    z = stats.norm.ppf(1 - alpha / 2)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if k == 0 else float(max(0.0, centre - half))  # exact bounds at the edges
    high = 1.0 if k == n else float(min(1.0, centre + half))
    return Interval(p, low, high, 1 - alpha)


def binary_metrics(y: np.ndarray, scores: np.ndarray, threshold: float, *,
                   alpha: float = 0.05) -> BinaryMetrics:
    """Sensitivity, specificity, PPV and NPV of ``score >= threshold``, with Wilson CIs."""
    y = np.asarray(y).astype(int).ravel()
    pred = np.asarray(scores, dtype=np.float64).ravel() >= threshold
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    tn = int(np.sum(~pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    return BinaryMetrics(
        float(threshold), tp, fp, tn, fn,
        wilson_ci(tp, tp + fn, alpha=alpha),
        wilson_ci(tn, tn + fp, alpha=alpha),
        wilson_ci(tp, tp + fp, alpha=alpha),
        wilson_ci(tn, tn + fn, alpha=alpha),
    )


def choose_threshold(y: np.ndarray, scores: np.ndarray, *, min_sensitivity: float | None = None
                     ) -> float:
    """An operating threshold on validation scores.

    Default: maximum Youden index (sensitivity + specificity − 1), ties to the lower threshold.
    With ``min_sensitivity``: the highest threshold whose sensitivity reaches it (so the most
    specific such point). The returned threshold sits halfway to the next lower score so it is
    not on top of a validation case.
    """
    fpr, tpr, thr = roc_curve(y, scores)
    if min_sensitivity is None:
        youden = tpr - fpr
        i = int(np.flatnonzero(youden == youden.max())[-1])
    else:
        ok = np.flatnonzero(tpr >= min_sensitivity)
        i = int(ok[0])
    i = max(i, 1)  # never the +inf point
    lower = thr[i + 1] if i + 1 < thr.size else thr[i] - 1e-6
    return float((thr[i] + lower) / 2) if np.isfinite(lower) else float(thr[i])


def dice(pred: np.ndarray, truth: np.ndarray, *, empty: float = 1.0) -> float:
    """Dice coefficient 2|A∩B| / (|A| + |B|) of two boolean masks; ``empty`` when both are empty."""
    a = np.asarray(pred, dtype=bool)
    b = np.asarray(truth, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    denom = int(a.sum()) + int(b.sum())
    if denom == 0:
        return float(empty)
    return float(2 * np.logical_and(a, b).sum() / denom)
