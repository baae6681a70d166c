"""A fake CLOVA Studio: native chat-completions v1 and v3, and two helper APIs.

Routes (an optional ``/testapp`` or ``/serviceapp`` prefix, required with the
legacy key headers) — PROVIDERS.md §3:

- ``POST /v1/chat-completions/{model}``: ``id``/``event``/``data`` triples —
  ``token``s, then a ``result`` that repeats the **whole** answer; ``variant=signal``
  adds the ``signal`` event after it;
- ``POST /v3/chat-completions/{model}``: ``id:``/``event:``/``data:`` with no space,
  ``usage: null`` tokens, ``thinkingContent`` when ``thinking.effort`` is set (or
  ``thinking=1``), tool calls as an ``{id, function{name}}`` piece then
  ``partialJson`` pieces, and a ``result`` with object ``arguments``
  (``variant=bare_result`` leaves the calls out of it);
- without ``Accept: text/event-stream`` (or kind ``json``): one JSON answer;
- ``POST /v1/api-tools/chat-tokenize/{model}``, ``/v3/…``, and
  ``POST /v1/api-tools/sliding/chat-messages/{model}`` (limit 4096).

Kinds: text, length, tools, weather, json, error_event (tokens, then ``event: error``),
truncate, cut, stall, and the refusals rate_limit (42901), overloaded (42902),
context (40003), bad_request (40001), model (40080), unauthorized (40100),
server_error (50000), timeout (50400).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import re
import uuid
from typing import Any

import orjson

from tests.fakes.http_server import DropConnection, RecordedRequest, Reply
from tests.fakes.scenario import Scenario, ScriptedUpstream, pieces
from tests.fakes.weather_service import weather_plan

STREAM_KINDS = (
    "text",
    "length",
    "tools",
    "weather",
    "json",
    "error_event",
    "truncate",
    "cut",
    "stall",
)
REFUSALS: dict[str, tuple[int, str, str]] = {
    "rate_limit": (429, "42901", "Too many requests - rate exceeded"),
    "overloaded": (429, "42902", "Too many requests - server overloaded"),
    "context": (400, "40003", "Text too long"),
    "bad_request": (400, "40001", "Invalid parameter: temperature"),
    "model": (400, "40080", "Model not found"),
    "unauthorized": (401, "40100", "Unauthorized"),
    "server_error": (500, "50000", "Internal server error"),
    "timeout": (504, "50400", "Gateway timeout"),
}
WINDOW_LIMIT = 4096
_ROUTE = re.compile(
    r"^(?P<app>/testapp|/serviceapp)?/(?P<version>v1|v3)/"
    r"(?P<api>chat-completions|api-tools/chat-tokenize|api-tools/sliding/chat-messages)/"
    r"(?P<model>[^/?]+)$"
)
_SEED = itertools.count(3284419119)


def fake_count(text: str) -> int:
    """The fake tokenizer: one token per two characters (at least one)."""
    return max(1, (len(text) + 1) // 2)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content or [] if isinstance(p, dict))


class FakeClovaStudio(ScriptedUpstream):
    """CLOVA Studio's native API; with ``api_key`` set it checks both key styles."""

    KINDS = STREAM_KINDS + tuple(REFUSALS)

    def __init__(
        self,
        *,
        default: Scenario | str = "text",
        api_key: str | None = None,
        apigw_api_key: str | None = None,
        port: int = 0,
    ) -> None:
        super().__init__(default=default, port=port)
        self.api_key = api_key
        self.apigw_api_key = apigw_api_key

    async def handle(self, request: RecordedRequest, reply: Reply) -> None:
        match = _ROUTE.match(request.path.split("?")[0])
        if request.method != "POST" or match is None:
            await self.refuse(reply, 404, "40400", f"no route {request.path}")
            return
        if not self._authorised(request, legacy_path=match["app"] is not None):
            await self.refuse(reply, 401, *REFUSALS["unauthorized"][1:])
            return
        body = request.json if isinstance(request.json, dict) else {}
        api, version = match["api"], match["version"]
        if api == "api-tools/chat-tokenize":
            counted = [
                {**m, "count": fake_count(_text(m.get("content")))}
                for m in body.get("messages", [])
            ]
            await self.ok(reply, {"messages": counted})
            return
        if api == "api-tools/sliding/chat-messages":
            await self.ok(reply, {"messages": _slide(body)})
            return
        scenario = self.scenario_for(request)
        if scenario.kind in REFUSALS:
            status, code, message = REFUSALS[scenario.kind]
            headers = (
                {"retry-after": scenario.retry_after}
                if status == 429 and (scenario.retry_after is not None)
                else {}
            )
            await self.refuse(reply, status, code, message, headers)
            return
        stream = _Stream(self, scenario, version, body, reply)
        if "text/event-stream" not in request.headers.get("accept", "") or scenario.kind == "json":
            await self.ok(reply, stream.whole_result())
            return
        await stream.run()

    def _authorised(self, request: RecordedRequest, *, legacy_path: bool) -> bool:
        if self.api_key is None:
            return True
        headers = request.headers
        if headers.get("authorization") == f"Bearer {self.api_key}":
            return True
        return (
            legacy_path
            and headers.get("x-ncp-clovastudio-api-key") == self.api_key
            and headers.get("x-ncp-apigw-api-key") == self.apigw_api_key
        )

    async def ok(self, reply: Reply, result: dict[str, Any]) -> None:
        await reply.json(200, {"status": {"code": "20000", "message": "OK"}, "result": result})

    async def refuse(
        self,
        reply: Reply,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        await reply.json(status, {"status": {"code": code, "message": message}}, headers)


def _slide(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Drop the oldest turns until tokens + maxTokens ≤ 4096 (system messages stay)."""
    messages = list(body.get("messages") or [])
    budget = WINDOW_LIMIT - int(body.get("maxTokens") or 0)

    def total() -> int:
        return sum(fake_count(_text(m.get("content"))) for m in messages)

    while total() > budget:
        first = next((i for i, m in enumerate(messages) if m.get("role") != "system"), None)
        if first is None:
            break
        end = first + 1
        while end < len(messages) and messages[end].get("role") not in ("user", "system"):
            end += 1
        del messages[first:end]
    return messages


class _Stream:
    """One reply in the v1 or v3 event shapes."""

    def __init__(
        self,
        server: FakeClovaStudio,
        scenario: Scenario,
        version: str,
        body: dict[str, Any],
        reply: Reply,
    ) -> None:
        self.server = server
        self.s = scenario
        self.v3 = version == "v3"
        self.body = body
        self.reply = reply
        self.sep = b":" if self.v3 else b": "  # v3 writes "event:token", no space
        self.nl = b"\r\n" if scenario.crlf else b"\n"
        self.seed = next(_SEED)
        messages = body.get("messages") or []
        self.input_length = sum(fake_count(_text(m.get("content"))) for m in messages)
        self.output_length = 0
        effort = (body.get("thinking") or {}).get("effort")
        self.thinking = self.v3 and (scenario.thinking or effort not in (None, "none"))
        self.text, self.calls = self._plan()

    def _plan(self) -> tuple[list[str], list[tuple[str, str, dict[str, Any]]]]:
        s = self.s
        tools = [t["function"]["name"] for t in self.body.get("tools") or []] or ["get_weather"]
        if self.v3 and s.kind == "tools":
            return [], [
                ("call_seoul", tools[0], {"city": "서울"}),
                ("call_busan", tools[-1], {"city": "부산"}),
            ]
        if self.v3 and s.kind == "weather":
            messages = self.body.get("messages") or []
            texts = [_text(m.get("content")) for m in messages if m.get("role") == "user"]
            last = messages[-1] if messages else {}
            result = _text(last.get("content")) if last.get("role") == "tool" else None
            move, value = weather_plan(texts, result)
            if move == "call":
                return [], [(f"call_{uuid.uuid4().hex[:8]}", tools[0], {"city": value})]
            return pieces(value, None), []
        return pieces(s.text, s.tokens), []

    def finish(self) -> str:
        if self.calls:
            return "tool_calls"
        if self.s.kind == "length":
            return "length"
        return "stop" if self.v3 else "end_token"

    def result(self, with_calls: bool = True) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.text)}
        if not self.v3:
            return {
                "message": message,
                "inputLength": self.input_length,
                "outputLength": self.output_length,
                "stopReason": "length" if self.s.kind == "length" else "end_token",
            }
        if self.thinking:
            message["thinkingContent"] = "사용자가 인사했다."
        if self.calls and with_calls:
            message["toolCalls"] = [
                {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}
                for cid, name, args in self.calls
            ]
        thinking_tokens = 2 if self.thinking else 0
        return {
            "message": message,
            "finishReason": self.finish(),
            "created": 1744710905,
            "seed": self.seed,
            "usage": {
                "promptTokens": self.input_length,
                "completionTokens": self.output_length,
                "totalTokens": self.input_length + self.output_length,
                "completionTokensDetails": {"thinkingTokens": thinking_tokens},
            },
        }

    def whole_result(self) -> dict[str, Any]:
        self.output_length = len(self.text) + sum(1 for _ in self.calls)
        return self.result()

    async def event(self, name: str, payload: dict[str, Any]) -> None:
        sep, nl = self.sep, self.nl
        frame = b"id%s%s%sevent%s%s%sdata%s%s%s%s" % (
            sep,
            str(uuid.uuid4()).encode(),
            nl,
            sep,
            name.encode(),
            nl,
            sep,
            orjson.dumps(payload),
            nl,
            nl,
        )
        if self.s.keepalive:
            frame = b": keep-alive" + nl + nl + frame
        split_at = None
        if self.s.split:
            at = frame.find("안".encode())
            split_at = at + 1 if at >= 0 else len(frame) // 2
        await self.reply.write(frame, split_at=split_at, pause=0.002 if split_at else 0.0)

    def token(self, content: str = "", **message: Any) -> dict[str, Any]:
        msg = {"role": "assistant", "content": content, **message}
        if not self.v3:
            return {
                "message": msg,
                "inputLength": self.input_length,
                "outputLength": self.output_length,
            }
        return {
            "message": msg,
            "finishReason": None,
            "created": 1744710905,
            "seed": self.seed,
            "usage": None,
        }

    async def run(self) -> None:
        s = self.s
        await self.reply.start(200, {"cache-control": "no-cache"})
        if s.ttft:
            await self.server.hold(self.reply, s.ttft)
        if self.thinking:
            for piece in ("사용자가 ", "인사했다."):
                self.output_length += 1
                await self.event("token", self.token(thinkingContent=piece))
        text = self.text
        if s.kind in ("error_event", "truncate", "cut", "stall"):
            text = text[: max(1, len(text) // 2)]
        for i, piece in enumerate(text):
            if i and s.delay:
                await asyncio.sleep(s.delay)
            self.output_length += 1
            await self.event("token", self.token(piece))
        for cid, name, args in self.calls:
            head = {"id": cid, "type": "function", "function": {"name": name}}
            await self.event("token", self.token(toolCalls=[head]))
            raw = orjson.dumps(args).decode()
            third = len(raw) // 3
            for part in (raw[:third], raw[third : 2 * third], raw[2 * third :]):
                self.output_length += 1
                await self.event(
                    "token", self.token(toolCalls=[{"function": {"partialJson": part}}])
                )
        if s.kind == "error_event":
            await self.event("error", {"status": {"code": "50000", "message": "Internal error"}})
            return await self.reply.end()
        if s.kind == "truncate":
            raise DropConnection
        if s.kind == "cut":
            return await self.reply.end()
        if s.kind == "stall":
            await self.server.hold(self.reply, s.stall)
            return None
        await self.event("result", self.result(with_calls=s.variant != "bare_result"))
        if s.variant == "signal":
            await self.event("signal", {"data": "[DONE]"})
        await self.reply.end()
        return None


async def _main() -> None:
    parser = argparse.ArgumentParser(description="fake CLOVA Studio")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--scenario", default="text")
    args = parser.parse_args()
    async with FakeClovaStudio(default=args.scenario, port=args.port) as server:
        print(server.url, flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(_main())
