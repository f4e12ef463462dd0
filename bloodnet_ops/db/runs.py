"""``model_versions`` and ``inference_runs``: which weights scored, and each run's life."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from bloodnet_ops.db.models import InferenceRun, ModelVersion
from bloodnet_ops.db.session import with_retries
from bloodnet_ops.db.upsert import jsonable, table_of


def register_model_version(
    engine: Engine,
    *,
    model_version: str,
    weights_sha256: str,
    threshold: float,
    variant: str,
    metrics: dict[str, Any] | None = None,
) -> None:
    """Register (or refresh the threshold and metrics of) a model version.

    A version name is bound to one set of weights: registering it again with another SHA-256
    raises ``ValueError``, because the findings already stored under it would lose their
    provenance.
    """

    def _do() -> None:
        t = table_of(ModelVersion)
        stmt = pg_insert(t).values(
            model_version=model_version, weights_sha256=weights_sha256,
            threshold=float(threshold), variant=variant, metrics=jsonable(metrics or {}),
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["model_version"],
            set_={"threshold": stmt.excluded.threshold, "variant": stmt.excluded.variant,
                  "metrics": stmt.excluded.metrics},
            where=t.c.weights_sha256 == stmt.excluded.weights_sha256,
        ).returning(t.c.model_version)
        with engine.begin() as conn:
            if conn.execute(stmt).first() is None:
                raise ValueError(
                    f"model version {model_version!r} is already registered with other weights"
                )

    with_retries(_do)


def start_inference_run(
    engine: Engine,
    *,
    run_id: str,
    source_uri: str,
    model_version: str | None = None,
    dag_run_id: str | None = None,
) -> None:
    """Open (or reopen, on a rerun) a screening run: status ``running``, no finish time."""

    def _do() -> None:
        t = table_of(InferenceRun)
        stmt = pg_insert(t).values(
            run_id=run_id, source_uri=source_uri, model_version=model_version,
            dag_run_id=dag_run_id, status="running",
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["run_id"],
            set_={"source_uri": stmt.excluded.source_uri,
                  "model_version": stmt.excluded.model_version,
                  "dag_run_id": stmt.excluded.dag_run_id, "status": "running",
                  "started_at": func.now(), "finished_at": None},
        )
        with engine.begin() as conn:
            conn.execute(stmt)

    with_retries(_do)


def finish_inference_run(
    engine: Engine,
    *,
    run_id: str,
    status: str = "success",
    counts: dict[str, Any] | None = None,
    timings: dict[str, Any] | None = None,
) -> None:
    """Close a run with its status (``success`` or ``failed``), counts and timings (seconds)."""
    if status not in ("success", "failed"):
        raise ValueError(f"status must be 'success' or 'failed', got {status!r}")

    def _do() -> None:
        t = table_of(InferenceRun)
        with engine.begin() as conn:
            res = conn.execute(
                update(t)
                .where(t.c.run_id == run_id)
                .values(status=status, finished_at=func.now(),
                        counts=jsonable(counts or {}), timings=jsonable(timings or {}))
            )
            if res.rowcount == 0:
                raise LookupError(f"no inference run {run_id!r}; call start_inference_run first")

    with_retries(_do)


@dataclass(frozen=True, slots=True)
class RunTallies:
    """What the database holds about one run: its row and its counts."""

    source_uri: str
    model_version: str | None
    started_at: datetime | None
    verdicts: list[tuple[str, str, int]]  #: (site, verdict, studies)
    scored: list[tuple[str, int, int]]  #: (site, findings, positives)
    reasons: dict[str, int]  #: quarantine rows by reason
    unreadable: int  #: quarantined objects


def run_tallies(engine: Engine, run_id: str) -> RunTallies:
    """The run's row and its per-site verdicts, findings and quarantine, read back (so a summary
    is the same whichever workers did the batches)."""
    from bloodnet_ops.db.models import Finding, Quarantine, Study, ValidationResult

    vr, fi, qu, st = (ValidationResult.__table__, Finding.__table__, Quarantine.__table__,
                      Study.__table__)
    runs = table_of(InferenceRun)
    with engine.connect() as conn:
        run = conn.execute(select(runs).where(runs.c.run_id == run_id)).one()
        verdicts = conn.execute(
            select(st.c.site, vr.c.verdict, func.count())
            .join(st, st.c.study_uid == vr.c.study_uid)
            .where(vr.c.run_id == run_id).group_by(st.c.site, vr.c.verdict)
        ).all()
        scored = conn.execute(
            select(fi.c.site, func.count(), func.count().filter(fi.c.positive))
            .where(fi.c.run_id == run_id).group_by(fi.c.site)
        ).all()
        reasons = dict(conn.execute(
            select(qu.c.reason, func.count()).where(qu.c.run_id == run_id).group_by(qu.c.reason)
        ).all())
        unreadable = conn.execute(
            select(func.count()).where(qu.c.run_id == run_id, qu.c.kind == "object")
        ).scalar_one()
    return RunTallies(run.source_uri, run.model_version, run.started_at,
                      [tuple(r) for r in verdicts], [tuple(r) for r in scored],
                      {str(k): int(v) for k, v in reasons.items()}, int(unreadable))


def run_status(engine: Engine, run_id: str) -> str | None:
    """``running``, ``success``, ``failed``, or ``None`` for an unknown run."""
    runs = table_of(InferenceRun)
    with engine.connect() as conn:
        return conn.execute(select(runs.c.status).where(runs.c.run_id == run_id)
                            ).scalar_one_or_none()


def set_run_model_version(engine: Engine, run_id: str, model_version: str) -> None:
    """The version is known only once a batch has loaded the weights."""
    runs = table_of(InferenceRun)
    with engine.begin() as conn:
        conn.execute(update(runs).where(runs.c.run_id == run_id)
                     .values(model_version=model_version))
