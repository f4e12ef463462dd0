"""Creating and dropping whole databases (tests and the demo), on a server's maintenance URL."""

from __future__ import annotations

import re

#: Database names are interpolated into DDL (they cannot be bound parameters): strictly checked.
_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _admin_engine(server_url: str):
    from bloodnet_ops.db.session import make_engine

    return make_engine(server_url, pool_size=1, max_overflow=0, isolation_level="AUTOCOMMIT")


def _check_db_name(name: str) -> None:
    if not _DB_NAME.match(name):
        raise ValueError(f"database name must match {_DB_NAME.pattern}, got {name!r}")


def create_database(server_url: str, name: str, *, exist_ok: bool = False) -> str:
    """Create database ``name`` on the server of ``server_url``; return its URL.

    The name is checked against a strict pattern because it cannot be a bound parameter.
    """
    from sqlalchemy import make_url, text

    _check_db_name(name)
    engine = _admin_engine(server_url)
    try:
        with engine.connect() as conn:
            exists = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
            ).first()
            if exists and not exist_ok:
                raise ValueError(f"database {name!r} already exists")
            if not exists:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_database(server_url: str, name: str) -> None:
    """Drop database ``name`` (if it exists), disconnecting its sessions first."""
    from sqlalchemy import text

    _check_db_name(name)
    engine = _admin_engine(server_url)
    try:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()
