"""A fake Anthropic Messages API (``POST /v1/messages``), streaming as PROVIDERS.md §4 says.

Event order: ``message_start`` → blocks (``content_block_start`` / ``_delta`` /
``_stop``; a tool's first ``partial_json`` is ``""``) → ``message_delta`` with
the cumulative usage → ``message_stop``; ``ping`` after ``message_start`` and,
with ``keepalive=1``, before every event. :class:`AnthropicScript` plays a
scenario through an ``emit`` callback, so the Bedrock fake reuses it with
event-stream frames instead of SSE.

Kinds: text, length, tools (a text block and two tool_use blocks), weather
(see :func:`tests.fakes.weather_service.weather_plan`), error_after_200
(``overloaded_error`` event), truncate, cut, stall, and the refusals
rate_limit (429), overloaded (529), bad_request, context (400), unauthorized
(401), forbidden (403), not_found (404), too_large (413), server_error (500).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from tests.fakes.http_server import DropConnection, RecordedRequest, Reply
from tests.fakes.scenario import Scenario, ScriptedUpstream, pieces
from tests.fakes.weather_service import weather_plan

Emit = Callable[[dict[str, Any]], Awaitable[None]]
STREAM_KINDS = ("text", "length", "tools", "weather", "error_after_200", "truncate", "cut", "stall")
REFUSALS: dict[str, tuple[int, str, str]] = {
    "rate_limit": (429, "rate_limit_error", "Number of request tokens has exceeded your limit."),
    "overloaded": (529, "overloaded_error", "Overloaded"),
    "bad_request": (400, "invalid_request_error", "temperature: range: 0..1"),
    "context": (400, "invalid_request_error", "prompt is too long: 215000 tokens > 200000 maximum"),
    "unauthorized": (401, "authentication_error", "invalid x-api-key"),
    "forbidden": (403, "permission_error", "Your API key does not have permission."),
    "not_found": (404, "not_found_error", "model: claude-nonexistent"),
    "too_large": (413, "request_too_large", "Request exceeds the maximum allowed size."),
    "server_error": (500, "api_error", "Internal server error"),
}
_IDS = itertools.count(1)


def user_texts(messages: list[dict[str, Any]]) -> tuple[list[str], str | None]:
    """The user's texts, and the last message's tool result (if it is one)."""
    texts: list[str] = []
    for message in messages:
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
            continue
        texts += [b.get("text", "") for b in content or [] if b.get("type") == "text"]
    result = None
    last = messages[-1] if messages else {}
    if last.get("role") == "user" and isinstance(last.get("content"), list):
        results = [b for b in last["content"] if b.get("type") == "tool_result"]
        if results:
            content = results[-1].get("content")
            result = content if isinstance(content, str) else orjson.dumps(content).decode()
    return texts, result


class AnthropicScript:
    """Plays one streamed reply as Anthropic event dicts through ``emit``."""

    def __init__(
        self,
        server: ScriptedUpstream,
        scenario: Scenario,
        body: dict[str, Any],
        reply: Reply,
        emit: Emit,
        *,
        model: str,
        on_stop: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.server = server
        self.s = scenario
        self.body = body
        self.reply = reply
        self.emit = emit
        self.model = model
        self.on_stop = on_stop
        self.sent = 0
        self.index = 0
        messages = body.get("messages") or []
        self.input_tokens = len(orjson.dumps(messages)) // 4 + len(str(body.get("system", ""))) // 4

    async def run(self) -> None:
        s = self.s
        start = {
            "id": f"msg_{next(_IDS):06d}",
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": 1},
        }
        await self.emit({"type": "message_start", "message": start})
        await self.emit({"type": "ping"})
        if s.thinking:
            await self._thinking()
        stop = "end_turn"
        if s.kind == "tools":
            await self._text_block(["확인해 ", "볼게요."])
            tools = [t["name"] for t in self.body.get("tools") or []] or ["get_weather"]
            await self._tool_block(tools[0], '{"city": "서울"}')
            await self._tool_block(tools[-1], '{"city": "부산"}')
            stop = "tool_use"
        elif s.kind == "weather":
            texts, result = user_texts(self.body.get("messages") or [])
            move, value = weather_plan(texts, result)
            if move == "call":
                tools = [t["name"] for t in self.body.get("tools") or []] or ["get_weather"]
                await self._tool_block(tools[0], orjson.dumps({"city": value}).decode())
                stop = "tool_use"
            else:
                await self._text_block(pieces(value, None))
        else:
            parts = pieces(s.text, s.tokens)
            if s.kind in ("error_after_200", "truncate", "cut", "stall"):
                parts = parts[: max(1, len(parts) // 2)]
            await self._text_block(parts, close=s.kind not in ("truncate", "cut", "stall"))
            if s.kind == "error_after_200":
                error = {"type": "overloaded_error", "message": "Overloaded"}
                await self.emit({"type": "error", "error": error})
                return
            if s.kind == "truncate":
                raise DropConnection
            if s.kind == "cut":
                return
            if s.kind == "stall":
                await self.server.hold(self.reply, s.stall)
                return
            if s.kind == "length":
                stop = "max_tokens"
        delta = {"stop_reason": stop, "stop_sequence": None}
        await self.emit(
            {"type": "message_delta", "delta": delta, "usage": {"output_tokens": self.sent}}
        )
        final: dict[str, Any] = {"type": "message_stop"}
        if self.on_stop is not None:
            self.on_stop(final)
        await self.emit(final)

    async def _thinking(self) -> None:
        index = self._next_index()
        block = {"type": "thinking", "thinking": ""}
        await self.emit({"type": "content_block_start", "index": index, "content_block": block})
        for piece in ("사용자가 ", "인사했다."):
            self.sent += 1
            delta = {"type": "thinking_delta", "thinking": piece}
            await self.emit({"type": "content_block_delta", "index": index, "delta": delta})
        delta = {"type": "signature_delta", "signature": "EqQBCgIYAhIM"}
        await self.emit({"type": "content_block_delta", "index": index, "delta": delta})
        await self.emit({"type": "content_block_stop", "index": index})

    async def _text_block(self, parts: list[str], *, close: bool = True) -> None:
        index = self._next_index()
        block = {"type": "text", "text": ""}
        await self.emit({"type": "content_block_start", "index": index, "content_block": block})
        for i, piece in enumerate(parts):
            if i and self.s.delay:
                await asyncio.sleep(self.s.delay)
            self.sent += 1
            delta = {"type": "text_delta", "text": piece}
            await self.emit({"type": "content_block_delta", "index": index, "delta": delta})
        if close:
            await self.emit({"type": "content_block_stop", "index": index})

    async def _tool_block(self, name: str, arguments: str) -> None:
        index = self._next_index()
        block = {"type": "tool_use", "id": f"toolu_{next(_IDS):06d}", "name": name, "input": {}}
        await self.emit({"type": "content_block_start", "index": index, "content_block": block})
        third = len(arguments) // 3
        for piece in ("", arguments[:third], arguments[third : 2 * third], arguments[2 * third :]):
            self.sent += 1
            delta = {"type": "input_json_delta", "partial_json": piece}
            await self.emit({"type": "content_block_delta", "index": index, "delta": delta})
        await self.emit({"type": "content_block_stop", "index": index})

    def _next_index(self) -> int:
        index, self.index = self.index, self.index + 1
        return index


class FakeAnthropicUpstream(ScriptedUpstream):
    """``POST /v1/messages`` with ``x-api-key`` and ``anthropic-version``."""

    KINDS = STREAM_KINDS + tuple(REFUSALS)

    def __init__(
        self, *, default: Scenario | str = "text", api_key: str | None = None, port: int = 0
    ) -> None:
        super().__init__(default=default, port=port)
        self.api_key = api_key

    async def handle(self, request: RecordedRequest, reply: Reply) -> None:
        if request.method != "POST" or request.path.split("?")[0] != "/v1/messages":
            await self.refuse(reply, 404, "not_found_error", f"no route {request.path}")
            return
        scenario = self.scenario_for(request)
        if self.api_key is not None and request.headers.get("x-api-key") != self.api_key:
            scenario = self.scenario("unauthorized")
        if not request.headers.get("anthropic-version"):
            await self.refuse(reply, 400, "invalid_request_error", "anthropic-version: required")
            return
        if scenario.kind in REFUSALS:
            status, kind, message = REFUSALS[scenario.kind]
            headers = {}
            if status in (429, 529) and scenario.retry_after is not None:
                headers["retry-after"] = scenario.retry_after
            await self.refuse(reply, status, kind, message, headers)
            return
        body = request.json if isinstance(request.json, dict) else {}
        if not body.get("stream") or "max_tokens" not in body or "model" not in body:
            await self.refuse(reply, 400, "invalid_request_error", "stream, model, max_tokens")
            return
        await reply.start(200, {"request-id": f"req_{next(_IDS):06d}", "cache-control": "no-cache"})
        if scenario.ttft:
            await self.hold(reply, scenario.ttft)
        nl = b"\r\n" if scenario.crlf else b"\n"

        async def emit(event: dict[str, Any]) -> None:
            frame = b"event: %s%sdata: %s%s%s" % (
                event["type"].encode(),
                nl,
                orjson.dumps(event),
                nl,
                nl,
            )
            if scenario.keepalive and event["type"] != "ping":
                frame = b'event: ping%sdata: {"type": "ping"}%s%s' % (nl, nl, nl) + frame
            split_at = None
            if scenario.split:
                at = frame.find("안".encode())
                split_at = at + 1 if at >= 0 else len(frame) // 2
            await reply.write(frame, split_at=split_at, pause=0.002 if split_at else 0.0)

        script = AnthropicScript(self, scenario, body, reply, emit, model=str(body["model"]))
        await script.run()
        await reply.end()

    async def refuse(
        self,
        reply: Reply,
        status: int,
        kind: str,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        body = {
            "type": "error",
            "error": {"type": kind, "message": message},
            "request_id": f"req_{next(_IDS):06d}",
        }
        await reply.json(status, body, headers)


async def _main() -> None:
    parser = argparse.ArgumentParser(description="fake Anthropic Messages API")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--scenario", default="text")
    args = parser.parse_args()
    async with FakeAnthropicUpstream(default=args.scenario, port=args.port) as server:
        print(server.url, flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(_main())
