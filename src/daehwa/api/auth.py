"""Logging in from the chat page: password or API key, one-time links, sessions."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import RedirectResponse, Response

from daehwa.api.deps import (
    SESSION_COOKIE,
    current_user,
    json_response,
    optional_str,
    parts,
    read_json,
)
from daehwa.errors import AuthError, InvalidInput
from daehwa.messages import User

router = APIRouter()


def _with_session(request: Request, response: Response, token: str) -> Response:
    settings = parts(request).settings
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(settings.auth.session_days * 86400),
        httponly=True,
        samesite="strict",
        secure=settings.auth.cookie_secure,
        path="/",
    )
    return response


@router.post("/v1/auth/login")
async def login(request: Request) -> Response:
    """``{name, password}`` or ``{key}`` → a session cookie (HttpOnly, SameSite=Strict)."""
    accounts = parts(request).accounts
    body = await read_json(request)
    key = optional_str(body, "key", max_len=512)
    if key:
        user = await accounts.user_for(key, kind="api")
    else:
        name = optional_str(body, "name")
        password = optional_str(body, "password", max_len=1024)
        if not name or not password:
            raise InvalidInput("give either key, or name and password", field="name")
        user = await accounts.login_with_password(name, password)
    token = await accounts.start_session(user)
    return _with_session(request, json_response({"user": user.to_dict()}), token)


@router.get("/login")
async def login_link(request: Request) -> Response:
    """A one-time login link (printed by ``daehwa serve``): sets the session, opens the page."""
    token = request.query_params.get("token", "")
    if not token:
        raise AuthError("this login link has no token")
    accounts = parts(request).accounts
    user = await accounts.redeem_login_link(token)
    session = await accounts.start_session(user)
    return _with_session(request, RedirectResponse("/", status_code=303), session)


@router.post("/v1/auth/logout", status_code=204)
async def logout(request: Request) -> Response:
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        await parts(request).accounts.revoke(cookie, kind="session")
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/v1/auth/me")
async def me(user: User = Depends(current_user)) -> Response:  # noqa: B008
    return json_response({"user": user.to_dict()})
