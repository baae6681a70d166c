"""What every route needs: the app's parts, the caller, JSON in and out."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import Request
from starlette.responses import Response
from starlette.types import Scope

from daehwa.accounts import Accounts
from daehwa.chat.service import ChatService
from daehwa.config import Settings
from daehwa.errors import AuthError, InvalidInput, TooLarge
from daehwa.messages import User
from daehwa.store.base import Store

SESSION_COOKIE = "daehwa_session"


@dataclass(slots=True)
class AppParts:
    """The long-lived parts of one server process."""

    settings: Settings
    store: Store
    accounts: Accounts
    service: ChatService


def parts(request: Request) -> AppParts:
    return request.app.state.parts  # type: ignore[no-any-return]


def route_path(scope: Scope) -> str:
    """The request's path below the application's root path."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def bearer_token(authorization: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, or None."""
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


async def current_user(request: Request) -> User:
    """The caller, from ``Authorization: Bearer <key>`` or the page's session cookie."""
    accounts = parts(request).accounts
    header = request.headers.get("authorization")
    if header:
        token = bearer_token(header)
        if token is None:
            raise AuthError("the Authorization header must be 'Bearer <api key>'")
        return await accounts.user_for(token, kind="api")
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        return await accounts.user_for(cookie, kind="session")
    raise AuthError("an API key (Authorization: Bearer ...) or a login session is required")


def json_response(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


async def read_body(request: Request) -> bytes:
    """The request body, or a 413 as soon as it is longer than ``[server] max_body_bytes``."""
    limit = parts(request).settings.server.max_body_bytes
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"the request body is {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"the request body is longer than the limit of {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # where Starlette keeps it: a later request.body() gets it again
    return body


async def read_json(request: Request, *, allow_empty: bool = False) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 (413) that says what is wrong.

    With ``allow_empty`` an empty or blank body is an empty object.
    """
    raw = await read_body(request)
    if not raw.strip() and allow_empty:
        return {}
    if not raw:
        raise InvalidInput("the request body must be a JSON object", code="invalid_json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"malformed JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidInput("the request body must be a JSON object", code="invalid_json")
    return body


def optional_str(body: dict[str, Any], name: str, *, max_len: int = 200) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string", field=name)
    if len(value) > max_len:
        raise InvalidInput(f"{name} is longer than {max_len} characters", field=name)
    return value


def query_int(
    request: Request, name: str, *, default: int | None, low: int, high: int
) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be an integer", field=name) from None
    if not low <= value <= high:
        raise InvalidInput(f"{name} must be between {low} and {high}", field=name)
    return value


def query_time(request: Request, name: str) -> datetime | None:
    raw = request.query_params.get(name)
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw.replace(" ", "+"))
    except ValueError:
        raise InvalidInput(f"{name} must be an ISO 8601 time", field=name) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)
