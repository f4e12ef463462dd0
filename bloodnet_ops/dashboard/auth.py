"""Authentication for the dashboard pages.

Two ways in, checked in this order on every request except ``/healthz``:

1. the shared token (``BLOODNET_DASHBOARD_TOKEN``) as ``Authorization: Bearer <token>``, as the
   HttpOnly cookie ``bloodnet_dashboard_token``, or once as ``?token=<token>`` (answered with a
   redirect to the same URL without the token, which sets the cookie, so the token does not
   stay in the address bar or the browser history);
2. an optional ``Authenticator`` (an async callable that returns a principal name or ``None``);
   the Airflow plugin passes one that validates Airflow's JWT through its auth manager.

Anything else gets 401 (no credential) or 403 (a credential that was wrong). The check is an
ASGI middleware rather than a route dependency so that static files are covered too and no
route can be added without it.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

Authenticator = Callable[[Request], Awaitable[str | None]]
"""Returns the name of the authenticated principal, or ``None`` when the request carries no valid
credential of that kind. It must not raise for a bad credential."""

TOKEN_COOKIE = "bloodnet_dashboard_token"
TOKEN_QUERY = "token"
OPEN_PATHS = frozenset({"/healthz", "/favicon.ico"})

MSG_NOT_AUTHENTICATED = "Not authenticated: send the dashboard token or sign in to Airflow."
MSG_FORBIDDEN = "Forbidden: the credential was not accepted."


def bearer_token(request: Request) -> str | None:
    """The credential of an ``Authorization: Bearer`` header, if any."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _cookie_path(request: Request) -> str:
    # Scoped to the mount point: inside Airflow the cookie must not travel to Airflow's own routes.
    root = request.scope.get("root_path", "") or ""
    return root.rstrip("/") + "/" if root else "/"


def _without_token(request: Request) -> str:
    query = [(k, v) for k, v in request.query_params.multi_items() if k != TOKEN_QUERY]
    # Path + query only, so that it stays correct behind proxies that rewrite the host.
    return request.url.path + ("?" + urlencode(query) if query else "")


MIN_TOKEN_LENGTH = 16


def check_credentials(
    token: str | None, authenticator: Authenticator | None, allow_anonymous: bool
) -> None:
    """Raise ``ValueError`` for a configuration that would serve pages to anyone by accident."""
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(
            f"the dashboard token must be at least {MIN_TOKEN_LENGTH} characters, got {len(token)}"
        )
    if token is None and authenticator is None and not allow_anonymous:
        raise ValueError("the dashboard needs a token or an authenticator (or allow_anonymous)")


class AuthMiddleware:
    """ASGI middleware refusing every request that carries no accepted credential.

    Parameters
    ----------
    app
        The wrapped application.
    token
        The shared dashboard token, or ``None`` to accept only ``authenticator``.
    authenticator
        An extra way in (Airflow's JWT inside the plugin), or ``None``.
    allow_anonymous
        Accept every request. Only the loopback-bound standalone server may ask for this.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        authenticator: Authenticator | None,
        allow_anonymous: bool = False,
    ) -> None:
        check_credentials(token, authenticator, allow_anonymous)
        self.app = app
        self.token = token
        self.authenticator = authenticator
        self.allow_anonymous = allow_anonymous

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        route_path = scope["path"][len(scope.get("root_path", "")) :] or "/"
        if route_path in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        response = await self._check(request)
        if response is None:
            await self.app(scope, receive, send)
        else:
            await response(scope, receive, send)

    async def _check(self, request: Request) -> Response | None:
        """``None`` lets the request through; otherwise the response to send instead."""
        presented = False
        if self.token is not None:
            query_token = request.query_params.get(TOKEN_QUERY)
            if query_token is not None:
                if not _same(query_token, self.token):
                    return self._refuse(request, forbidden=True)
                redirect = RedirectResponse(_without_token(request), status_code=303)
                redirect.set_cookie(
                    TOKEN_COOKIE,
                    self.token,
                    httponly=True,
                    samesite="strict",
                    secure=request.url.scheme == "https",
                    path=_cookie_path(request),
                )
                return redirect
            for candidate in (bearer_token(request), request.cookies.get(TOKEN_COOKIE)):
                if candidate is None:
                    continue
                if _same(candidate, self.token):
                    return None
                presented = True
        if self.authenticator is not None:
            principal = await self.authenticator(request)
            if principal is not None:
                return None
            presented = presented or bearer_token(request) is not None
        if self.allow_anonymous:
            return None
        return self._refuse(request, forbidden=presented)

    @staticmethod
    def _refuse(request: Request, *, forbidden: bool) -> Response:
        log.info("dashboard request refused: path=%s status=%s", request.url.path, 403 if forbidden else 401)
        if forbidden:
            return PlainTextResponse(MSG_FORBIDDEN, status_code=403)
        return PlainTextResponse(
            MSG_NOT_AUTHENTICATED, status_code=401, headers={"WWW-Authenticate": "Bearer"}
        )
