"""Alembic environment for the results database.

Run programmatically through :func:`bloodnet_ops.db.session.migrate`, or with the CLI:
``alembic -c bloodnet_ops/db/alembic.ini upgrade head`` (URL from ``BLOODNET_DATABASE_URL``).
"""

from __future__ import annotations

import importlib

from alembic import context
from sqlalchemy import text

from bloodnet_ops.db import models  # noqa: F401 - registers the core tables
from bloodnet_ops.db.base import Base

try:  # audit and drift tables, added by migration 0002 when that module exists
    importlib.import_module("bloodnet_ops.db.models_audit")
except ModuleNotFoundError as exc:
    if exc.name != "bloodnet_ops.db.models_audit":
        raise  # a missing dependency inside the module is a real error

config = context.config
if config.config_file_name is not None:  # the CLI; programmatic runs keep the caller's logging
    from logging.config import fileConfig

    fileConfig(config.config_file_name, disable_existing_loggers=False)
target_metadata = Base.metadata

#: Any constant works; it only has to be the same for every process that migrates.
MIGRATION_LOCK_ID = 0x626C6F6F64  # "blood"


def _url() -> str:
    from bloodnet_ops.db.session import normalise_url

    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        from bloodnet_ops.settings import current

        url = current().database_url
    if not url:
        raise RuntimeError("no database URL: pass one to migrate(url) or set BLOODNET_DATABASE_URL")
    return normalise_url(url)


def run_migrations_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    from bloodnet_ops.db.session import make_engine

    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(_url(), pool_size=1, max_overflow=0)
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        # Two processes migrating one database at once (parallel tasks, a test and the demo)
        # must not both create the same tables: the second waits, then finds nothing to do.
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_ID})
        context.run_migrations()
        # The views of sql/views.sql are part of the schema at head: re-applied (CREATE OR
        # REPLACE) after every upgrade to head, in the same transaction, like a repeatable
        # migration. A downgrade leaves them to the older code.
        heads = set(context.script.get_heads())
        if heads and set(context.get_context().get_current_heads()) == heads:
            from bloodnet_ops.db.views import apply_views_conn

            apply_views_conn(connection)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
