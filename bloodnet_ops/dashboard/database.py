"""The dashboard's read-only connection to the results database, created on first use.

A plugin module is imported by every Airflow process (scheduler, dag-processor, workers), so the
engine is built lazily on the first page request, never at import time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import Connection, make_url

STATEMENT_TIMEOUT_MS = 15_000
"""A page query that runs longer than this is cancelled rather than holding a connection."""

#: Settings of the dashboard's own sessions (no other client is affected). Read-only makes every
#: transaction refuse writes; the planner settings suit a read-mostly database whose hot pages are
#: cached (index probes are cheap, sorts fit in memory, JIT compilation costs more than it saves
#: on queries this size, and so does starting parallel workers: the pages read rollups of a few
#: thousand rows, where a worker's start-up is most of the time on a busy server).
SESSION_SETTINGS: dict[str, str] = {
    "default_transaction_read_only": "on",
    "statement_timeout": str(STATEMENT_TIMEOUT_MS),
    "random_page_cost": "1.1",
    "work_mem": "32MB",
    "jit": "off",
    "max_parallel_workers_per_gather": "0",
}

UrlSource = str | Callable[[], str]


class Database:
    """Lazily created engine whose sessions are read-only at the PostgreSQL level.

    ``default_transaction_read_only`` makes every transaction of these connections read-only, so
    the dashboard cannot write even when it is given an owner's URL (give it ``bloodnet_reader``'s).
    """

    def __init__(self, url: UrlSource) -> None:
        self._url = url
        self._engine: Engine | None = None
        self._lock = threading.Lock()

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    self._engine = self._create()
        return self._engine

    def _create(self) -> Engine:
        raw = self._url() if callable(self._url) else self._url
        url = make_url(raw)
        if url.drivername in ("postgresql", "postgres"):
            url = url.set(drivername="postgresql+psycopg2")
        options = " ".join(f"-c {k}={v}" for k, v in SESSION_SETTINGS.items())
        return create_engine(
            url,
            pool_pre_ping=True,
            pool_size=4,
            max_overflow=4,
            connect_args={"options": options, "application_name": "bloodnet-dashboard"},
        )

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
