"""The shared write path of the data-access layer: batched idempotent upserts and the value
conversions every table module uses.

Every bulk write is a batched ``INSERT ... ON CONFLICT DO UPDATE`` keyed on the table's natural
key, run in one transaction and retried on transient connection errors
(:func:`bloodnet_ops.db.session.with_retries`). Calling a writer twice with the same input leaves
the same rows, which is what makes every Airflow task idempotent.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from itertools import islice
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects.postgresql import JSONB

from bloodnet_ops.records import StudyResult

#: Objects compared against the manifest per round trip; bounds memory for any listing size.
MANIFEST_CHUNK = 5000
#: Rows per INSERT statement in batched upserts.
UPSERT_BATCH = 1000
#: Site name stored when a study carries no InstitutionName.
UNKNOWN_SITE = "unknown"
#: Longest free-text detail stored (exception messages can be long; they are diagnostics).
MAX_DETAIL = 2000


def chunked(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Lists of up to ``size`` items, consuming ``items`` lazily."""
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def table_of(model: type) -> Table:
    return model.__table__  # type: ignore[attr-defined,return-value]


def upsert(
    conn: Connection,
    model: type,
    rows: Sequence[dict[str, Any]],
    keys: Sequence[str],
    *,
    update: Sequence[str] | None = None,
    touch: dict[str, str] | None = None,
) -> int:
    """Batched ``INSERT ... VALUES (...), (...) ON CONFLICT (keys) DO UPDATE``.

    Rows with the same key are collapsed (last wins), because PostgreSQL refuses to update one
    row twice in a statement. ``update`` lists the columns taken from the new row (default:
    every non-key column given); ``touch`` sets extra columns on update only, as SQL expressions
    written in this module (e.g. ``{"last_seen": "now()"}``), never from input.

    The statement is written once and the rows go through psycopg2's ``execute_values``:
    SQLAlchemy would send an upsert per row (its insertmanyvalues does not batch ON CONFLICT), and
    compiling a multi-row ``values()`` construct costs more than the database does.
    """
    if not rows:
        return 0
    from psycopg2.extras import Json, execute_values

    unique = list({tuple(r[k] for k in keys): r for r in rows}.values())
    table = table_of(model)
    cols = list(unique[0])
    updates = list(update) if update is not None else [c for c in cols if c not in keys]
    q = conn.dialect.identifier_preparer.quote
    sets = [f"{q(c)} = EXCLUDED.{q(c)}" for c in updates]
    sets += [f"{q(c)} = {expr}" for c, expr in (touch or {}).items()]
    action = f"DO UPDATE SET {', '.join(sets)}" if sets else "DO NOTHING"
    sql = (
        f"INSERT INTO {q(table.name)} ({', '.join(q(c) for c in cols)}) VALUES %s "
        f"ON CONFLICT ({', '.join(q(k) for k in keys)}) {action}"
    )
    is_json = [isinstance(table.c[c].type, JSONB) for c in cols]
    values = [
        tuple(Json(r[c]) if js and r[c] is not None else r[c] for c, js in zip(cols, is_json,
                                                                             strict=True))
        for r in unique
    ]
    cursor = conn.connection.cursor()
    try:
        execute_values(cursor, sql, values, page_size=UPSERT_BATCH)
    finally:
        cursor.close()
    return len(unique)


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON: numpy scalars and arrays unwrapped, enums as their value,
    non-finite floats as ``None`` (JSONB has no NaN), anything else unknown as ``str``."""
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Enum):
        return jsonable(value.value)
    if isinstance(value, Decimal):
        return float(value) if value.is_finite() else None
    if isinstance(value, date | datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if hasattr(value, "tolist"):  # numpy scalar or array
        return jsonable(value.tolist())
    if hasattr(value, "item"):
        return jsonable(value.item())
    return str(value)


def as_float(value: Any) -> float | None:
    if value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def study_date_of(text_value: str) -> date | None:
    """DICOM DA (``YYYYMMDD``) to a date; anything malformed is stored as unknown."""
    digits = (text_value or "").strip().replace("-", "").replace(".", "")
    if len(digits) != 8 or not digits.isdigit():
        return None
    try:
        return date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        return None


def site_of(study: StudyResult) -> str:
    return (study.site or "").strip() or UNKNOWN_SITE
