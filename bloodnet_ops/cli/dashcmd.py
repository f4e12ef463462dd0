"""``bloodnet dashboard``: the dashboards served standalone with uvicorn.

For teams that do not expose the Airflow UI. The shared token ``BLOODNET_DASHBOARD_TOKEN`` is
required unless the server is bound to loopback only; open it once with ``?token=...`` (it becomes
an HttpOnly cookie) or send ``Authorization: Bearer ...``.
"""

from __future__ import annotations

import ipaddress
import logging
import sys
from typing import Annotated

import typer

log = logging.getLogger(__name__)

from bloodnet_ops.dashboard.auth import MIN_TOKEN_LENGTH
from bloodnet_ops.settings import current

TOKEN_ENV = "BLOODNET_DASHBOARD_TOKEN"


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` exposes the server to this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def check_token(token: str | None, host: str) -> str | None:
    """The token to require, or ``None`` (loopback without a token). Raises ``ValueError`` when
    the server would be reachable from the network without a token, or the token is too short."""
    if token:
        if len(token) < MIN_TOKEN_LENGTH:
            raise ValueError(
                f"{TOKEN_ENV} must be at least {MIN_TOKEN_LENGTH} characters, got {len(token)}"
            )
        return token
    if not is_loopback(host):
        raise ValueError(
            f"refusing to serve the dashboards on {host} without {TOKEN_ENV}: set a token "
            "(e.g. `export BLOODNET_DASHBOARD_TOKEN=$(openssl rand -hex 24)`) or bind 127.0.0.1"
        )
    return None


def dashboard(
    db: Annotated[str, typer.Option("--db", help="Results database URL (a read-only role is enough).")],
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8050,
) -> None:
    """Serve the data-quality, audit, drift and model dashboards."""
    import uvicorn

    from bloodnet_ops.dashboard.app import create_app

    try:
        token = check_token(current().dashboard_token or None, host)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    app = create_app(db, token=token, allow_anonymous=token is None)
    shown = "localhost" if is_loopback(host) else host
    hint = f"/overview?token=<{TOKEN_ENV}>" if token else "/overview"
    print(f"BloodNet dashboards on http://{shown}:{port}{hint}", file=sys.stderr, flush=True)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False, proxy_headers=False)


def register(app: typer.Typer) -> None:
    app.command("dashboard")(dashboard)
