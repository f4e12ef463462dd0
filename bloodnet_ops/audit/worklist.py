"""The discordance worklist: findings joined with reads (and with adjudications for status).

- ``missed_by_reader``: the model says ICH, the read says none (a candidate missed hemorrhage),
  ranked by probability, then blood volume, highest first.
- ``missed_by_model``: the read says ICH, the model says none; same ranking (near misses first).
- ``reread_sample``: a random stratified sample of model negatives (:mod:`.sampling`), in draw
  order.

Each item links to the scored series and the DICOM SEG/SR objects written for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bloodnet_ops.audit.sampling import SamplingPlan, reread_sample

KIND_ORDER = ("missed_by_reader", "missed_by_model", "reread_sample")


@dataclass(frozen=True, slots=True)
class AuditCase:
    """One screened study in the audit window: the model's finding and what is known about it."""

    study_uid: str
    site: str
    series_uid: str
    model_version: str
    probability: float
    positive: bool
    volume_ml: float
    read_ich: bool | None  #: None: no matched read
    seg_key: str | None = None
    sr_key: str | None = None
    #: (kind, outcome) of every adjudication of this study, oldest first
    adjudications: tuple[tuple[str, str], ...] = ()


@dataclass(slots=True)
class WorklistItem:
    """One worklist entry; ``rank`` is 1-based within its kind."""

    study_uid: str
    site: str
    kind: str
    probability: float
    volume_ml: float
    rank: int
    read_ich: bool | None
    model_version: str
    series_uid: str
    seg_key: str | None
    sr_key: str | None
    adjudication: str | None = None  #: the outcome recorded for (study, kind), if any

    def contract(self) -> dict[str, Any]:
        """The worklist object of the audit JSON (contract keys first)."""
        return {
            "study_uid": self.study_uid,
            "site": self.site,
            "kind": self.kind,
            "probability": self.probability,
            "volume_ml": self.volume_ml,
            "rank": self.rank,
            "read_ich": self.read_ich,
            "adjudication": self.adjudication,
            "series_uid": self.series_uid,
            "seg_key": self.seg_key,
            "sr_key": self.sr_key,
        }


def _item(case: AuditCase, kind: str, rank: int) -> WorklistItem:
    outcome = next((o for k, o in reversed(case.adjudications) if k == kind), None)
    return WorklistItem(
        study_uid=case.study_uid, site=case.site, kind=kind, probability=case.probability,
        volume_ml=case.volume_ml, rank=rank, read_ich=case.read_ich,
        model_version=case.model_version, series_uid=case.series_uid, seg_key=case.seg_key,
        sr_key=case.sr_key, adjudication=outcome,
    )


def _ranked(cases: list[AuditCase], kind: str) -> list[WorklistItem]:
    cases = sorted(cases, key=lambda c: (-c.probability, -c.volume_ml, c.study_uid))
    return [_item(c, kind, i) for i, c in enumerate(cases, start=1)]


def build_worklist(
    cases: Sequence[AuditCase], plan: SamplingPlan, *, seed: str
) -> list[WorklistItem]:
    """The whole worklist, grouped by kind in :data:`KIND_ORDER`, ranked within each kind."""
    by_reader = [c for c in cases if c.positive and c.read_ich is False]
    by_model = [c for c in cases if not c.positive and c.read_ich is True]
    negatives = [c for c in cases if not c.positive]
    sample = reread_sample(((c.site, c.study_uid) for c in negatives), plan, seed=seed)
    by_uid = {c.study_uid: c for c in negatives}
    reread: list[WorklistItem] = []
    for uids in sample.values():
        reread.extend(_item(by_uid[u], "reread_sample", 0) for u in uids)
    # Rank re-reads in a site-interleaved draw order so every site gets early slots.
    reread.sort(key=lambda it: (sample[it.site].index(it.study_uid), it.site))
    for i, it in enumerate(reread, start=1):
        it.rank = i
    return _ranked(by_reader, "missed_by_reader") + _ranked(by_model, "missed_by_model") + reread
