"""The OpenAI chat-completions wire format, so the official ``openai`` client works unchanged.

``POST /v1/chat/completions`` runs through the same pipeline as a turn (content
checks, resilience, fallback reply). Without ``metadata.conversation_id`` it is
stateless like OpenAI's API: the given messages are the whole input and nothing
is stored. With it, the last user message is sent as a turn of that stored
conversation (history from the store, everything persisted).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from daehwa.api.deps import current_user, json_response, parts, read_json
from daehwa.api.sse import EventStreamResponse
from daehwa.api.wire import parse_messages
from daehwa.errors import InvalidInput
from daehwa.events import Envelope
from daehwa.messages import Role, User

router = APIRouter(prefix="/v1")
Caller = Annotated[User, Depends(current_user)]
_ROLES = {
    "system": Role.SYSTEM,
    "developer": Role.SYSTEM,
    "user": Role.USER,
    "assistant": Role.ASSISTANT,
}


@router.get("/models")
async def list_models(request: Request, user: Caller) -> Response:
    settings = parts(request).settings
    return json_response(
        {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": 0, "owned_by": f"daehwa:{m.provider}"}
                for name, m in settings.models.items()
            ],
        }
    )


class _Completion:
    """Turns a reply's events into chat.completion(.chunk) objects."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.id = "chatcmpl-"
        self.model = model
        self.created = int(time.time())
        self.include_usage = include_usage
        self.text: list[str] = []
        self.finish: str | None = None
        self.usage: dict[str, int] = {"prompt_tokens": 0, "completion_tokens": 0}
        self.error: dict[str, Any] | None = None

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        body = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return b"data: " + orjson.dumps(body) + b"\n\n"

    def absorb(self, envelope: Envelope) -> bytes | None:
        """Record an event; returns the SSE frame for it, if it has one."""
        data = envelope.data
        if envelope.type == "meta":
            self.id = f"chatcmpl-{data['message_id']}"
            return self._chunk({"role": "assistant", "content": ""})
        if envelope.type == "delta":
            self.text.append(data["text"])
            return self._chunk({"content": data["text"]})
        if envelope.type == "step" and data.get("name") == "reasoning":
            return self._chunk({"reasoning_content": data.get("detail", "")})
        if envelope.type == "done":
            self.finish = "length" if data.get("finish_reason") == "length" else "stop"
            self.usage = dict(data.get("usage") or self.usage)
            frame = self._chunk({}, self.finish)
            if self.include_usage:
                usage = {**self.usage, "total_tokens": sum(self.usage.values())}
                frame += (
                    b"data: "
                    + orjson.dumps(
                        {
                            "id": self.id,
                            "object": "chat.completion.chunk",
                            "created": self.created,
                            "model": self.model,
                            "choices": [],
                            "usage": usage,
                        }
                    )
                    + b"\n\n"
                )
            return frame
        if envelope.type == "error":
            self.error = {"message": data["message"], "type": "server_error", "code": data["code"]}
            return b"data: " + orjson.dumps({"error": self.error}) + b"\n\n"
        return None

    def whole(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(self.text)},
                    "finish_reason": self.finish or "stop",
                }
            ],
            "usage": {**self.usage, "total_tokens": sum(self.usage.values())},
        }


@router.post("/chat/completions")
async def chat_completions(request: Request, user: Caller) -> Response:
    service = parts(request).service
    body = await read_json(request)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidInput("model is required", field="model")
    messages = parse_messages(body.get("messages"))
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise InvalidInput("max_tokens must be a positive integer", field="max_tokens")
    metadata = body.get("metadata") or {}
    conversation_id = metadata.get("conversation_id") if isinstance(metadata, dict) else None
    if conversation_id is not None:
        if messages[-1].role is not Role.USER:
            raise InvalidInput("the last message must be the user's", field="messages")
        turn = await service.send(user, str(conversation_id), messages[-1].content)
        run_id = turn.reply_id
    else:
        run_id = await service.complete(user, messages, model_name=model, max_new_tokens=limit)
    options = body.get("stream_options") or {}
    completion = _Completion(
        model, bool(isinstance(options, dict) and options.get("include_usage"))
    )
    if body.get("stream"):
        return EventStreamResponse(
            service.replay_batches(run_id),
            encode=completion.absorb,
            closing=b"data: [DONE]\n\n",
        )
    async for envelope in service.replay(run_id):
        completion.absorb(envelope)
    if completion.error is not None:
        return json_response({"error": completion.error}, 502)
    return json_response(completion.whole())
