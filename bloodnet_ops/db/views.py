"""Create (or replace) the dashboard and audit views of ``sql/views.sql`` in a results database."""

from __future__ import annotations

import logging
import re

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection

from bloodnet_ops.resources import sql_file

log = logging.getLogger(__name__)

VIEWS_SQL = sql_file("views.sql")
READER_ROLE = "bloodnet_reader"
_ADVISORY_LOCK = 0x626C6F6F64  # "blood": concurrent CREATE OR REPLACE VIEW would otherwise collide
_VIEW_NAME = re.compile(r"CREATE\s+OR\s+REPLACE\s+VIEW\s+([a-z_][a-z0-9_]*)", re.IGNORECASE)


def view_names(sql: str | None = None) -> list[str]:
    """Names of the views that ``sql/views.sql`` defines, in file order."""
    return _VIEW_NAME.findall(sql if sql is not None else VIEWS_SQL.read_text())


def apply_views_conn(conn: Connection) -> list[str]:
    """Apply the views inside the caller's transaction; returns the view names."""
    sql = VIEWS_SQL.read_text()
    names = view_names(sql)
    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADVISORY_LOCK})
    # Dropped first (newest dependants first, no CASCADE) so that a changed column list applies;
    # all in the caller's transaction, so readers never see the views missing.
    for name in reversed(names):
        conn.exec_driver_sql(f"DROP VIEW IF EXISTS {name}")
    cursor = conn.connection.cursor()  # the DBAPI cursor, no parameters: '%' and $$ pass through
    try:
        cursor.execute(sql)
    finally:
        cursor.close()
    has_reader = conn.execute(
        text("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :r)"), {"r": READER_ROLE}
    ).scalar_one()
    if has_reader:
        # Names come from our own file and match [a-z0-9_]; identifiers cannot be bound parameters.
        conn.exec_driver_sql(f"GRANT SELECT ON {', '.join(names)} TO {READER_ROLE}")
    return names


def apply_views(url: str) -> list[str]:
    """Create or replace every view of ``sql/views.sql`` in the database at ``url``.

    Idempotent and atomic (one transaction); a view of someone else's that depends on these makes
    it fail loudly rather than be dropped. Grants SELECT on them to ``bloodnet_reader`` when that role exists. Returns the
    names of the views.
    """
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            names = apply_views_conn(conn)
    finally:
        engine.dispose()
    log.info("applied %d dashboard views", len(names))
    return names
