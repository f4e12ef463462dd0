"""The service starters, exercised for real: the embedded PostgreSQL fallback (forced, since a
machine with a local server would otherwise hide it) and SeaweedFS restarts."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import psycopg2
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from sqlalchemy import create_engine, make_url, text

from bloodnet_ops import services
from bloodnet_ops.db.session import current_revision, migrate


def _scalar(url: str, sql: str):
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql)).scalar_one()
    finally:
        engine.dispose()


def _process_uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for pid {pid}")


def test_env_url_wins(monkeypatch: pytest.MonkeyPatch, pg_server_url: str) -> None:
    bare = pg_server_url.replace("postgresql+psycopg2://", "postgresql://")
    monkeypatch.setenv("BLOODNET_DATABASE_URL", bare)
    url = services.ensure_postgres()
    assert url == pg_server_url.replace("postgresql://", "postgresql+psycopg2://")
    assert _scalar(url, "SELECT 1") == 1


def test_embedded_fallback_is_a_working_postgresql_18() -> None:
    url = services.ensure_postgres(prefer_local=False)
    assert make_url(url).port != services.LOCAL_PORT
    assert int(_scalar(url, "SHOW server_version_num")) >= 180000
    # Shared within the process: a second call returns the same running cluster.
    assert services.ensure_postgres(prefer_local=False) == url
    db = services.create_database(url, "bloodnet_embedded_check")
    try:
        migrate(db)
        assert current_revision(db) is not None
    finally:
        services.drop_database(url, "bloodnet_embedded_check")


def test_embedded_cluster_restart_crash_and_stop() -> None:
    # Not under pytest's tmp_path: every new pytest session resets /tmp/pytest-of-<user> to 0700,
    # which would lock the unprivileged PostgreSQL user out of its data folder mid-test.
    holder = Path(tempfile.mkdtemp(prefix="bloodnet-pg-test-"))
    pg = services.start_embedded_postgres(holder / "pg")
    try:
        pid = pg.pid
        assert pid is not None
        if os.geteuid() == 0:  # PostgreSQL refuses root; it must run as the unprivileged user
            assert _process_uid(pid) != 0
        engine = create_engine(pg.url)
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE kept (v int)"))
            conn.execute(text("INSERT INTO kept VALUES (1), (2), (3)"))
        engine.dispose()

        pg.restart()
        assert pg.pid != pid
        assert _scalar(pg.url, "SELECT sum(v) FROM kept") == 6

        pg.kill()  # a crash: recovery on the next start keeps committed rows
        assert not services._alive(pid)
        pg.start()
        assert _scalar(pg.url, "SELECT count(*) FROM kept") == 3
    finally:
        last = pg.pid
        pg.stop()
    assert last is not None and not services._alive(last)
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(host="127.0.0.1", port=pg.port, user="postgres", connect_timeout=2)
    assert (holder / "pg" / "data" / "PG_VERSION").exists()  # caller-owned folder is kept
    shutil.rmtree(holder)


def test_create_database_refuses_unsafe_names(pg_server_url: str) -> None:
    for bad in ['x"; DROP DATABASE postgres; --', "Upper", "1starts_with_digit", "", "a" * 64]:
        with pytest.raises(ValueError, match="database name"):
            services.create_database(pg_server_url, bad)
        with pytest.raises(ValueError, match="database name"):
            services.drop_database(pg_server_url, bad)


def test_create_database_twice_is_an_error_unless_exist_ok(pg_server_url: str) -> None:
    url = services.create_database(pg_server_url, "bloodnet_twice_check")
    try:
        with pytest.raises(ValueError, match="already exists"):
            services.create_database(pg_server_url, "bloodnet_twice_check")
        assert services.create_database(pg_server_url, "bloodnet_twice_check", exist_ok=True) == url
        assert _scalar(url, "SELECT current_database()") == "bloodnet_twice_check"
    finally:
        services.drop_database(pg_server_url, "bloodnet_twice_check")
    services.drop_database(pg_server_url, "bloodnet_twice_check")  # absent: no error


def test_seaweedfs_keeps_data_across_restart_and_crash(tmp_path: Path) -> None:
    s3 = services.start_seaweedfs(tmp_path / "weed")
    try:
        client = s3.client()
        client.create_bucket(Bucket="restart-check")
        client.put_object(Bucket="restart-check", Key="a/b c.dcm", Body=b"payload-1")
        first_pid = s3.pid

        s3.restart()
        assert s3.pid != first_pid
        body = s3.client().get_object(Bucket="restart-check", Key="a/b c.dcm")["Body"].read()
        assert body == b"payload-1"

        s3.kill()
        with pytest.raises(EndpointConnectionError):
            s3.client().list_buckets()
        s3.start()
        client = s3.client()
        assert client.get_object(Bucket="restart-check", Key="a/b c.dcm")["Body"].read() == (
            b"payload-1"
        )
        client.put_object(Bucket="restart-check", Key="after", Body=b"2")
        assert client.get_object(Bucket="restart-check", Key="after")["Body"].read() == b"2"
    finally:
        last = s3.pid
        s3.stop()
    assert last is not None and not services._alive(last)


def test_seaweedfs_enforces_its_credentials(s3_server) -> None:
    import boto3

    bad = boto3.client(
        "s3", endpoint_url=s3_server.endpoint, aws_access_key_id=s3_server.access_key,
        aws_secret_access_key="wrong-secret", region_name="us-east-1",
    )
    with pytest.raises(ClientError) as err:
        bad.list_objects_v2(Bucket=services.HEALTH_BUCKET)
    assert err.value.response["Error"]["Code"] in {"SignatureDoesNotMatch", "AccessDenied"}


def test_s3_server_fixture_exports_its_environment(s3_server) -> None:
    env = s3_server.env()
    assert set(env) == {
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "BLOODNET_S3_ENDPOINT"
    }
    for key, value in env.items():
        assert os.environ[key] == value
    assert env["BLOODNET_S3_ENDPOINT"].startswith("http://127.0.0.1:")
    conn = s3_server.airflow_conn()
    assert s3_server.endpoint in conn and s3_server.secret_key in conn


def test_weed_binary_comes_from_the_wheel() -> None:
    weed = services.weed_binary()
    assert weed.name == "weed" and os.access(weed, os.X_OK)
