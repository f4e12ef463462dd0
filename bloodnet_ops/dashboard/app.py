"""The dashboard web application: server-rendered pages over the results database's views.

``create_app`` is used twice: by ``bloodnet dashboard`` (standalone, behind the shared token) and
by the Airflow plugin (mounted at ``/bloodnet``, behind Airflow's JWT). Every link and asset
reference in the pages is relative, and every page lives at the same depth, so the same HTML works
under any mount prefix or proxy path.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache
from pathlib import Path
from typing import Annotated, Any

import jinja2
from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BeforeValidator
from sqlalchemy.exc import DBAPIError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bloodnet_ops.dashboard import pages
from bloodnet_ops.dashboard.auth import Authenticator, AuthMiddleware, check_credentials
from bloodnet_ops.dashboard.charts import figure_json
from bloodnet_ops.dashboard.database import Database, UrlSource

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
DEFAULT_REPORTS_DIR = REPO_ROOT / "reports"

NAV: tuple[tuple[str, str], ...] = (
    ("overview", "Overview"),
    ("quality", "Data quality"),
    ("audit", "Audit"),
    ("drift", "Drift"),
    ("models", "Models"),
)

# Plotly draws with inline styles, hence 'unsafe-inline' for styles only; scripts come from here.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'self'"
)


def _blank_to_none(value: Any) -> Any:
    return None if value == "" else value


# An HTML form submits an untouched date or select field as an empty string: that means "no filter".
OptionalDate = Annotated[dt.date | None, BeforeValidator(_blank_to_none)]
OptionalText = Annotated[str | None, BeforeValidator(_blank_to_none)]

MSG_DB_UNAVAILABLE = "The results database did not answer; the dashboards cannot be shown now."
MSG_SCHEMA_MISSING = ("The results database has no BloodNet views or tables ({name} is missing): "
                      "run `bloodnet migrate --db URL` against it, then reload.")
MSG_NO_PERMISSION = ("The dashboard's database user may not read {name}: grant it the "
                     "bloodnet_reader role (sql/roles.sql).")


def query_failure_message(exc: DBAPIError) -> str:
    """What a failed page query tells the reader: the real cause, not always "did not answer"."""
    code = getattr(exc.orig, "pgcode", None)
    text_ = str(exc.orig or exc)
    found = re.search(r'relation "([^"]+)"', text_) or re.search(r"function ([a-z_0-9]+)", text_)
    name = found.group(1) if found else "a view"
    if code in {"42P01", "42883"}:  # undefined_table, undefined_function
        return MSG_SCHEMA_MISSING.format(name=name)
    if code == "42501":  # insufficient_privilege
        return MSG_NO_PERMISSION.format(name=name)
    return MSG_DB_UNAVAILABLE


@cache
def plotly_bundle() -> tuple[bytes, bytes, str]:
    """``(raw, gzipped, etag)`` of the ``plotly.min.js`` shipped inside the installed plotly package."""
    import plotly

    path = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
    raw = path.read_bytes()
    return raw, gzip.compress(raw, compresslevel=6), hashlib.sha256(raw).hexdigest()[:16]


class SecurityHeaders:
    """Adds CSP and friends to every response, ``no-store`` to pages, and a ``Server-Timing``
    header with the handler's wall time (read by the benchmark)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                extra = {
                    b"content-security-policy": CSP.encode(),
                    b"x-content-type-options": b"nosniff",
                    b"referrer-policy": b"no-referrer",
                    b"x-frame-options": b"SAMEORIGIN",
                }
                if b"cache-control" not in names:
                    extra[b"cache-control"] = b"no-store"
                elapsed_ms = (time.perf_counter() - started) * 1000
                extra[b"server-timing"] = f"app;dur={elapsed_ms:.1f}".encode()
                headers += [(k, v) for k, v in extra.items() if k not in names]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{float(value):.{digits}f}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * float(value):.1f} %"


def _when(value: dt.datetime | None) -> str:
    if value is None:
        return "–"
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    minutes, sec = divmod(round(seconds), 60)
    return f"{minutes} min {sec:02d} s" if minutes else f"{sec} s"


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every page: output escaping is not optional
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(num=_num, pct=_pct, when=_when, duration=_duration)
    env.policies["json.dumps_function"] = figure_json
    return Jinja2Templates(env=env)


