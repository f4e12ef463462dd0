"""Step 3: the studies to score, in batches (one mapped inference task each)."""

from __future__ import annotations

from bloodnet_ops.nightly.common import DEFAULT_BATCH, engine


def plan_batches(
    db_url: str, run_id: str, batch_size: int = DEFAULT_BATCH, *, backlog: bool = True
) -> list[list[str]]:
    """Study UIDs to score, in chunks of ``batch_size``: the studies this run accepted, plus
    (``backlog``) accepted studies of the same source that still have no finding at all (a night
    whose inference died after validation)."""
    from bloodnet_ops.db.scoring import studies_to_score

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    ordered = studies_to_score(engine(db_url), run_id=run_id, backlog=backlog)
    return [ordered[i:i + batch_size] for i in range(0, len(ordered), batch_size)]
