"""Engines, migrations, transactions and retries for the results database.

``migrate(url)`` runs the package's own Alembic migrations programmatically (no ini file needed),
so the CLI, the DAGs, the demo and the tests all build the schema the same way.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

T = TypeVar("T")


def normalise_url(url: str) -> str:
    """Give a bare ``postgresql://`` (or ``postgres://``) URL the psycopg2 driver explicitly."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


def make_engine(url: str, *, pool_size: int = 5, max_overflow: int = 10, **kwargs) -> Engine:
    """An engine that survives dropped connections: stale pooled connections are detected by a
    ping before use and recycled after 30 minutes."""
    return create_engine(
        normalise_url(url),
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_recycle=1800,
        connect_args={"connect_timeout": 10, "application_name": "bloodnet"},
        **kwargs,
    )


def alembic_config(url: str):
    """An Alembic ``Config`` pointing at the migrations inside the package.

    The URL travels in ``config.attributes`` rather than the ini options, because ConfigParser
    interpolation would mangle a ``%`` in a password.
    """
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["url"] = normalise_url(url)
    return cfg


def migrate(url: str, revision: str = "head") -> None:
    """Upgrade the database at ``url`` to ``revision`` (default: the newest). Safe to call
    concurrently: ``env.py`` serialises migrations with an advisory lock."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    from alembic import command

    command.downgrade(alembic_config(url), revision)


def current_revision(url: str) -> str | None:
    """The revision the database is at, or ``None`` for an empty one."""
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(url, pool_size=1, max_overflow=0)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def is_transient(exc: BaseException) -> bool:
    """Whether retrying could help: a dropped or refused connection, a terminated backend,
    a serialization failure or a deadlock (all surface as ``OperationalError`` with psycopg2)."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError)


def with_retries(
    fn: Callable[[], T],
    attempts: int = 5,
    *,
    base_delay: float = 0.2,
    max_delay: float = 5.0,
    retry_if: Callable[[BaseException], bool] = is_transient,
) -> T:
    """Call ``fn`` until it succeeds, retrying transient database errors with jittered exponential
    backoff. ``fn`` must be idempotent and open its own transaction (every writer in
    :mod:`bloodnet_ops.db.repo` is), so a retry after a half-done attempt is safe."""
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:  # filtered by retry_if
            if attempt == attempts or not retry_if(exc):
                raise
            delay = min(max_delay, base_delay * 2 ** (attempt - 1)) * (0.5 + random.random())
            log.warning(
                "transient database error (attempt %d/%d, retry in %.2fs): %s",
                attempt, attempts, delay, type(exc).__name__,
            )
            time.sleep(delay)
    raise AssertionError("unreachable")


def apply_sql(url: str, path: str | Path) -> None:
    """Run a SQL file (roles, grants, retention, views) in one transaction.

    The text goes to the driver without parameters, so ``%`` (as in ``format('%I', ...)``) and
    ``DO $$ ... $$`` blocks are passed through untouched.
    """
    sql = Path(path).read_text()
    engine = make_engine(url, pool_size=1, max_overflow=0)
    try:
        raw = engine.raw_connection()
        try:
            cur = raw.cursor()
            cur.execute(sql)
            cur.close()
            raw.commit()
        except BaseException:
            raw.rollback()
            raise
        finally:
            raw.close()
    finally:
        engine.dispose()

