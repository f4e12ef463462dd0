"""Fixtures shared by the dashboard tests (``conftest.py`` loads this module as a plugin).

``dashboard_db`` is a database of its own (not the shared ``database_url``), so the page numbers
the tests check are not disturbed by rows other tests write: migrated, roles and views applied,
and seeded through the pipeline's own write path (:func:`dashboard_seed.seed_via_pipeline`).
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

try:
    import dashboard_seed as seed
except ImportError:  # tests/ imported as a package
    from tests import dashboard_seed as seed

REPO = Path(__file__).resolve().parents[1]
TOKEN = "test-dashboard-token-0123456789"
#: Where the browser tests save their screenshots: an ignored folder, unless
#: ``BLOODNET_SCREENSHOTS=reports/screenshots`` asks to refresh the README's pictures.
SCREENSHOTS = (REPO / os.environ["BLOODNET_SCREENSHOTS"] if os.environ.get("BLOODNET_SCREENSHOTS")
               else REPO / "var" / "screenshots")


@dataclass(frozen=True)
class DashboardDB:
    url: str
    world: seed.World


@pytest.fixture(scope="session")
def dashboard_db(pg_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardDB]:
    from bloodnet_ops.db.session import apply_sql, migrate
    from bloodnet_ops.db.views import apply_views
    from bloodnet_ops.services import create_database, drop_database

    name = f"bloodnet_dash_{uuid.uuid4().hex[:10]}"
    url = create_database(pg_server_url, name)
    try:
        migrate(url)
        apply_sql(url, REPO / "sql" / "roles.sql")
        apply_views(url)
        world = seed.plan_world(seed.SeedSpec())
        seed.seed_via_pipeline(url, world, tmp_path_factory.mktemp("dashboard_seed"))
        yield DashboardDB(url, world)
    finally:
        drop_database(pg_server_url, name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class LiveServer:
    base: str  #: e.g. http://127.0.0.1:PORT/ (with the trailing slash)
    db: DashboardDB


@pytest.fixture(scope="session")
def live_dashboard(dashboard_db: DashboardDB) -> Iterator[LiveServer]:
    """The dashboard app served by uvicorn in a thread on a free loopback port."""
    import uvicorn

    from bloodnet_ops.dashboard.app import create_app

    app = create_app(dashboard_db.url, token=TOKEN)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="dashboard-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the dashboard server did not start within 30 s", pytrace=False)
        time.sleep(0.05)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}/", dashboard_db)
    finally:
        server.should_exit = True
        thread.join(10)
