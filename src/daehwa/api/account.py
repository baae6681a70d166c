"""The caller's own things across conversations: personas, search, deleting all their data."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from daehwa.api.deps import SESSION_COOKIE, current_user, json_response, parts, query_int
from daehwa.chat.personas import template_variables
from daehwa.messages import User

router = APIRouter(prefix="/v1")
Caller = Annotated[User, Depends(current_user)]


@router.get("/personas")
async def list_personas(request: Request, user: Caller) -> Response:
    """The configured personas and the variables each one needs."""
    personas = parts(request).settings.personas
    return json_response(
        {
            "items": [
                {
                    "name": name,
                    "title": persona.title or name,
                    "variables": template_variables(persona),
                    "first_message": persona.first_message,
                    "model": persona.model,
                }
                for name, persona in personas.items()
            ]
        }
    )


@router.get("/search")
async def search_messages(request: Request, user: Caller) -> Response:
    """``?q=`` — the caller's own messages containing the text (Korean substrings work)."""
    limit = query_int(request, "limit", default=20, low=1, high=100) or 20
    found = await parts(request).service.search(
        user, request.query_params.get("q", ""), limit=limit
    )
    return json_response({"items": [m.to_dict() for m in found]})


@router.delete("/users/me", status_code=204)
async def delete_my_data(request: Request, user: Caller) -> Response:
    """Delete the caller and everything of theirs: conversations, messages, keys, sessions."""
    await parts(request).service.store.delete_user(user.id)
    parts(request).accounts.forget(user.id)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
