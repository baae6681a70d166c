"""A fake OpenAI-compatible upstream: OpenAI, Z.AI (GLM-4.5), Ollama and vLLM flavours.

It speaks the wire formats of PROVIDERS.md §1, §2, §5 over real HTTP on
127.0.0.1 and misbehaves on demand (§6). What one request gets is a
:class:`Scenario`, taken in this order from: the server's queue
(:meth:`FakeOpenAIUpstream.enqueue`), the ``x-fake-scenario`` request header,
a model name of the form ``scenario:<spec>``, then the server's default.

A spec string is a kind followed by ``key=value`` pairs, for example
``"text tokens=200 delay=0.02 ttft=0.5 flavor=zai crlf=1"``.

Run it alone (for a load benchmark or by hand)::

    python -m tests.fakes.openai_upstream --port 9000 --flavor zai --scenario "text tokens=50"
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import ssl as ssl_module
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from tests.fakes.http_server import (
    DropConnection,
    FakeHTTPServer,
    Framing,
    RecordedRequest,
    Reply,
)
from tests.fakes.openai_errors import error_reply

Flavor = Literal["openai", "zai", "ollama", "vllm"]
DEFAULT_TEXT = "안녕하세요! 무엇을 도와드릴까요? 오늘 서울은 맑습니다."
KINDS = (
    "text",  # role chunk, content, finish stop, usage, [DONE]
    "length",  # like text, finish "length"
    "tools",  # two parallel tool calls (incremental or whole, per flavour)
    "error_chunk",  # some content, then data: {"error": ...} (vLLM: then [DONE])
    "sensitive",  # Z.AI: content, then finish_reason "sensitive"
    "network_error",  # Z.AI: content, then finish_reason "network_error"
    "no_done",  # Ollama-like: finish then end of body without [DONE]
    "cut",  # content, then a clean end of body: no finish, no [DONE]
    "truncate",  # content, then the connection drops mid-body
    "stall",  # content, then silence for `stall` seconds, then the rest
    "rate_limit",  # 429 with Retry-After (Z.AI: code 1302)
    "quota",  # 429 insufficient_quota (Z.AI: code 1113)
    "context_length",  # 400 context_length_exceeded
    "bad_request",  # 400 (vLLM shape; legacy=1 for the flat one)
    "unauthorized",  # 401 (vLLM: flat {"error":"Unauthorized"})
    "not_found",  # 404 unknown model
    "server_error",  # 500
    "overloaded",  # 503
)


@dataclass
class Scenario:
    """What the fake does for one request."""

    kind: str = "text"
    flavor: Flavor | None = None  # None: the server's flavour
    tokens: int | None = None  # content pieces; None: DEFAULT_TEXT once
    delay: float = 0.0  # seconds between two content pieces
    ttft: float = 0.0  # seconds between the headers and the first event
    first_byte: float = 0.0  # seconds before the status line
    text: str = DEFAULT_TEXT
    reasoning: bool | None = None  # None: the flavour's default (see _wants_reasoning)
    reasoning_field: str | None = None  # override the delta field for reasoning
    crlf: bool = False  # CRLF line endings
    keepalive: bool = False  # a ": keep-alive" comment before every event
    split: bool = False  # cut every event in two writes, and 안 inside its bytes
    framing: Framing = "chunked"
    retry_after: str | None = "1"
    stall: float = 3600.0
    legacy: bool = False  # vLLM's old flat error object
    end_delay: float = 0.0  # seconds between the last event and the end of the body

    @classmethod
    def parse(cls, spec: str) -> Scenario:
        """``"kind key=value ..."`` → Scenario; unknown keys raise ValueError."""
        kind, *pairs = spec.split()
        if kind not in KINDS:
            raise ValueError(f"unknown scenario kind {kind!r}")
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {"kind": kind}
        for pair in pairs:
            key, _, raw = pair.partition("=")
            if key not in types:
                raise ValueError(f"unknown scenario key {key!r}")
            kind_of = str(types[key])
            if "bool" in kind_of:
                values[key] = raw.lower() in ("1", "true", "yes")
            elif "float" in kind_of:
                values[key] = float(raw)
            elif "int" in kind_of:
                values[key] = int(raw)
            else:
                values[key] = raw
        return cls(**values)


class FakeOpenAIUpstream(FakeHTTPServer):
    """``POST /v1/chat/completions`` (and ``GET /v1/models``) of one flavour."""

    def __init__(
        self,
        *,
        flavor: Flavor = "openai",
        default: Scenario | str = "text",
        api_key: str | None = None,
        port: int = 0,
        record: int = 1000,
        ssl: ssl_module.SSLContext | None = None,
    ) -> None:
        super().__init__(port=port, record=record, ssl=ssl)
        self.flavor: Flavor = flavor
        self.default = Scenario.parse(default) if isinstance(default, str) else default
        self.api_key = api_key
        self._queue: deque[Scenario] = deque()
        self._ids = itertools.count(1)

    @property
    def base_url(self) -> str:
        """The ``base_url`` a client is configured with (``…/v1``)."""
        return f"{self.url}/v1"

    def enqueue(self, *scenarios: Scenario | str) -> None:
        """Use these scenarios, in order, for the next requests."""
        for item in scenarios:
            self._queue.append(Scenario.parse(item) if isinstance(item, str) else item)

    def scenario_for(self, request: RecordedRequest) -> Scenario:
        if self._queue:
            return self._queue.popleft()
        if "x-fake-scenario" in request.headers:
            return Scenario.parse(request.headers["x-fake-scenario"])
        model = request.json.get("model", "") if isinstance(request.json, dict) else ""
        if isinstance(model, str) and model.startswith("scenario:"):
            return Scenario.parse(model.removeprefix("scenario:"))
        return self.default

    async def handle(self, request: RecordedRequest, reply: Reply) -> None:
        if request.method == "GET" and request.path.endswith("/models"):
            await reply.json(200, {"object": "list", "data": [{"id": "fake", "object": "model"}]})
            return
        if request.method != "POST" or not request.path.endswith("/chat/completions"):
            await reply.json(404, {"error": {"message": f"no route {request.path}"}})
            return
        scenario = self.scenario_for(request)
        flavor = scenario.flavor or self.flavor
        if scenario.first_byte:
            await asyncio.sleep(scenario.first_byte)
        if self.api_key is not None and request.headers.get("authorization") != (
            f"Bearer {self.api_key}"
        ):
            scenario = dataclasses.replace(scenario, kind="unauthorized")
        refusal = error_reply(scenario.kind, flavor, legacy=scenario.legacy)
        if refusal is not None:
            status, body, headers = refusal
            if status == 429 and scenario.retry_after is not None:
                headers["retry-after"] = scenario.retry_after
            await reply.json(status, body, headers)
            return
        body = request.json if isinstance(request.json, dict) else {}
        if not body.get("stream"):
            await reply.json(400, {"error": {"message": "this fake only streams"}})
            return
        stream = _Stream(self, scenario, flavor, body, reply, next(self._ids))
        await stream.run()


class _Stream:
    """One streamed reply: builds the flavour's chunks and writes them."""

    def __init__(
        self,
        server: FakeOpenAIUpstream,
        scenario: Scenario,
        flavor: Flavor,
        body: dict[str, Any],
        reply: Reply,
        number: int,
    ) -> None:
        self.s = scenario
        self.flavor = flavor
        self.body = body
        self.reply = reply
        self.id = f"chatcmpl-{number}"
        self.created = int(time.time())
        self.model = str(body.get("model", "fake"))
        options = body.get("stream_options") or {}
        # Z.AI ignores stream_options and always reports usage in the last chunk.
        self.include_usage = bool(options.get("include_usage")) and flavor != "zai"
        self.newline = b"\r\n" if scenario.crlf else b"\n"
        self.sent = 0
        self.prompt_tokens = sum(len(str(m.get("content") or "")) for m in body["messages"])

    # -- chunk shapes -----------------------------------------------------------
    def chunk(
        self, delta: dict[str, Any] | None, finish: str | None = None, usage: Any = ...
    ) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "delta": delta or {}}
        out: dict[str, Any] = {"id": self.id, "created": self.created, "model": self.model}
        if self.flavor == "zai":
            # No "object", and no "finish_reason": null until the end.
            if finish is not None:
                choice["finish_reason"] = finish
        else:
            out["object"] = "chat.completion.chunk"
            if self.flavor == "openai":
                out["system_fingerprint"] = "fp_fake"
                choice["logprobs"] = None
                out["obfuscation"] = "x1Yz"
            choice["finish_reason"] = finish
        out["choices"] = [choice] if delta is not None else []
        if usage is not ...:
            out["usage"] = usage
        elif self.include_usage and self.flavor == "openai":
            out["usage"] = None
        return out

    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.sent,
            "total_tokens": self.prompt_tokens + self.sent,
        }

    async def event(self, payload: dict[str, Any] | bytes) -> None:
        data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        nl = self.newline
        frame = b"data: " + data + nl + nl
        if self.s.keepalive:
            frame = b": keep-alive" + nl + nl + frame
        split_at: int | None = None
        if self.s.split:
            # Cut inside 안 (EC 95 88) when present, else in the middle.
            at = frame.find("안".encode())
            split_at = at + 1 if at >= 0 else len(frame) // 2
        await self.reply.write(frame, split_at=split_at, pause=0.002 if split_at else 0.0)

    # -- the reply --------------------------------------------------------------
    async def run(self) -> None:
        s, reply = self.s, self.reply
        await reply.start(200, {"cache-control": "no-cache"}, framing=s.framing)
        if s.ttft:
            await asyncio.sleep(s.ttft)
        if self.flavor != "zai":
            await self.event(self.chunk({"role": "assistant", "content": ""}))
        if self._wants_reasoning():
            field = s.reasoning_field or (
                "reasoning_content" if self.flavor == "zai" else "reasoning"
            )
            for piece in ("생각 중: ", "사용자가 인사했다."):
                self.sent += 1
                await self.event(self.chunk({field: piece}))
        if s.kind == "tools":
            await self._tool_calls()
            return await self._finish("tool_calls")
        pieces = _pieces(s.text, s.tokens)
        if s.kind in ("error_chunk", "sensitive", "network_error", "cut", "truncate", "stall"):
            pieces = pieces[: max(1, len(pieces) // 2)]
        if self.flavor == "zai" and pieces:
            pieces[0] = "\n" + pieces[0]  # GLM's stray newline before the answer
        for i, piece in enumerate(pieces):
            if i and s.delay:
                await asyncio.sleep(s.delay)
            self.sent += 1
            await self.event(self.chunk({"content": piece}))
        if s.kind == "stall":
            await asyncio.sleep(s.stall)
        elif s.kind == "error_chunk":
            await self.event(
                {
                    "error": {
                        "message": "upstream model crashed",
                        "type": "server_error",
                        "code": 500,
                    }
                }
            )
            if self.flavor == "vllm":
                await self.event(b"[DONE]")
            return await reply.end()
        elif s.kind == "truncate":
            raise DropConnection
        elif s.kind == "cut":
            return await reply.end()
        elif s.kind in ("sensitive", "network_error"):
            return await self._finish(s.kind)
        await self._finish("length" if s.kind == "length" else "stop")

    async def _finish(self, reason: str) -> None:
        if self.flavor == "zai":
            await self.event(self.chunk({"role": "assistant", "content": ""}, reason))
            # The finish repeats, with the usage, in a last chunk of its own.
            await self.event(self.chunk({"role": "assistant", "content": ""}, reason, self.usage()))
        else:
            await self.event(self.chunk({}, reason))
            if self.include_usage:
                await self.event(self.chunk(None, usage=self.usage()))
        if self.s.kind != "no_done":
            await self.event(b"[DONE]")
        if self.s.end_delay:
            await asyncio.sleep(self.s.end_delay)
        await self.reply.end()

    async def _tool_calls(self) -> None:
        tools = [t["function"]["name"] for t in self.body.get("tools") or []] or ["get_weather"]
        calls = [
            ("call_seoul", tools[0], '{"location": "서울", "unit": "celsius"}'),
            ("call_busan", tools[-1], '{"location": "부산", "unit": "celsius"}'),
        ]
        if self.flavor in ("zai", "ollama"):
            whole = [
                {"index": i, "id": cid, "type": "function", "function": {"name": n, "arguments": a}}
                for i, (cid, n, a) in enumerate(calls)
            ]
            if self.flavor == "zai":
                # One delta with the whole calls and the finish (then _finish repeats it).
                delta = {"role": "assistant", "tool_calls": whole}
                await self.event(self.chunk(delta, "tool_calls"))
            else:
                await self.event(self.chunk({"role": "assistant", "tool_calls": whole}))
            return
        for index, (cid, name, args) in enumerate(calls):
            head = {"index": index, "id": cid, "type": "function"}
            await self.event(
                self.chunk({"tool_calls": [{**head, "function": {"name": name, "arguments": ""}}]})
            )
            third = len(args) // 3
            for piece in (args[:third], args[third : 2 * third], args[2 * third :]):
                await self.event(
                    self.chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                )

    def _wants_reasoning(self) -> bool:
        if self.s.reasoning is not None:
            return self.s.reasoning
        if self.flavor == "zai":
            return (self.body.get("thinking") or {}).get("type") != "disabled"
        if self.flavor == "vllm":
            kwargs = self.body.get("chat_template_kwargs") or {}
            return bool(kwargs.get("enable_thinking", False))
        return False


def _pieces(text: str, count: int | None) -> list[str]:
    """Two-character pieces of ``text``; ``count`` of them, cycling, when given."""
    base = [text[i : i + 2] for i in range(0, len(text), 2)] or ["."]
    if count is None:
        return base
    return list(itertools.islice(itertools.cycle(base), count))


async def _serve_forever(args: argparse.Namespace) -> None:
    server = FakeOpenAIUpstream(flavor=args.flavor, default=args.scenario, port=args.port, record=0)
    async with server:
        print(server.base_url, flush=True)
        await asyncio.Event().wait()


def _main() -> None:
    parser = argparse.ArgumentParser(description="fake OpenAI-compatible upstream")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--flavor", default="openai", choices=["openai", "zai", "ollama", "vllm"])
    parser.add_argument("--scenario", default="text")
    parser.add_argument(
        "--asyncio", action="store_true", help="use asyncio's own loop even if uvloop is installed"
    )
    args = parser.parse_args()
    Scenario.parse(args.scenario)  # fail before listening
    if not args.asyncio:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            # Less CPU per event than asyncio's loop: the fake stays cheap under load tests.
            uvloop.run(_serve_forever(args))
            return
    asyncio.run(_serve_forever(args))


if __name__ == "__main__":
    _main()
