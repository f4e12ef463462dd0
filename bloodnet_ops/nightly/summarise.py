"""Step 5: close the run and summarise it from what the database holds."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

from bloodnet_ops.db import runs
from bloodnet_ops.nightly.common import engine
from bloodnet_ops.nightly.records import BatchCounts, RunSummary, SiteCounts, Timings
from bloodnet_ops.reasons import Verdict

log = logging.getLogger(__name__)


def _batches(counts: Sequence[BatchCounts | dict[str, Any] | None] | None) -> list[BatchCounts]:
    """Batch counts as records (XCom gives them back as dicts; a skipped batch as ``None``)."""
    return [c if isinstance(c, BatchCounts) else BatchCounts.from_xcom(c)
            for c in (counts or []) if c]


def summarise_run(db_url: str, run_id: str,
                  counts: Sequence[BatchCounts | dict[str, Any] | None] | None = None,
                  *, status: str = "success", error: str | None = None) -> RunSummary:
    """Close the run in ``inference_runs`` and return its summary, read back from the database
    (so it is the same whichever workers did the batches). ``error`` (a failed run: the
    exception's class name) is stored with the counts."""
    db = engine(db_url)
    batches = _batches(counts)
    tallies = runs.run_tallies(db, run_id)
    per_site: dict[str, SiteCounts] = {}
    for site, verdict, n in tallies.verdicts:
        row = per_site.setdefault(site, SiteCounts())
        row.studies += n
        if verdict == Verdict.REJECT.value:
            row.rejected += n
    for site, n, pos in tallies.scored:
        row = per_site.setdefault(site, SiteCounts())
        row.scored, row.positive = n, pos
    started = tallies.started_at
    wall = (datetime.now(started.tzinfo) - started).total_seconds() if started else 0.0
    timings = Timings(
        load_s=round(sum(c.load_s for c in batches), 3),
        infer_s=round(sum(c.infer_s for c in batches), 3),
        write_s=round(sum(c.write_s for c in batches), 3),
        batches_wall_s=round(sum(c.wall_s for c in batches), 3),
        run_wall_s=round(wall, 3),
    )
    versions = {c.model_version for c in batches if c.model_version}
    model_version = min(versions) if versions else tallies.model_version
    summary = RunSummary(
        run_id=run_id,
        source_uri=tallies.source_uri,
        model_version=model_version,
        n_studies=sum(v.studies for v in per_site.values()),
        n_scored=sum(v.scored for v in per_site.values()),
        n_positive=sum(v.positive for v in per_site.values()),
        n_rejected=sum(v.rejected for v in per_site.values()),
        n_unreadable=tallies.unreadable,
        n_failed=sum(c.n_failed for c in batches),
        reasons=dict(sorted(tallies.reasons.items())),
        per_site=dict(sorted(per_site.items())),
        timings=timings,
    )
    if model_version and model_version != tallies.model_version:
        runs.set_run_model_version(db, run_id, model_version)
    stored = {k: v for k, v in asdict(summary).items() if k.startswith("n_") or k == "reasons"}
    if error:
        stored["error"] = error
    runs.finish_inference_run(db, run_id=run_id, status=status, counts=stored,
                              timings=asdict(timings))
    return summary


def fail_run(db_url: str, run_id: str, error: BaseException | str | None = None) -> bool:
    """Close ``run_id`` as ``failed`` (with its finish time) if it is still ``running``: a step
    failed for good (an Airflow task out of retries, an exception in :func:`screen`), so the
    row must not claim the run is still going. Counts are what the database holds so far;
    ``error`` is kept as a class name only (messages can carry keys). A run that already
    finished is left as it is. Never raises (it runs on failure paths); returns whether the row
    was closed."""
    name = error if isinstance(error, str) or error is None else type(error).__name__
    try:
        if runs.run_status(engine(db_url), run_id) != "running":
            return False
        summarise_run(db_url, run_id, status="failed", error=name or "unknown")
    except Exception as exc:  # noqa: BLE001 - the original failure is what must surface
        log.error("could not mark run %s failed: %s", run_id, type(exc).__name__)
        return False
    log.warning("run %s marked failed (%s)", run_id, name or "unknown")
    return True
