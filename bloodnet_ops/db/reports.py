"""What a night did, read back from the results database: the demo's report."""

from __future__ import annotations

from typing import Any


def demo_report(db_url: str) -> dict[str, Any]:
    """What the night did, from the results database (not from what the demo believes)."""
    from sqlalchemy import func, select

    from bloodnet_ops.db.models import Finding, InferenceRun, Quarantine, Study, ValidationResult
    from bloodnet_ops.db.session import make_engine

    engine = make_engine(db_url)
    st, vr, fi, qu, runs = (Study.__table__, ValidationResult.__table__, Finding.__table__,
                            Quarantine.__table__, InferenceRun.__table__)
    try:
        with engine.connect() as conn:
            per_site = {
                site: {"studies": n, "rejected": rej, "scored": 0, "positive": 0}
                for site, n, rej in conn.execute(
                    select(st.c.site, func.count(func.distinct(vr.c.study_uid)),
                           func.count(func.distinct(vr.c.study_uid))
                           .filter(vr.c.verdict == "reject"))
                    .join(vr, vr.c.study_uid == st.c.study_uid).group_by(st.c.site)
                )
            }
            for site, n, pos, t_load, t_inf in conn.execute(
                select(fi.c.site, func.count(), func.count().filter(fi.c.positive),
                       func.avg(fi.c.load_seconds), func.avg(fi.c.infer_seconds))
                .group_by(fi.c.site)
            ):
                row = per_site.setdefault(site, {"studies": 0, "rejected": 0})
                row.update(scored=n, positive=pos, load_s=float(t_load or 0),
                           infer_s=float(t_inf or 0))
            rejects = dict(conn.execute(
                select(qu.c.reason, func.count()).group_by(qu.c.reason)
                .order_by(func.count().desc())
            ).all())
            run = conn.execute(
                select(runs).where(runs.c.status == "success")
                .order_by(runs.c.finished_at.desc()).limit(1)
            ).first()
            outputs = conn.execute(select(fi.c.sr_key, fi.c.seg_key).limit(1)).first()
            n_seg = conn.execute(select(func.count()).where(fi.c.seg_key.is_not(None))).scalar()
            n_sr = conn.execute(select(func.count()).where(fi.c.sr_key.is_not(None))).scalar()
            extras = _analytics_summary(conn)
    finally:
        engine.dispose()
    scored = sum(r.get("scored", 0) for r in per_site.values())
    wall = None
    if run is not None and run.finished_at and run.started_at:
        wall = (run.finished_at - run.started_at).total_seconds()
    return {
        "per_site": dict(sorted(per_site.items())),
        "rejects": rejects,
        "n_scored": scored,
        "n_positive": sum(r.get("positive", 0) for r in per_site.values()),
        "run_id": run.run_id if run is not None else None,
        "model_version": run.model_version if run is not None else None,
        "run_wall_s": wall,
        "seconds_per_study": (wall / scored) if wall and scored else None,
        "n_seg": int(n_seg or 0),
        "n_sr": int(n_sr or 0),
        "example_output": (outputs.seg_key or outputs.sr_key) if outputs is not None else None,
        **extras,
    }


def _analytics_summary(conn) -> dict[str, Any]:
    """Audit and drift summaries when their tables exist (another part of the platform)."""
    from sqlalchemy import inspect, text

    names = set(inspect(conn).get_table_names())
    out: dict[str, Any] = {}
    if "audit_items" in names:
        out["audit_worklist"] = dict(conn.execute(text(
            "SELECT kind, count(*) FROM audit_items GROUP BY kind ORDER BY kind")).all())
    if "drift_alerts" in names:
        out["drift_alerts"] = int(conn.execute(text("SELECT count(*) FROM drift_alerts")).scalar())
    return out
