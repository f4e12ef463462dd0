"""One settings object for every BLOODNET_* variable, and resources found as package data."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import zipfile
from dataclasses import fields
from pathlib import Path

import pytest

from bloodnet_ops import settings

REPO = Path(__file__).resolve().parents[1]


def test_readme_table_is_the_generated_one() -> None:
    readme = (REPO / "README.md").read_text()
    block = re.search(r"<!-- settings-table -->\n(.*?)\n<!-- /settings-table -->", readme, re.DOTALL)
    assert block is not None
    assert block.group(1).strip() == settings.markdown_table()


def test_every_variable_has_a_field_with_the_documented_default() -> None:
    defaults = settings.Settings()
    names = {f.name for f in fields(settings.Settings)}
    assert {v.field for v in settings.VARIABLES} == names
    for var in settings.VARIABLES:
        if var.default:  # the README's default is the dataclass's
            assert settings.current({var.name: var.default}) == defaults, var.name


def test_values_are_parsed_and_typed() -> None:
    s = settings.current({"BLOODNET_S3_RETRY_SECONDS": " 2.5 ", "BLOODNET_MAX_SERIES_VOXELS": "1e6",
                          "BLOODNET_CACHE": "/tmp/bn-cache", "BLOODNET_MODEL": "/m.pt"})
    assert s.s3_retry_seconds == 2.5 and s.max_series_voxels == 1_000_000
    assert s.cache == Path("/tmp/bn-cache") and s.model == "/m.pt"


def test_a_bad_value_warns_once_and_keeps_the_default(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="bloodnet_ops.settings")
    env = {"BLOODNET_RETRY_DELAY_S": "soon-ish"}
    assert settings.current(env).retry_delay_s == 60.0
    assert settings.current(env).retry_delay_s == 60.0
    warnings = [r for r in caplog.records if "BLOODNET_RETRY_DELAY_S" in r.getMessage()]
    assert len(warnings) == 1


def test_secrets_stay_out_of_repr() -> None:
    s = settings.current({"BLOODNET_PSEUDONYM_KEY": "k-secret-123",
                          "BLOODNET_DASHBOARD_TOKEN": "t-secret-456"})
    assert s.pseudonym_key == "k-secret-123"
    assert "secret" not in repr(s)


def test_no_bloodnet_variable_is_read_anywhere_else() -> None:
    read = re.compile(r"""(environ\.get\(|environ\[|getenv\()\s*["']BLOODNET_""")
    offenders = [
        f"{path.relative_to(REPO)}:{n}"
        for folder in ("bloodnet_ops", "dags", "plugins")
        for path in (REPO / folder).rglob("*.py")
        if path.name != "settings.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if read.search(line)
    ]
    assert offenders == []


@pytest.mark.slow
def test_a_plain_wheel_ships_the_sql_and_the_weights(tmp_path: Path) -> None:
    """The Dockerfile installs the package non-editable: its resources must be in the wheel."""
    import shutil

    had_build = (REPO / "build").exists()
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=600, check=False)
    if not had_build:  # setuptools builds in the checkout; leave it as it was
        shutil.rmtree(REPO / "build", ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("bloodnet_screening-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for sql in ("views.sql", "roles.sql", "retention.sql"):
        assert f"bloodnet_ops/sql/{sql}" in names
    assert "bloodnet_ops/weights/bloodnet.pt" in names
    assert "bloodnet_ops/db/migrations/env.py" in names