def create_app(
    db_url: UrlSource,
    *,
    token: str | None = None,
    auth: Authenticator | None = None,
    allow_anonymous: bool = False,
    reports_dir: Path | None = None,
) -> FastAPI:
    """Build the dashboard app.

    Parameters
    ----------
    db_url
        SQLAlchemy URL of the results database (a ``bloodnet_reader`` login is enough), or a
        callable returning it, resolved on the first request.
    token
        Shared token (``BLOODNET_DASHBOARD_TOKEN``) accepted as a Bearer header, a cookie, or once as
        ``?token=``.
    auth
        Extra authenticator, e.g. Airflow's JWT inside the plugin.
    allow_anonymous
        Serve without any credential; only for a server bound to loopback.
    reports_dir
        Where ``ablation/*.json`` reports are read from (default: ``<repo>/reports``).
    """
    check_credentials(token, auth, allow_anonymous)  # fail at construction, not on first request
    database = Database(db_url)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        database.dispose()

    app = FastAPI(
        title="BloodNet dashboards",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    app.state.db = database
    app.state.reports_dir = reports_dir or DEFAULT_REPORTS_DIR
    templates = _templates()

    def render(request: Request, page: str, template: str, context: dict[str, Any]) -> Response:
        context = {"page": page, "nav": NAV, "charts": {}, **context}
        return templates.TemplateResponse(request, template, context)

    @app.exception_handler(DBAPIError)
    async def db_unavailable(_: Request, exc: DBAPIError) -> Response:
        cause = type(exc.orig).__name__ if exc.orig else type(exc).__name__
        log.error("dashboard query failed: %s", cause)
        return PlainTextResponse(query_failure_message(exc), status_code=503)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/", include_in_schema=False)
    def index() -> RedirectResponse:
        return RedirectResponse("overview", status_code=307)

    @app.get("/static/plotly.min.js", include_in_schema=False)
    def plotly_js(request: Request) -> Response:
        raw, gz, etag = plotly_bundle()
        headers = {"ETag": f'"{etag}"', "Cache-Control": "private, max-age=86400"}
        if request.headers.get("if-none-match") == f'"{etag}"':
            return Response(status_code=304, headers=headers)
        if "gzip" in request.headers.get("accept-encoding", ""):
            headers["Content-Encoding"] = "gzip"
            return Response(gz, media_type="text/javascript", headers=headers)
        return Response(raw, media_type="text/javascript", headers=headers)

    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.get("/overview", response_class=HTMLResponse)
    def overview(request: Request, days: Annotated[int, Query(ge=1, le=730)] = 30) -> Response:
        with database.connect() as conn:
            ctx = pages.overview(conn, days=days)
        return render(request, "overview", "overview.html", ctx)

    @app.get("/quality", response_class=HTMLResponse)
    def quality(
        request: Request,
        site: OptionalText = None,
        start: OptionalDate = None,
        end: OptionalDate = None,
    ) -> Response:
        with database.connect() as conn:
            ctx = pages.quality(conn, site=site, start=start, end=end)
        return render(request, "quality", "quality.html", ctx)

    @app.get("/rejects", response_class=HTMLResponse)
    def rejects(request: Request, night: dt.date, site: OptionalText = None) -> Response:
        with database.connect() as conn:
            ctx = pages.rejects(conn, night=night, site=site)
        return render(request, "quality", "rejects.html", ctx)

    @app.get("/audit", response_class=HTMLResponse)
    def audit(
        request: Request,
        site: OptionalText = None,
        start: OptionalDate = None,
        end: OptionalDate = None,
        kind: OptionalText = None,
        status: OptionalText = None,
        sort: str = "exam_date",
        direction: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
        page: Annotated[int, Query(ge=1)] = 1,
        per_page: Annotated[int, Query(ge=5, le=200)] = 25,
    ) -> Response:
        filters = pages.WorklistFilters(
            site=site,
            start=start,
            end=end,
            kind=kind,
            status=status,
            sort=sort,
            direction=direction,
            page=page,
            per_page=per_page,
        )
        with database.connect() as conn:
            ctx = pages.audit(conn, filters)
        return render(request, "audit", "audit.html", ctx)

    @app.get("/drift", response_class=HTMLResponse)
    def drift(request: Request, site: OptionalText = None, metric: OptionalText = None) -> Response:
        with database.connect() as conn:
            ctx = pages.drift(conn, site=site, metric=metric)
        return render(request, "drift", "drift.html", ctx)

    @app.get("/models", response_class=HTMLResponse)
    def models(request: Request) -> Response:
        with database.connect() as conn:
            ctx = pages.models(conn, reports_dir=app.state.reports_dir)
        return render(request, "models", "models.html", ctx)

    app.add_middleware(
        AuthMiddleware, token=token, authenticator=auth, allow_anonymous=allow_anonymous
    )
    app.add_middleware(SecurityHeaders)
    return app
