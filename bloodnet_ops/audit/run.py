"""One retrospective audit: import reads, join findings with reads and adjudications, build the
worklist and the per-site figures, and store them under an audit run.

:func:`run_audit` is what the ``bloodnet audit`` command and the ``bloodnet_retrospective_audit``
DAG call. A run is identified by ``run_key`` (the Airflow run id, or a fresh key from the CLI);
running the same key again replaces that run's worklist and figures, so retries are idempotent.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from bloodnet_ops.audit.figures import (
    LabelledCase,
    SiteFigures,
    compute_figures,
    proportion,
    reference_label,
)
from bloodnet_ops.audit.reads import ReadsImport, import_reads, match_reads
from bloodnet_ops.audit.sampling import SamplingPlan, seed_for
from bloodnet_ops.audit.worklist import AuditCase, WorklistItem, build_worklist
from bloodnet_ops.db import audit as audit_db
from bloodnet_ops.db import findings as findings_db
from bloodnet_ops.db.session import make_engine, session_scope

log = logging.getLogger(__name__)


@dataclass(slots=True)
class AuditReport:
    """The result of one audit run (what the CLI prints and the DAG logs)."""

    audit_run_id: int
    run_key: str
    model_version: str | None
    date_from: date | None
    date_to: date | None
    worklist: list[WorklistItem]
    sites: dict[str, SiteFigures]
    overall: SiteFigures
    unmatched_reads: int
    counts: dict[str, int] = field(default_factory=dict)
    reads: ReadsImport | None = None

    def contract(self) -> dict[str, Any]:
        """The issue's audit JSON: worklist, sites, overall, unmatched_reads (plus run details)."""
        return {
            "worklist": [it.contract() for it in self.worklist],
            "sites": {s: f.contract() for s, f in self.sites.items()},
            "overall": self.overall.contract(),
            "unmatched_reads": self.unmatched_reads,
            "audit_run_id": self.audit_run_id,
            "run_key": self.run_key,
            "model_version": self.model_version,
            "date_from": self.date_from.isoformat() if self.date_from else None,
            "date_to": self.date_to.isoformat() if self.date_to else None,
            "counts": self.counts,
            "reads": self.reads.summary() if self.reads else None,
        }


def _as_date(value: date | str | None) -> date | None:
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


def _labelled(cases: list[AuditCase]) -> list[LabelledCase]:
    out = []
    for c in cases:
        label = reference_label(c.read_ich, [o for _, o in c.adjudications])
        if label is not None:
            out.append(LabelledCase(c.site, label, c.positive, c.probability))
    return out


def _reread_miss_rates(cases: list[AuditCase], sites: dict[str, SiteFigures],
                       overall: SiteFigures) -> None:
    """Missed-ICH rate among model negatives, from adjudicated re-read samples (Wilson CI)."""
    settled: dict[str, list[bool]] = defaultdict(list)
    for c in cases:
        outcomes = [o for k, o in c.adjudications if k == "reread_sample"]
        truth = reference_label(None, outcomes) if outcomes else None
        if truth is not None and not c.positive:
            settled[c.site].append(truth)
    for site, fig in sites.items():
        vals = settled.get(site, [])
        fig.extra["reread_miss_rate"] = proportion(sum(vals), len(vals))
    everything = [v for vals in settled.values() for v in vals]
    overall.extra["reread_miss_rate"] = proportion(sum(everything), len(everything))


def run_audit(
    db_url: str,
    *,
    reads: str | Path | None = None,
    date_from: date | str | None = None,
    date_to: date | str | None = None,
    model_version: str | None = None,
    reread_rate: float = 0.05,
    reread_min: int = 2,
    reread_max: int = 50,
    seed: int | str | None = None,
    run_key: str | None = None,
    keep_report_text: bool = False,
) -> AuditReport:
    """Run one retrospective audit and store it.

    Parameters
    ----------
    db_url
        The results database.
    reads
        A reads file (CSV or JSON lines; local path or ``s3://bucket/key``) to import first;
        without it the reads already in the database are re-matched and used.
    date_from, date_to
        Inclusive window on the study day (StudyDate, else the day it was scored).
    model_version
        The version whose findings are audited (default: that of the newest finding).
    reread_rate, reread_min, reread_max
        Re-read sample of model negatives per site (see :class:`SamplingPlan`).
    seed
        Re-read sampling seed (default: derived from ``run_key``).
    run_key
        Identifies the run; the same key replaces the earlier result (default: a fresh UUID).
    keep_report_text
        Store the reads' free-text reports (they may contain PHI).
    """
    d_from, d_to = _as_date(date_from), _as_date(date_to)
    run_key = run_key or f"audit-{uuid.uuid4().hex[:12]}"
    plan = SamplingPlan(rate=reread_rate, min_per_site=reread_min, max_per_site=reread_max)
    engine = make_engine(db_url)
    try:
        with session_scope(engine) as session:
            imported = (import_reads(session, reads, keep_report=keep_report_text)
                        if reads is not None else None)
            if imported is None:
                match_reads(session)  # studies screened since the last import may match now
            version = model_version or findings_db.latest_model_version(session)
            cases = (audit_db.load_cases(session, model_version=version, date_from=d_from,
                                          date_to=d_to)
                     if version else [])
            worklist = build_worklist(cases, plan, seed=seed_for(run_key, seed))
            sites, overall = compute_figures(_labelled(cases))
            _reread_miss_rates(cases, sites, overall)
            unmatched = audit_db.unmatched_reads(session, date_from=d_from, date_to=d_to)
            counts = {
                "studies": len(cases),
                "with_read": sum(c.read_ich is not None for c in cases),
                "labelled": overall.n,
                "model_positive": sum(c.positive for c in cases),
                **{k: sum(it.kind == k for it in worklist)
                   for k in ("missed_by_reader", "missed_by_model", "reread_sample")},
                "unmatched_reads": unmatched,
            }
            params = {"reread_rate": reread_rate, "reread_min": reread_min,
                      "reread_max": reread_max, "seed": seed_for(run_key, seed),
                      "reads": str(reads) if reads is not None else None}
            run_id = audit_db.store_audit_run(session, run={
                "run_key": run_key, "date_from": d_from, "date_to": d_to,
                "model_version": version, "params": params, "counts": counts,
                "finished_at": audit_db.NOW,
            }, items=worklist, figures=[*sites.values(), overall])
    finally:
        engine.dispose()
    log.info("audit run=%s model=%s counts=%s", run_key, version, counts)
    return AuditReport(
        audit_run_id=run_id, run_key=run_key, model_version=version, date_from=d_from,
        date_to=d_to, worklist=worklist, sites=sites, overall=overall,
        unmatched_reads=unmatched, counts=counts, reads=imported,
    )
