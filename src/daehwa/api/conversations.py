"""Conversations, their history, and sending messages (REST + SSE)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response
from starlette.types import Scope

from daehwa.api.deps import (
    current_user,
    json_response,
    optional_str,
    parts,
    query_int,
    query_time,
    read_json,
    route_path,
)
from daehwa.api.sse import EventStreamResponse
from daehwa.chat.export import to_markdown
from daehwa.errors import ContentBlocked, InvalidInput, NotFound
from daehwa.events import Envelope, Error
from daehwa.messages import User

PREFIX = "/v1/conversations"
router = APIRouter(prefix=PREFIX)
PREVIEW_CHARS = 120
Caller = Annotated[User, Depends(current_user)]


def _page(items: list[Any], next_cursor: str | None) -> dict[str, Any]:
    return {"items": [item.to_dict() for item in items], "next": next_cursor}


@router.post("")
async def create_conversation(request: Request, user: Caller) -> Response:
    body = await read_json(request, allow_empty=True)
    variables = body.get("variables")
    if variables is not None and (
        not isinstance(variables, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in variables.items())
    ):
        raise InvalidInput("variables must be an object of strings", field="variables")
    conversation = await parts(request).service.create_conversation(
        user,
        title=optional_str(body, "title") or "",
        persona=optional_str(body, "persona"),
        variables=variables,
        model=optional_str(body, "model"),
    )
    return json_response(conversation.to_dict(), 201)


@router.get("")
async def list_conversations(request: Request, user: Caller) -> Response:
    limit = query_int(request, "limit", default=20, low=1, high=200)
    page, previews = await parts(request).service.list_conversations(
        user, limit=limit or 20, before=request.query_params.get("before") or None
    )
    items = []
    for conversation in page.items:
        item = conversation.to_dict()
        last = previews.get(conversation.id)
        item["preview"] = (
            {
                "role": last.role.value,
                "content": last.content[:PREVIEW_CHARS],
                "status": last.status.value,
            }
            if last is not None
            else None
        )
        items.append(item)
    return json_response({"items": items, "next": page.next})


@router.get("/{conversation_id}")
async def get_conversation(conversation_id: str, request: Request, user: Caller) -> Response:
    conversation = await parts(request).service.conversation(user, conversation_id)
    return json_response(conversation.to_dict())


@router.patch("/{conversation_id}")
async def rename_conversation(conversation_id: str, request: Request, user: Caller) -> Response:
    service = parts(request).service
    await service.conversation(user, conversation_id)
    body = await read_json(request)
    title = optional_str(body, "title")
    if title is None:
        raise InvalidInput("title is required", field="title")
    conversation = await service.rename(user, conversation_id, title)
    return json_response(conversation.to_dict())


@router.delete("/{conversation_id}", status_code=204)
async def delete_conversation(conversation_id: str, request: Request, user: Caller) -> Response:
    await parts(request).service.delete(user, conversation_id)
    return Response(status_code=204)


@router.post("/{conversation_id}/clear", status_code=204)
async def clear_conversation(conversation_id: str, request: Request, user: Caller) -> Response:
    await parts(request).service.clear(user, conversation_id)
    return Response(status_code=204)


@router.get("/{conversation_id}/messages")
async def list_messages(conversation_id: str, request: Request, user: Caller) -> Response:
    limit = query_int(request, "limit", default=50, low=1, high=500)
    before = query_int(request, "before", default=None, low=1, high=2**62)
    since = query_time(request, "since")
    page = await parts(request).service.messages(
        user, conversation_id, limit=limit or 50, before=before, since=since
    )
    return json_response(_page(page.items, page.next))


def turn_target(scope: Scope) -> str | None:
    """The conversation of a ``POST /v1/conversations/{id}/messages``; None for any other request.

    The application serves these requests ahead of its middleware and routing
    (``App``); this matches the same paths as the route below.
    """
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    path = route_path(scope)
    head, tail = PREFIX + "/", "/messages"
    if len(path) <= len(head) + len(tail) or not path.startswith(head) or not path.endswith(tail):
        return None
    conversation_id = path[len(head) : -len(tail)]
    return None if "/" in conversation_id else conversation_id


def wants_event_stream(request: Request) -> bool:
    return "text/event-stream" in request.headers.get("accept", "")


@router.post("/{conversation_id}/messages")
async def send_message(conversation_id: str, request: Request, user: Caller) -> Response:
    """One turn, as JSON or as an SSE stream.

    ``App`` serves it straight from the server (see :func:`turn_target`); the
    route is here for the OpenAPI schema and for apps that mount this router.
    """
    service = parts(request).service
    body = await read_json(request)
    if "content" not in body:
        raise InvalidInput("content is required", field="content")
    request_id = optional_str(body, "request_id")
    try:
        # The service checks the owner: the conversation is read once per turn.
        # Beyond capacity it raises RepliesBusy: 503 with Retry-After, nothing stored.
        turn = await service.send(user, conversation_id, body["content"], request_id=request_id)
    except ContentBlocked as exc:
        if not wants_event_stream(request):
            raise
        # A streaming client gets the refusal as the stream's one (terminal) event.
        return EventStreamResponse(_single(Error(exc.code, exc.message)))
    if wants_event_stream(request):
        return EventStreamResponse(service.replay_batches(turn.reply_id, after=0))
    await service.runs.wait(turn.reply_id)
    reply = await service.store.get_message(turn.reply_id)
    return json_response(
        {
            "user_message": turn.user_message.to_dict(),
            "assistant_message": reply.to_dict() if reply else None,
        }
    )


async def _single(event: Error) -> AsyncIterator[list[Envelope]]:
    yield [Envelope.of(1, event)]


@router.get("/{conversation_id}/export")
async def export_conversation(conversation_id: str, request: Request, user: Caller) -> Response:
    """The whole conversation as JSON (default) or Markdown (``?format=markdown``)."""
    service = parts(request).service
    conversation = await service.conversation(user, conversation_id)
    messages = await service.all_messages(user, conversation_id)
    kind = request.query_params.get("format", "json")
    if kind == "markdown":
        return Response(
            to_markdown(conversation, messages),
            media_type="text/markdown; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="{conversation_id}.md"'},
        )
    if kind != "json":
        raise InvalidInput("format must be json or markdown", field="format")
    return json_response(
        {"conversation": conversation.to_dict(), "messages": [m.to_dict() for m in messages]}
    )


@router.get("/{conversation_id}/messages/{message_id}/events")
async def resume_events(
    conversation_id: str, message_id: str, request: Request, user: Caller
) -> Response:
    service = parts(request).service
    await service.message(user, conversation_id, message_id)
    after = query_int(request, "after", default=None, low=0, high=2**31)
    if after is None:
        header = request.headers.get("last-event-id", "").strip()
        if header:
            try:
                after = int(header)
            except ValueError:
                raise InvalidInput(
                    "Last-Event-ID must be an integer", field="Last-Event-ID"
                ) from None
    return EventStreamResponse(service.replay_batches(message_id, after=after or 0))


@router.post("/{conversation_id}/messages/{message_id}/stop")
async def stop_reply(
    conversation_id: str, message_id: str, request: Request, user: Caller
) -> Response:
    message = await parts(request).service.stop(user, conversation_id, message_id)
    if message.role.value != "assistant":
        raise NotFound(f"reply {message_id} not found")
    return json_response(message.to_dict())


@router.get("/{conversation_id}/context")
async def next_context(conversation_id: str, request: Request, user: Caller) -> Response:
    built = await parts(request).service.next_context(user, conversation_id)
    return json_response(
        {
            "messages": [
                {"role": m.role.value, "content": m.content, "id": m.id or None}
                for m in built.messages
            ],
            "tokens": {
                "input": built.input_tokens,
                "max_new": built.max_new_tokens,
                "limit": built.limit,
            },
            "steps": built.steps,
        }
    )
