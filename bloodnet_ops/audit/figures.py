"""Per-site and overall diagnostic figures of the model against the reference labels.

The reference label of a study is its radiology read, overridden by the newest adjudication that
settles it (see :data:`OUTCOME_TRUTH`): a confirmed reader miss turns the label positive, a
confirmed false positive keeps or makes it negative. Studies with neither a read nor a settling
adjudication have no label and are left out of the figures (they are counted).

Proportions carry Wilson 95 % intervals; the AUC carries a DeLong interval, or a stratified
bootstrap interval when a class has fewer than :data:`MIN_DELONG_PER_CLASS` cases (DeLong's variance
needs at least two per class). Statistics come from :mod:`bloodnet_ops.model.metrics`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bloodnet_ops.model.metrics import bootstrap_auc_ci, delong_ci, roc_auc, wilson_ci

OVERALL = "overall"
#: What each adjudication outcome says about ICH being present (None: it settles nothing).
OUTCOME_TRUTH: dict[str, bool | None] = {
    "confirmed_miss": True,
    "true_positive": True,
    "false_positive": False,
    "true_negative": False,
    "indeterminate": None,
    "technical_failure": None,
}
MIN_DELONG_PER_CLASS = 2
BOOTSTRAP_SAMPLES = 2000


@dataclass(frozen=True, slots=True)
class LabelledCase:
    """One screened study with its reference label (the figures' input)."""

    site: str
    label: bool  #: ICH present per the reference
    positive: bool  #: the model's decision at its operating threshold
    probability: float


@dataclass(frozen=True, slots=True)
class Estimate:
    """A figure with its 95 % CI; ``value`` is None when undefined (an empty denominator)."""

    value: float | None
    ci: tuple[float, float] | None
    n: int  #: denominator
    method: str  #: wilson | delong | bootstrap

    def ci_list(self) -> list[float] | None:
        return list(self.ci) if self.ci is not None else None


@dataclass(slots=True)
class SiteFigures:
    """Counts and figures of one site (or ``overall``)."""

    site: str
    n: int
    n_positive: int
    tp: int
    fp: int
    tn: int
    fn: int
    sensitivity: Estimate
    specificity: Estimate
    ppv: Estimate
    npv: Estimate
    auc: Estimate
    extra: dict[str, Estimate] = field(default_factory=dict)  #: e.g. reread_miss_rate

    def estimates(self) -> dict[str, Estimate]:
        base = {k: getattr(self, k) for k in ("sensitivity", "specificity", "ppv", "npv", "auc")}
        return {**base, **self.extra}

    def contract(self) -> dict[str, Any]:
        """The per-site object of the audit JSON (issue contract keys plus counts)."""
        doc: dict[str, Any] = {"n": self.n, "n_positive": self.n_positive, "tp": self.tp,
                               "fp": self.fp, "tn": self.tn, "fn": self.fn}
        for name, est in self.estimates().items():
            doc[name] = est.value
            doc[f"{name}_ci"] = est.ci_list()
            if name in self.extra:
                doc[f"{name}_n"] = est.n
        return doc


def proportion(k: int, n: int) -> Estimate:
    """k/n with its Wilson interval; undefined (None) when n is 0."""
    if n == 0:
        return Estimate(None, None, 0, "wilson")
    iv = wilson_ci(k, n)
    return Estimate(float(iv.estimate), (float(iv.low), float(iv.high)), n, "wilson")


def auc_estimate(labels: Sequence[bool], scores: Sequence[float], *, seed: int = 0) -> Estimate:
    """ROC AUC with a DeLong CI (bootstrap for tiny classes); None when a class is missing."""
    y = np.asarray(labels, dtype=int)
    s = np.asarray(scores, dtype=float)
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return Estimate(None, None, int(y.size), "delong")
    if min(n_pos, n_neg) >= MIN_DELONG_PER_CLASS:
        iv = delong_ci(y, s)
        method = "delong"
        if not (math.isfinite(iv.low) and math.isfinite(iv.high)):
            iv = bootstrap_auc_ci(y, s, n_boot=BOOTSTRAP_SAMPLES, seed=seed)
            method = "bootstrap"
    else:
        iv = bootstrap_auc_ci(y, s, n_boot=BOOTSTRAP_SAMPLES, seed=seed)
        method = "bootstrap"
    return Estimate(roc_auc(y, s), (float(iv.low), float(iv.high)), int(y.size), method)


def site_figures(site: str, cases: Iterable[LabelledCase]) -> SiteFigures:
    """The confusion counts and five figures of one group of cases."""
    cases = list(cases)
    tp = sum(c.label and c.positive for c in cases)
    fp = sum((not c.label) and c.positive for c in cases)
    tn = sum((not c.label) and (not c.positive) for c in cases)
    fn = sum(c.label and (not c.positive) for c in cases)
    return SiteFigures(
        site=site,
        n=len(cases),
        n_positive=tp + fn,
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        sensitivity=proportion(tp, tp + fn),
        specificity=proportion(tn, tn + fp),
        ppv=proportion(tp, tp + fp),
        npv=proportion(tn, tn + fn),
        auc=auc_estimate([c.label for c in cases], [c.probability for c in cases]),
    )


def compute_figures(cases: Sequence[LabelledCase]) -> tuple[dict[str, SiteFigures], SiteFigures]:
    """Figures per site (sorted by site name) and over all sites."""
    sites = sorted({c.site for c in cases})
    per_site = {s: site_figures(s, (c for c in cases if c.site == s)) for s in sites}
    return per_site, site_figures(OVERALL, cases)


def reference_label(read_ich: bool | None, outcomes: Sequence[str]) -> bool | None:
    """The read's label, overridden by the newest settling adjudication.

    ``outcomes`` are ordered oldest first; an outcome that settles nothing (indeterminate)
    leaves the previous label in place.
    """
    label = read_ich
    for outcome in outcomes:
        truth = OUTCOME_TRUTH.get(outcome)
        if truth is not None:
            label = truth
    return label
