"""Airflow 3 plugin: mounts the BloodNet dashboards at ``/bloodnet`` and lists them in the UI's
navigation (external views with relative routes, embedded in Airflow's own page).

A plugin's FastAPI routes are *not* behind Airflow's authentication (DESIGN.md §7), so the app
checks every request itself: Airflow's JWT (``Authorization: Bearer`` or the ``_token`` cookie
the UI sets, which the embedded page sends because it is same-origin) validated by the configured
auth manager, or the shared ``BLOODNET_DASHBOARD_TOKEN``. Anything else gets 401/403.

The results database is ``BLOODNET_DASHBOARD_DB_URL`` (ideally a ``bloodnet_reader`` login), else
the ``bloodnet_db`` Airflow connection, resolved on the first page request: the scheduler and the
workers import this module too, and must not open connections for it.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from airflow.plugins_manager import AirflowPlugin
from fastapi import Request
from sqlalchemy.engine import URL

from bloodnet_ops.dashboard.app import create_app
from bloodnet_ops.dashboard.auth import bearer_token
from bloodnet_ops.settings import current

log = logging.getLogger(__name__)

URL_PREFIX = "/bloodnet"
CONN_ID = "bloodnet_db"
PAGES = (
    ("overview", "Overview"),
    ("quality", "Data quality"),
    ("audit", "Audit"),
    ("drift", "Drift"),
    ("models", "Models"),
)


def results_db_url() -> str:
    """The results database URL: the environment, else the ``bloodnet_db`` connection."""
    settings = current()
    url = settings.dashboard_db_url or settings.database_url
    if url:
        return url
    from airflow.models.connection import Connection

    conn = Connection.get_connection_from_secrets(CONN_ID)
    return URL.create(
        "postgresql+psycopg2",
        username=conn.login or None,
        password=conn.password or None,
        host=conn.host or None,
        port=conn.port or None,
        database=conn.schema or None,
    ).render_as_string(hide_password=False)


async def airflow_principal(request: Request) -> str | None:
    """The Airflow user behind the request's JWT, if it is valid and may see the UI."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
    from jwt import InvalidTokenError

    token = bearer_token(request) or request.cookies.get(COOKIE_NAME_JWT_TOKEN)
    if not token:
        return None
    manager = get_auth_manager()
    try:
        user = await manager.get_user_from_token(token)
    except InvalidTokenError:  # expired, revoked, wrong signature or malformed
        return None
    if not manager.is_authorized_view(access_view=AccessView.WEBSITE, user=user):
        return None
    return user.get_name()


dashboard_app = create_app(
    results_db_url,
    token=current().dashboard_token or None,
    auth=airflow_principal,
)


class BloodNetDashboardPlugin(AirflowPlugin):
    name = "bloodnet_dashboard"
    fastapi_apps: ClassVar[list[Any]] = [{"app": dashboard_app, "url_prefix": URL_PREFIX, "name": "BloodNet dashboards"}]
    # href is relative (no leading slash) so it follows Airflow's [api] base_url; url_route makes
    # Airflow embed the page in its own layout instead of linking away.
    external_views: ClassVar[list[Any]] = [
        {
            "name": label,
            "href": f"{URL_PREFIX.lstrip('/')}/{page}",
            "url_route": f"bloodnet-{page}",
            "category": "BloodNet",
            "destination": "nav",
        }
        for page, label in PAGES
    ]
