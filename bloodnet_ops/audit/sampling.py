"""Stratified random re-read sample of model-negative studies.

Reads are often incomplete (not every screened study gets a report into the audit), so the
missed-ICH rate among model negatives is estimated from a random sample that a radiologist
re-reads. The sample is stratified by site (each site's rate is estimable on its own), sized
``clamp(ceil(rate × negatives), min_per_site, max_per_site)`` and capped by the negatives
available.

The draw is a keyed hash order, ``blake2b(seed, study_uid)``: the same seed and studies always give
the same sample (an audit run retried by Airflow puts the same studies on the worklist), and a study
added later does not reshuffle the ones already chosen.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SamplingPlan:
    """How many model negatives to re-read per site."""

    rate: float = 0.05  #: share of each site's model negatives
    min_per_site: int = 2
    max_per_site: int = 50

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"reread rate must be within [0, 1], got {self.rate}")
        if self.min_per_site < 0 or self.max_per_site < self.min_per_site:
            raise ValueError(
                f"need 0 <= min_per_site <= max_per_site, got {self.min_per_site}, "
                f"{self.max_per_site}"
            )

    def size(self, available: int) -> int:
        wanted = max(self.min_per_site, math.ceil(self.rate * available))
        return min(wanted, self.max_per_site, available)


def _order_key(seed: str, study_uid: str) -> bytes:
    return hashlib.blake2b(f"{seed}\x00{study_uid}".encode(), digest_size=16).digest()


def seed_for(run_key: str, seed: int | str | None = None) -> str:
    """The sampling seed: an explicit one, else one derived from the audit run's key."""
    return str(seed) if seed is not None else f"run:{run_key}"


def reread_sample(
    negatives: Iterable[tuple[str, str]], plan: SamplingPlan, *, seed: str
) -> dict[str, list[str]]:
    """Pick the re-read sample.

    Parameters
    ----------
    negatives
        ``(site, study_uid)`` of every model-negative study in the audit window.
    plan
        Rate and per-site bounds.
    seed
        Any string; see :func:`seed_for`.

    Returns
    -------
    dict
        site → sampled study UIDs in draw order (the order is the worklist rank).
    """
    by_site: dict[str, set[str]] = defaultdict(set)
    for site, uid in negatives:
        by_site[site].add(uid)
    out: dict[str, list[str]] = {}
    for site in sorted(by_site):
        ordered = sorted(by_site[site], key=lambda uid: _order_key(seed, uid))
        out[site] = ordered[: plan.size(len(ordered))]
    return out
