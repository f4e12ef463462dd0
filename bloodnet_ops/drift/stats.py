"""Two-sample drift statistics: PSI, KS, chi-square, CUSUM and a two-proportion test.

Every function returns a :class:`Stat` (the statistic's value plus a p-value where one exists), so
the monitor can turn any of them into an ok / warn / alert row with one rule. Small samples get
care:

- PSI is biased upward when bins are sparse (its null expectation is about
  ``(bins - 1) * (1/n_ref + 1/n_cur)``), so the number of bins shrinks with the sample and every PSI
  comes with the p-value of a chi-square test on the same binned counts; the monitor escalates only
  when that test agrees.
- The chi-square test merges categories whose expected counts are tiny, and a 2×2 table with any
  expected count under 5 uses Fisher's exact test instead.
- The two-proportion test is a pooled z-test when every expected cell is at least 5, else Fisher.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

#: Floor for an empty bin's share in PSI (the log of zero is undefined; this is the usual fix).
PSI_EPS = 1e-4
#: Expected count under which a category is merged into "other" (the chi-square rule of thumb).
MIN_EXPECTED = 5.0
#: Samples per PSI bin we aim for; fewer samples → fewer bins (between 2 and ``max_bins``).
SAMPLES_PER_BIN = 20
#: Null draws behind a CUSUM p-value (its resolution is 1 / (draws + 1)), and their fixed seed.
CUSUM_DRAWS = 20000
CUSUM_SEED = 20190701


@dataclass(frozen=True, slots=True)
class Stat:
    """One statistic: its value, a p-value when the statistic has one, and the sample sizes."""

    value: float
    p_value: float | None
    n_reference: int
    n_recent: int


def _finite(values: Iterable[float | None]) -> np.ndarray:
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    return arr[np.isfinite(arr)]


def _psi_from_counts(ref: np.ndarray, cur: np.ndarray) -> float:
    p = np.maximum(ref / max(ref.sum(), 1), PSI_EPS)
    q = np.maximum(cur / max(cur.sum(), 1), PSI_EPS)
    return float(np.sum((q - p) * np.log(q / p)))


def _chi2_p(table: np.ndarray) -> float:
    """p-value of a 2×k homogeneity test; Fisher exact for a sparse 2×2."""
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 1.0
    expected = sps.contingency.expected_freq(table)
    if table.shape[1] == 2 and expected.min() < MIN_EXPECTED:
        return float(sps.fisher_exact(table).pvalue)
    return float(sps.chi2_contingency(table, correction=table.shape[1] == 2).pvalue)


def psi(
    reference: Sequence[float | None],
    recent: Sequence[float | None],
    *,
    max_bins: int = 10,
) -> Stat:
    """Population stability index of a numeric feature, binned on reference quantiles.

    Bins are the reference's quantiles (ties collapse, so a constant feature gets one edge), with
    ``min(max_bins, n_small // SAMPLES_PER_BIN)`` bins but at least 2. The p-value is a chi-square
    test of the same binned counts. Conventional reading: < 0.1 stable, 0.1–0.25 moderate,
    > 0.25 shifted.
    """
    ref, cur = _finite(reference), _finite(recent)
    if ref.size == 0 or cur.size == 0:
        return Stat(math.nan, None, int(ref.size), int(cur.size))
    bins = int(np.clip(min(ref.size, cur.size) // SAMPLES_PER_BIN, 2, max_bins))
    inner = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    # right=True puts values equal to an edge in the lower bin, so a constant feature whose
    # recent values equal the reference's constant lands in the same bin.
    ref_counts = np.bincount(np.digitize(ref, inner, right=True), minlength=inner.size + 1)
    cur_counts = np.bincount(np.digitize(cur, inner, right=True), minlength=inner.size + 1)
    value = _psi_from_counts(ref_counts.astype(float), cur_counts.astype(float))
    p = _chi2_p(np.vstack([ref_counts, cur_counts]))
    return Stat(value, p, int(ref.size), int(cur.size))


def _merged_table(
    reference: Sequence[Hashable | None], recent: Sequence[Hashable | None]
) -> np.ndarray:
    """2×k counts over the union of categories; rare ones merged into one "other" column."""
    ref_c = Counter("<none>" if v is None else v for v in reference)
    cur_c = Counter("<none>" if v is None else v for v in recent)
    cats = sorted(set(ref_c) | set(cur_c), key=str)
    table = np.array([[ref_c[c] for c in cats], [cur_c[c] for c in cats]], dtype=float)
    total = table.sum()
    if total == 0:
        return table
    expected_min = table.sum(axis=0) * table.sum(axis=1).min() / total
    rare = expected_min < MIN_EXPECTED
    if rare.sum() >= 2:  # merging one column with nothing would change nothing
        table = np.hstack([table[:, ~rare], table[:, rare].sum(axis=1, keepdims=True)])
    return table


def psi_categorical(
    reference: Sequence[Hashable | None], recent: Sequence[Hashable | None]
) -> Stat:
    """PSI over categories (manufacturer, kernel, ...), with the chi-square p-value of the same
    table. A category that appears only in the recent window (a new scanner) counts fully."""
    table = _merged_table(reference, recent)
    if table.size == 0 or (table.sum(axis=1) == 0).any():
        return Stat(math.nan, None, len(reference), len(recent))
    return Stat(_psi_from_counts(table[0], table[1]), _chi2_p(table), len(reference), len(recent))


def chi2_categorical(
    reference: Sequence[Hashable | None], recent: Sequence[Hashable | None]
) -> Stat:
    """Chi-square homogeneity test of a categorical feature.

    ``value`` is Cramér's V (0 = same mix, 1 = disjoint categories): an effect size that, unlike the
    raw chi-square, does not grow with the sample, so fixed thresholds mean the same at every site.
    """
    table = _merged_table(reference, recent)
    n = table.sum()
    if table.size == 0 or (table.sum(axis=1) == 0).any():
        return Stat(math.nan, None, len(reference), len(recent))
    nz = table[:, table.sum(axis=0) > 0]
    if nz.shape[1] < 2:
        return Stat(0.0, 1.0, len(reference), len(recent))
    chi2 = float(sps.chi2_contingency(nz, correction=False).statistic)
    v = math.sqrt(chi2 / n)  # min(rows, cols) - 1 == 1 for a 2×k table
    return Stat(v, _chi2_p(nz), len(reference), len(recent))


def ks(reference: Sequence[float | None], recent: Sequence[float | None]) -> Stat:
    """Two-sample Kolmogorov–Smirnov: ``value`` is the D statistic (0..1), with its p-value."""
    ref, cur = _finite(reference), _finite(recent)
    if ref.size == 0 or cur.size == 0:
        return Stat(math.nan, None, int(ref.size), int(cur.size))
    res = sps.ks_2samp(ref, cur)
    return Stat(float(res.statistic), float(res.pvalue), int(ref.size), int(cur.size))


def two_proportion(x_ref: int, n_ref: int, x_cur: int, n_cur: int) -> Stat:
    """Difference of two proportions, ``value = x_cur/n_cur - x_ref/n_ref``, two-sided p-value.

    A pooled z-test when every expected cell is at least :data:`MIN_EXPECTED`, otherwise Fisher's
    exact test (rare events such as a reject reason seen twice a month).
    """
    if n_ref <= 0 or n_cur <= 0:
        return Stat(math.nan, None, n_ref, n_cur)
    diff = x_cur / n_cur - x_ref / n_ref
    table = np.array([[x_ref, n_ref - x_ref], [x_cur, n_cur - x_cur]], dtype=float)
    expected = table.sum(axis=0)[None, :] * table.sum(axis=1)[:, None] / table.sum()
    if expected.min() < MIN_EXPECTED:
        p = float(sps.fisher_exact(table.astype(int)).pvalue)
    else:
        pool = (x_ref + x_cur) / (n_ref + n_cur)
        se = math.sqrt(pool * (1 - pool) * (1 / n_ref + 1 / n_cur))
        p = float(2 * sps.norm.sf(abs(diff) / se)) if se > 0 else 1.0
    return Stat(diff, p, n_ref, n_cur)


def cusum(
    counts: Sequence[tuple[int, int]], p0: float, *, k: float = 0.5, n_reference: int = 0
) -> Stat:
    """Two-sided standardised CUSUM of nightly proportions against a reference rate ``p0``.

    Parameters
    ----------
    counts
        ``(events, trials)`` per recent night, in date order (e.g. positives and studies).
    p0
        Reference proportion, estimated from ``n_reference`` trials.
    k
        Allowance in standard deviations per night; 0.5 detects a one-sigma shift fastest.
    n_reference
        Trials behind ``p0``. The nightly z-score's variance is inflated by ``1 + n/n_reference``
        because ``p0`` is itself an estimate; without that a small reference window raises
        false alarms.

    Returns
    -------
    Stat
        ``value`` is ``max(S+, S-)`` over the nights, in standard deviations, to compare with a
        decision interval ``h``; ``p_value`` is its parametric-bootstrap p-value under
        "the rate is still ``p0``" (:data:`CUSUM_DRAWS` draws, fixed seed, so reruns agree).
    """
    n_cur = int(sum(n for _, n in counts))
    if not counts or n_cur == 0 or not math.isfinite(p0):
        return Stat(math.nan, None, n_reference, n_cur)
    x = np.array([c[0] for c in counts if c[1] > 0], dtype=float)
    n = np.array([c[1] for c in counts if c[1] > 0], dtype=float)
    denom = max(n_reference, 1)
    peak = float(_cusum_paths(x[None, :], n, np.array([p0]), k=k, n_ref=denom)[0])
    # Binomial counts of a few studies a night are skewed, so "h sigma" is not what it means
    # for normal data: the p-value comes from the null itself. Parametric bootstrap: the
    # reference rate and every night's count redrawn at p0, the CUSUM recomputed.
    rng = np.random.default_rng(CUSUM_SEED)
    p_ref = rng.binomial(denom, p0, size=CUSUM_DRAWS) / denom
    x_sim = rng.binomial(n.astype(int)[None, :], p0, size=(CUSUM_DRAWS, n.size))
    null = _cusum_paths(x_sim.astype(float), n, p_ref, k=k, n_ref=denom)
    p_value = float((1 + np.sum(null >= peak - 1e-12)) / (CUSUM_DRAWS + 1))
    return Stat(peak, p_value, n_reference, n_cur)


def _cusum_paths(x: np.ndarray, n: np.ndarray, p0: np.ndarray, *, k: float,
                 n_ref: int) -> np.ndarray:
    """max(S+, S-) of each row of ``x`` (draws × nights) against the row's reference rate."""
    # A reference rate of exactly 0 or 1 would make every deviation infinite; clip to half an event.
    p = np.clip(p0, 0.5 / n_ref, 1 - 0.5 / n_ref)[:, None]
    z = (x - n * p) / np.sqrt(n * p * (1 - p) * (1 + n / n_ref))
    hi = np.zeros(x.shape[0])
    lo = np.zeros(x.shape[0])
    peak = np.zeros(x.shape[0])
    for j in range(x.shape[1]):
        hi = np.maximum(0.0, hi + z[:, j] - k)
        lo = np.maximum(0.0, lo - z[:, j] - k)
        peak = np.maximum(peak, np.maximum(hi, lo))
    return peak
