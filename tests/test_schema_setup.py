"""One ``migrate`` gives every table and every view (issue 13): the dashboards work on a
database that ``bloodnet screen`` made, the compose init script's steps build a working database
outside Docker, and a page whose views are missing says so instead of "did not answer".
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

from sqlalchemy import text

from bloodnet_ops.dashboard.app import NAV

REPO = Path(__file__).resolve().parents[1]
TOKEN = "schema-setup-token-0123456789"
PAGES = [f"/{page}" for page, _ in NAV]


def _pages(url: str) -> dict[str, tuple[int, str]]:
    from fastapi.testclient import TestClient

    from bloodnet_ops.dashboard.app import create_app

    out = {}
    with TestClient(create_app(url, token=TOKEN)) as client:
        for path in PAGES:
            r = client.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
            out[path] = (r.status_code, r.text)
    return out


def _view_count(url: str) -> int:
    from bloodnet_ops.db.session import make_engine
    from bloodnet_ops.db.views import view_names

    engine = make_engine(url, pool_size=1, max_overflow=0)
    try:
        with engine.connect() as conn:
            present = set(conn.execute(text(
                "SELECT table_name FROM information_schema.views WHERE table_schema = 'public'"
            )).scalars())
    finally:
        engine.dispose()
    return len(present & set(view_names()))


def test_dashboards_work_on_a_database_that_screen_made(empty_db: str, synth_small: Path) -> None:
    from bloodnet_ops.db.views import view_names

    bloodnet = Path(sys.executable).parent / "bloodnet"
    proc = subprocess.run([str(bloodnet), "screen", str(synth_small), "--db", empty_db, "--json",
                           "--no-dicom"], capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _view_count(empty_db) == len(view_names())
    for path, (status, body) in _pages(empty_db).items():
        assert status == 200, (path, body[:300])


def test_missing_views_name_the_cause_and_the_fix(empty_db: str) -> None:
    from bloodnet_ops.db.session import make_engine, migrate
    from bloodnet_ops.db.views import view_names

    migrate(empty_db)
    engine = make_engine(empty_db, pool_size=1, max_overflow=0)
    with engine.begin() as conn:  # what a database built before the views were migrated has
        for name in reversed(view_names()):
            conn.exec_driver_sql(f"DROP VIEW IF EXISTS {name}")
    engine.dispose()
    for path, (status, body) in _pages(empty_db).items():
        assert status == 503, path
        assert re.search(r"\(v_[a-z_]+ is missing\)", body), body
        assert "bloodnet migrate" in body and "did not answer" not in body


def test_migrate_command_builds_tables_views_and_roles(empty_db: str) -> None:
    from bloodnet_ops.db.views import view_names

    bloodnet = Path(sys.executable).parent / "bloodnet"
    proc = subprocess.run([str(bloodnet), "migrate", "--db", empty_db, "--roles"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "revision" in proc.stdout
    assert _view_count(empty_db) == len(view_names())


def test_compose_init_steps_outside_docker(empty_db: str, s3_server) -> None:
    """The Python step of docker/airflow-init.sh, run as written, then every page loads."""
    script = (REPO / "docker" / "airflow-init.sh").read_text()
    step = re.search(r"python - <<'PY'\n(.*?)\nPY\n", script, re.DOTALL)
    assert step is not None, "airflow-init.sh lost its python step"
    env = {**os.environ, "BLOODNET_DATABASE_URL": empty_db,
           "BLOODNET_INCOMING_BUCKET": f"in-{uuid.uuid4().hex[:8]}",
           "BLOODNET_OUTPUT_BUCKET": f"out-{uuid.uuid4().hex[:8]}"}
    for _ in range(2):  # idempotent: compose runs it on every start
        proc = subprocess.run([sys.executable, "-c", step.group(1)], env=env, capture_output=True,
                              text=True, timeout=300, check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "schema, views and roles ok" in proc.stdout
    from bloodnet_ops.storage import s3_client

    buckets = {b["Name"] for b in s3_client().list_buckets()["Buckets"]}
    assert {env["BLOODNET_INCOMING_BUCKET"], env["BLOODNET_OUTPUT_BUCKET"]} <= buckets
    for path, (status, body) in _pages(empty_db).items():
        assert status == 200, (path, body[:300])
