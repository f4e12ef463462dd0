"""A short text summary of the newest audit and drift runs, read back from the database (for the
demo's closing report and for logs). Numbers, sites and metric names only: no PHI."""

from __future__ import annotations

from sqlalchemy.orm import Session

from bloodnet_ops.db import audit as audit_db
from bloodnet_ops.db.models_audit import AuditMetric
from bloodnet_ops.db.session import make_engine, session_scope


def _ci(value: float | None, lo: float | None, hi: float | None) -> str:
    if value is None:
        return "n/a"
    if lo is None or hi is None:
        return f"{value:.3f}"
    return f"{value:.3f} [{lo:.3f}, {hi:.3f}]"


def _audit_lines(session: Session) -> list[str]:
    latest = audit_db.latest_audit(session)
    if latest is None:
        return ["audit: no audit run yet"]
    run, kinds, found = latest
    head = (f"audit {run.run_key} (model {run.model_version}): worklist "
            f"{sum(kinds.values())} = {kinds.get('missed_by_reader', 0)} missed by reader + "
            f"{kinds.get('missed_by_model', 0)} missed by model + "
            f"{kinds.get('reread_sample', 0)} re-read samples; unmatched reads "
            f"{run.counts.get('unmatched_reads', 0)}")
    lines = [head]
    metrics: dict[str, dict[str, AuditMetric]] = {}
    for m in found:
        metrics.setdefault(m.site, {})[m.metric] = m
    for site in sorted(metrics, key=lambda s: (s == "overall", s)):
        row = metrics[site]
        parts = [f"  {site:<12} n={int(row['n'].value) if 'n' in row else 0:<5}"]
        for name, label in (("sensitivity", "sens"), ("specificity", "spec"), ("auc", "AUC")):
            m = row.get(name)
            parts.append(f"{label} {_ci(m.value, m.ci_lo, m.ci_hi) if m else 'n/a'}")
        lines.append("  ".join(parts))
    return lines


def _drift_lines(session: Session) -> list[str]:
    latest = audit_db.latest_drift(session)
    if latest is None:
        return ["drift: no drift run yet"]
    run, alerts = latest
    lines = [f"drift {run.run_key}: {run.counts.get('sites', 0)} sites compared, "
             + f"{len(alerts)} alerts"]
    for a in alerts:
        metric = a.family if a.family == a.feature else f"{a.family}.{a.feature}"
        lines.append(f"  ALERT {a.site} {metric} {a.statistic}={a.value:.3g} "
                     f"(threshold {a.threshold:g}, webhook {a.delivery})")
    return lines


def summary_lines(db_url: str) -> list[str]:
    """Lines describing the newest audit run (worklist, per-site figures with 95 % CIs) and the
    newest drift run (its alerts)."""
    engine = make_engine(db_url)
    try:
        with session_scope(engine) as session:
            return _audit_lines(session) + _drift_lines(session)
    finally:
        engine.dispose()
