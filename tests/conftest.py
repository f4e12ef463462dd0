"""Shared fixtures: real PostgreSQL, real SeaweedFS and a small synthetic data set.

Services are never skipped. If one cannot start, the fixture fails with a message that says what
was tried and shows the service's log.

Fixtures
--------
database_url  (session)   a fresh, uniquely named, migrated database; dropped at the end
empty_db      (function)  a fresh database of the test's own, not migrated
pg_server_url (session)   the server's maintenance URL (superuser), e.g. to create roles
s3_server     (session)   SeaweedFS running; its AWS_* and BLOODNET_S3_ENDPOINT set in os.environ
s3_bucket     (function)  the name of a fresh, empty bucket on ``s3_server``
synth_small   (session)   a Path: generate_dataset(studies=6, sites=2, seed=7, matrix=128)
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# Before anything imports Airflow, GX or boto3.
os.environ.setdefault("BLOODNET_PSEUDONYM_KEY", "bloodnet-test-pseudonym-key")
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")  # no 1-2 s IMDS probes offline
os.environ.setdefault("TQDM_DISABLE", "1")


#: Fixture modules shared by several test files (rather than importing fixtures by name).
pytest_plugins = ["airflow_env", "screening_fixtures", "dashboard_fixtures"]

#: Markers, derived from what a test needs unless it sets one itself; ``make test-fast`` runs
#: ``-m unit``: the tests that need no service, no Airflow, no browser and are not slow.
_SERVICE_FIXTURES = {"pg_server_url", "database_url", "s3_server", "s3_bucket", "fresh_db",
                     "dashboard_db"}
_AIRFLOW_FIXTURES = {"airflow_home", "airflow_conns", "dagbag"}
_KINDS = ("services", "airflow", "browser", "slow")
#: Modules whose tests start their own services or tools (no fixture shows it).
_SERVICE_MODULES = ("test_services.py", "test_faults.py", "test_compose.py")
#: Tests that train, render many phantoms or fuzz: slow on 2 cores, whatever they need.
_SLOW = ("test_training.py", "test_fuzz_headers.py", "test_holdout_phantom.py",
         "test_radiology_phantom.py", "test_synth_anatomy.py", "test_real_loaders.py")


def pytest_configure(config: pytest.Config) -> None:
    for name, what in (
        ("unit", "needs no service, no Airflow and no browser; part of make test-fast"),
        ("services", "talks to a real PostgreSQL or SeaweedFS (or runs the CLI against them)"),
        ("airflow", "runs real Airflow: dag.test() or the airflow CLI"),
        ("browser", "drives a real Chromium"),
        ("slow", "takes more than about 20 s on 2 cores (training, big data sets)"),
    ):
        config.addinivalue_line("markers", f"{name}: {what}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        needs = set(getattr(item, "fixturenames", ()))
        if needs & _AIRFLOW_FIXTURES:
            item.add_marker(pytest.mark.airflow)
        if needs & _SERVICE_FIXTURES or item.nodeid.split("::")[0].endswith(_SERVICE_MODULES):
            item.add_marker(pytest.mark.services)
        if "browser" in item.nodeid.split("::")[0]:
            item.add_marker(pytest.mark.browser)
        if item.nodeid.split("::")[0].endswith(_SLOW):
            item.add_marker(pytest.mark.slow)
        if not any(item.get_closest_marker(k) for k in _KINDS):
            item.add_marker(pytest.mark.unit)


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    from bloodnet_ops.services import ServiceError, ensure_postgres

    try:
        return ensure_postgres()
    except (ServiceError, OSError) as exc:
        pytest.fail(f"PostgreSQL could not be started or reached: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def database_url(pg_server_url: str) -> Iterator[str]:
    from bloodnet_ops.db.session import migrate
    from bloodnet_ops.services import create_database, drop_database

    name = f"bloodnet_test_{uuid.uuid4().hex[:12]}"
    url = create_database(pg_server_url, name)
    try:
        migrate(url)
        yield url
    finally:
        drop_database(pg_server_url, name)


@pytest.fixture
def empty_db(pg_server_url: str) -> Iterator[str]:
    """A fresh, unmigrated database of the test's own; dropped at the end."""
    from bloodnet_ops.services import create_database, drop_database

    name = f"bloodnet_empty_{uuid.uuid4().hex[:10]}"
    url = create_database(pg_server_url, name)
    try:
        yield url
    finally:
        drop_database(pg_server_url, name)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from bloodnet_ops.services import ServiceError, start_seaweedfs

    try:
        server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    except (ServiceError, OSError) as exc:
        pytest.fail(f"SeaweedFS could not be started: {exc}", pytrace=False)
    saved = {k: os.environ.get(k) for k in server.env()}
    os.environ.update(server.env())
    try:
        yield server
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def s3_bucket(s3_server) -> str:
    from bloodnet_ops.storage import s3_client

    name = f"t-{uuid.uuid4().hex[:20]}"
    s3_client().create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def synth_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bloodnet_ops.synth import generate_dataset

    out = tmp_path_factory.mktemp("synth_small")
    generate_dataset(out, studies=6, sites=2, seed=7, matrix=128)
    return out
