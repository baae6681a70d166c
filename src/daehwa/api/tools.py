"""Helper tools over HTTP: ``POST /v1/tools/sliding-window`` (CLOVA Studio semantics)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from daehwa.api.deps import current_user, json_response, optional_str, parts, read_json
from daehwa.api.wire import parse_messages
from daehwa.context.tokens import counter_for
from daehwa.context.window import sliding_window
from daehwa.errors import InvalidInput
from daehwa.messages import User

router = APIRouter(prefix="/v1/tools")
Caller = Annotated[User, Depends(current_user)]


@router.post("/sliding-window")
async def window(request: Request, user: Caller) -> Response:
    """``{messages, max_tokens, model?}`` → the messages that fit, what was dropped, the tokens.

    Drops the oldest whole turns until input + ``max_tokens`` <= the model's limit;
    system messages stay. 400 ``context_overflow`` when even the newest turn cannot fit.
    """
    settings = parts(request).settings
    body = await read_json(request)
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise InvalidInput("max_tokens must be a positive integer", field="max_tokens")
    name = optional_str(body, "model") or settings.chat.default_model
    model = settings.models.get(name)
    if model is None:
        raise InvalidInput(f"unknown model {name!r}", field="model")
    messages = parse_messages(body.get("messages"))
    result = await asyncio.to_thread(
        sliding_window,
        messages,
        max_new_tokens=max_tokens,
        limit=model.context_window,
        counter=counter_for(model),
    )
    return json_response(result.to_dict())
