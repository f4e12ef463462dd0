"""Every ``BLOODNET_*`` variable, parsed in one place into one frozen object.

:func:`current` reads the environment and returns a :class:`Settings`; nothing else in the
package reads a ``BLOODNET_*`` variable. Parsing is cheap, so an entry point (a CLI command, a
DAG task, the dashboard's start-up) calls it when it starts and passes the values down; a later
call sees a changed environment, which is what a DAG task on a long-lived worker and a test need.
A value that does not parse is reported once, by name, and the default is used: a typo in a
deployment must not stop the night. The README's table is generated from :data:`VARIABLES`
(``python -m bloodnet_ops.settings``) and a test keeps the two equal.

Secrets (the pseudonym key, the dashboard token) are fields like the rest; ``repr`` hides them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Variable:
    name: str
    field: str
    default: str  #: as written in the README ("" = unset)
    meaning: str


#: The table: environment variable, Settings field, default, meaning.
VARIABLES: tuple[Variable, ...] = (
    Variable("BLOODNET_DATABASE_URL", "database_url", "",
             "Results database (postgresql://…); the CLI's --db default; tests and the demo "
             "use it as the server to create their databases on"),
    Variable("BLOODNET_DASHBOARD_DB_URL", "dashboard_db_url", "",
             "Database URL of the dashboards inside Airflow (a read-only user); else "
             "BLOODNET_DATABASE_URL"),
    Variable("BLOODNET_DASHBOARD_TOKEN", "dashboard_token", "",
             "Bearer token of the standalone dashboard server (required off loopback)"),
    Variable("BLOODNET_S3_ENDPOINT", "s3_endpoint", "",
             "S3-compatible endpoint URL; unset means AWS S3 (credentials: the AWS_* variables)"),
    Variable("BLOODNET_S3_RETRY_SECONDS", "s3_retry_seconds", "60",
             "Seconds an S3 operation keeps retrying an outage (connection errors, 5xx) before "
             "the step fails"),
    Variable("BLOODNET_MODEL", "model", "",
             "Checkpoint to screen with; unset means the shipped models/bloodnet.pt"),
    Variable("BLOODNET_CACHE", "cache", "~/.cache/bloodnet",
             "Cache of preprocessed training slices"),
    Variable("BLOODNET_MAX_SERIES_VOXELS", "max_series_voxels", "536870912",
             "Largest series loaded (slices × rows × columns); a larger one is rejected with a "
             "reason"),
    Variable("BLOODNET_PSEUDONYM_KEY", "pseudonym_key", "",
             "HMAC key of the patient and reviewer pseudonyms (set it in production; unset "
             "uses a development key and warns)"),
    Variable("BLOODNET_ALERT_WEBHOOK", "alert_webhook", "",
             "URL the drift monitor POSTs alerts to; unset disables it"),
    Variable("BLOODNET_REVIEWER", "reviewer", "",
             "Default reviewer name of `bloodnet adjudicate` (stored as a pseudonym)"),
    Variable("BLOODNET_RETRY_DELAY_S", "retry_delay_s", "60",
             "First retry delay of the DAG tasks, in seconds (doubles on each retry)"),
    Variable("BLOODNET_MAX_RETRY_DELAY_S", "max_retry_delay_s", "1800",
             "Longest retry delay of the DAG tasks, in seconds"),
)


def _secret() -> str:
    return field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class Settings:
    """The parsed variables (see :data:`VARIABLES` for their meaning)."""

    database_url: str = ""
    dashboard_db_url: str = ""
    dashboard_token: str = _secret()
    s3_endpoint: str = ""
    s3_retry_seconds: float = 60.0
    model: str = ""
    cache: Path = field(default_factory=lambda: Path("~/.cache/bloodnet").expanduser())
    max_series_voxels: int = 2048 * 512 * 512
    pseudonym_key: str = _secret()
    alert_webhook: str = ""
    reviewer: str = ""
    retry_delay_s: float = 60.0
    max_retry_delay_s: float = 1800.0


_warned: set[tuple[str, str]] = set()


def _parse(var: Variable, text: str, kind: type) -> object:
    if kind is str:
        return text
    if kind is Path:
        return Path(text).expanduser()
    try:
        value = float(text)
        if value < 0:
            raise ValueError(text)
        return int(value) if kind is int else value
    except ValueError:
        if (var.name, text) not in _warned:
            log.warning("ignoring %s=%r (not a non-negative number); using %s", var.name, text,
                        var.default)
            _warned.add((var.name, text))
        return None


def current(environ: Mapping[str, str] | None = None) -> Settings:
    """The settings of ``environ`` (default: this process's environment)."""
    env = os.environ if environ is None else environ
    kinds = {f.name: f.type for f in fields(Settings)}
    values: dict[str, object] = {}
    for var in VARIABLES:
        text = env.get(var.name, "").strip()
        if not text:
            continue
        kind = {"str": str, "float": float, "int": int, "Path": Path}[str(kinds[var.field])]
        parsed = _parse(var, text, kind)
        if parsed is not None:
            values[var.field] = parsed
    return Settings(**values)  # type: ignore[arg-type]


def markdown_table() -> str:
    """The README's table of variables."""
    rows = ["| variable | default | what it sets |", "|---|---|---|"]
    rows += [f"| `{v.name}` | {f'`{v.default}`' if v.default else 'unset'} | {v.meaning} |"
             for v in VARIABLES]
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
