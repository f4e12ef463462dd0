"""Expected failures of the command line: at most three lines on stderr, no traceback, a
non-zero exit code, the value received and what to do, never a secret (issue 13).

Each case runs ``bloodnet`` as a subprocess against the real services of the suite, or against
a port where nothing listens.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.services

BLOODNET = [sys.executable, "-m", "bloodnet_ops.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args: list[str], env: dict[str, str] | None = None,
         drop: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **(env or {}), "BLOODNET_S3_RETRY_SECONDS": "60"}
    for key in drop:
        full.pop(key, None)
    return subprocess.run([*BLOODNET, *args], capture_output=True, text=True, env=full, check=False,
                          timeout=240, cwd=Path(__file__).resolve().parents[1])


def _expect_clean_failure(proc: subprocess.CompletedProcess[str], *needles: str,
                          secrets: tuple[str, ...] = ()) -> None:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode != 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert 1 <= len(lines) <= 3, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr
    for secret in secrets:
        assert secret not in proc.stderr + proc.stdout


@pytest.fixture(scope="module")
def one_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bloodnet_ops.synth import generate_dataset

    out = tmp_path_factory.mktemp("one_study")
    generate_dataset(out, studies=1, sites=1, seed=3, matrix=64)
    return out


def test_no_credentials(s3_server, s3_bucket) -> None:
    proc = _run(["validate", f"s3://{s3_bucket}/x"],
                drop=("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"),
                env={"AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent"})
    _expect_clean_failure(proc, "no S3 credentials", s3_server.endpoint)


def test_wrong_credentials_never_print_the_secret(s3_server, s3_bucket) -> None:
    wrong = "not-the-secret-0123456789abcdef"
    proc = _run(["validate", f"s3://{s3_bucket}/x"], env={"AWS_SECRET_ACCESS_KEY": wrong})
    _expect_clean_failure(proc, "refused the credentials", secrets=(wrong, s3_server.secret_key))


def test_missing_bucket(s3_server) -> None:
    proc = _run(["validate", "s3://no-such-bucket-bloodnet/incoming"])
    _expect_clean_failure(proc, "no-such-bucket-bloodnet", "does not exist",
                          secrets=(s3_server.secret_key,))


def test_endpoint_down_fails_at_once_not_after_the_retry_budget(s3_server) -> None:
    endpoint = f"http://127.0.0.1:{_free_port()}"
    proc = _run(["validate", "s3://bucket/x"], env={"BLOODNET_S3_ENDPOINT": endpoint})
    _expect_clean_failure(proc, "cannot reach the S3 endpoint", endpoint)


def test_database_down(one_study: Path) -> None:
    port = _free_port()
    proc = _run(["screen", str(one_study), "--db",
                 f"postgresql://bloodnet:hunter2pw@127.0.0.1:{port}/x", "--json"])
    _expect_clean_failure(proc, "cannot reach the database", f"127.0.0.1:{port}",
                          secrets=("hunter2pw",))
    assert proc.stdout == ""


def test_database_refuses_the_login(one_study: Path, pg_server_url: str) -> None:
    from sqlalchemy.engine import make_url

    url = make_url(pg_server_url).set(username="no_such_reader", password="pw-never-shown")
    proc = _run(["screen", str(one_study), "--db", url.render_as_string(hide_password=False)])
    _expect_clean_failure(proc, "no_such_reader", secrets=("pw-never-shown",))


def test_missing_model_file(one_study: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope.pt"
    proc = _run(["predict", str(one_study), "--model", str(missing), "--json"])
    _expect_clean_failure(proc, "model file not found", str(missing))


def test_corrupt_model_file(one_study: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    good = (Path(__file__).resolve().parents[1] / "models" / "bloodnet.pt").read_bytes()
    bad.write_bytes(good[: len(good) // 3])  # a copy cut short
    proc = _run(["predict", str(one_study), "--model", str(bad)])
    _expect_clean_failure(proc, "not a readable checkpoint", str(bad))


def test_missing_source_folder(tmp_path: Path) -> None:
    proc = _run(["validate", str(tmp_path / "absent")])
    _expect_clean_failure(proc, "absent")


@pytest.mark.parametrize("args", [["screen"], ["eval", "--no-such-option", "x"],
                                  ["synth", "--out", "/tmp/x", "--studies", "many"]])
def test_bad_argument(args: list[str]) -> None:
    proc = _run(args)
    _expect_clean_failure(proc, "--help")
    assert proc.returncode == 2


def test_info_logs_carry_no_alembic_chatter(tmp_path: Path, database_url: str) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = _run(["screen", str(empty), "--db", database_url, "--json", "--no-dicom"])
    assert proc.returncode == 0, proc.stderr
    assert "alembic" not in proc.stderr.lower(), proc.stderr
