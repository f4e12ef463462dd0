"""Row counts per table (reports, tests, the demo)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine, func, select

CORE_TABLES = (
    "sites", "objects", "studies", "series", "validation_results", "expectation_results",
    "quarantine", "hu_stats", "model_versions", "inference_runs", "findings",
)


def table_counts(engine: Engine, tables: Sequence[str] = CORE_TABLES) -> dict[str, int]:
    """Row counts per table (names checked against the ORM metadata, never interpolated raw)."""
    from bloodnet_ops.db.base import Base

    out: dict[str, int] = {}
    with engine.connect() as conn:
        for name in tables:
            table = Base.metadata.tables.get(name)
            if table is None:
                raise ValueError(f"unknown table {name!r}")
            out[name] = int(conn.execute(select(func.count()).select_from(table)).scalar_one())
    return out
