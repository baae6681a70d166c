"""The ASGI application: routes, error bodies, start-up and shutdown."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from daehwa.accounts import Accounts
from daehwa.api import account, auth, conversations, metrics, openai_compat, tools, ws
from daehwa.api.assembly import assemble
from daehwa.api.deps import current_user, json_response
from daehwa.chat.generate import ModelSource
from daehwa.config import Settings
from daehwa.errors import DaehwaError, InvalidInput
from daehwa.store.base import Store

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
_STATUS_CODES = {
    400: "invalid_input",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
}


# The chat page's policy: nothing but our own origin; model output is sanitised, and
# Trusted Types make any unsanitised HTML sink throw.
PAGE_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https:; "
        "font-src 'self'; connect-src 'self'; manifest-src 'self'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'; require-trusted-types-for 'script'; "
        "trusted-types dompurify"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


class App(FastAPI):
    """FastAPI, with ``/v1/ws`` and the turns' route served ahead of all its layers.

    A socket stays open for hours; through the middleware stack it would keep a
    coroutine frame of each layer alive all that time (about 1.2 KB per socket,
    docs/performance.md). Here it keeps only this one.

    ``POST /v1/conversations/{id}/messages`` is the request every turn makes: it
    goes straight to its endpoint, without the middleware stack, the routing and
    the dependency injection, and its stream's frames straight to the server's
    ``send``. Its errors get the same bodies as any route's.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if ws.is_socket(scope):
            await ws.serve(self.state, scope, receive, send)
            return
        conversation_id = conversations.turn_target(scope)
        if conversation_id is not None:
            await self._turn(conversation_id, scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    async def _turn(self, conversation_id: str, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self
        request = Request(scope, receive)
        try:
            user = await current_user(request)
            response = await conversations.send_message(conversation_id, request, user)
        except Exception as exc:
            response = await self._error_response(request, exc)
        await response(scope, receive, send)

    async def _error_response(self, request: Request, exc: Exception) -> Response:
        """The response the app's exception handlers give ``exc``."""
        for kind in type(exc).__mro__:
            handler = self.exception_handlers.get(kind)
            if handler is not None:
                response = handler(request, exc)
                return await response if inspect.isawaitable(response) else response
        raise exc


class PageFiles(StaticFiles):
    """The page's static files, sent with the page's security headers."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers.update(PAGE_HEADERS)
        return response


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    return {"error": error}


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DaehwaError)
    async def daehwa_error(request: Request, exc: DaehwaError) -> Response:
        field = exc.field if isinstance(exc, InvalidInput) else None
        response = json_response(error_body(exc.code, exc.message, field), exc.status)
        if exc.status == 401:
            response.headers["www-authenticate"] = "Bearer"
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            # Refused before anything was stored: the client may send again after this.
            response.headers["retry-after"] = str(retry_after)
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        field = ".".join(str(p) for p in first["loc"] if p not in ("body", "query", "path"))
        return json_response(error_body("invalid_input", f"{field}: {first['msg']}", field), 400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = _STATUS_CODES.get(exc.status_code, "http_error")
        return json_response(error_body(code, str(exc.detail)), exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return json_response(error_body("internal_error", "internal server error"), 500)


async def bootstrap_user(
    settings: Settings, accounts: Accounts, announce: Callable[[str], None]
) -> None:
    """Make a fresh server usable at once: a local admin user and a one-time login link."""
    name = settings.server.bootstrap_user
    if not name:
        return
    store = accounts.store
    user = await store.get_user_by_name(name)
    if user is None:
        if await store.list_users():
            return
        created = await accounts.create_user(name, admin=True)
        user = created.user
        announce(f"created user {name!r} with API key: {created.api_key}")
    token = await accounts.login_link_token(user)
    host = settings.server.host if settings.server.host not in ("0.0.0.0", "::") else "127.0.0.1"
    announce(f"open the chat page: http://{host}:{settings.server.port}/login?token={token}")


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    models: ModelSource | None = None,
    announce: Callable[[str], None] | None = None,
    on_started: Callable[[], None] | None = None,
) -> FastAPI:
    """Build the application. ``store`` and ``models`` are opened from settings when omitted.

    ``on_started`` runs once start-up is complete, before the first request.
    """
    say = announce or (lambda text: log.warning("%s", text))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with assemble(settings, store=store, models=models) as app_parts:
            app.state.parts = app_parts
            await bootstrap_user(settings, app_parts.accounts, say)
            if on_started is not None:
                on_started()
            yield

    app = App(title="daehwa", version="0.1.0", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    _install_error_handlers(app)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        return json_response({"status": "ok"})

    app.include_router(auth.router)
    app.include_router(conversations.router)
    app.include_router(account.router)
    app.include_router(tools.router)
    app.include_router(metrics.router)
    app.include_router(openai_compat.router)
    if (WEB_DIR / "index.html").is_file():
        app.mount("/static", PageFiles(directory=WEB_DIR), name="static")

        @app.get("/", include_in_schema=False)
        async def index() -> Response:
            return FileResponse(
                WEB_DIR / "index.html", headers={**PAGE_HEADERS, "cache-control": "no-cache"}
            )

    return app
