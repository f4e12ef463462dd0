"""What crosses between the nightly tasks (Airflow XCom): ids and counts, typed.

Every record converts to a JSON-able dict with ``to_xcom`` and back with ``from_xcom``; nothing
else (no volumes, no masks, no rows) travels between tasks. State lives in the results database
and the object store.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Self


class _XCom:
    def to_xcom(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_xcom(cls, doc: dict[str, Any]) -> Self:
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in doc.items() if k in names})


@dataclass(slots=True)
class DiscoveryResult(_XCom):
    run_id: str
    source_uri: str
    n_listed: int  #: objects under the source (and prefix), outputs excluded
    n_new: int  #: new, changed, still pending, or offered again by a rerun of ``run_id``
    seconds: float = 0.0


@dataclass(slots=True)
class ValidationSummary(_XCom):
    run_id: str
    n_objects: int
    n_studies: int
    n_accepted: int  #: accept + accept_with_warning
    n_rejected: int
    n_unreadable: int
    n_deferred: int = 0  #: studies outside the site / date filter, left pending
    reasons: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass(slots=True)
class BatchCounts(_XCom):
    """One inference batch: what it scored, and where its seconds went."""

    n_studies: int
    n_scored: int
    n_positive: int
    n_failed: int  #: failed while loading or scoring (quarantined)
    n_skipped: int  #: gone from the store, rejected by now, or validated before migration 0004
    model_version: str | None
    load_s: float = 0.0  #: GETs and decoding
    infer_s: float = 0.0  #: the Predictor (preparation included)
    write_s: float = 0.0  #: DICOM SEG/SR
    wall_s: float = 0.0


@dataclass(slots=True)
class SiteCounts(_XCom):
    studies: int = 0
    scored: int = 0
    positive: int = 0
    rejected: int = 0


@dataclass(slots=True)
class Timings(_XCom):
    load_s: float = 0.0
    infer_s: float = 0.0
    write_s: float = 0.0
    batches_wall_s: float = 0.0
    run_wall_s: float = 0.0


@dataclass(slots=True)
class RunSummary(_XCom):
    run_id: str
    source_uri: str
    model_version: str | None
    n_studies: int  #: studies validated in this run
    n_scored: int  #: findings written by this run
    n_positive: int
    n_rejected: int  #: studies rejected (validation or load failure)
    n_unreadable: int  #: objects that are not readable DICOM
    n_failed: int  #: studies that failed while loading or scoring
    reasons: dict[str, int]  #: quarantine rows by reason code
    per_site: dict[str, SiteCounts]
    timings: Timings

    @classmethod
    def from_xcom(cls, doc: dict[str, Any]) -> RunSummary:
        doc = dict(doc)
        doc["per_site"] = {k: SiteCounts.from_xcom(v) for k, v in doc["per_site"].items()}
        doc["timings"] = Timings.from_xcom(doc["timings"])
        return cls(**doc)
