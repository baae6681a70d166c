"""Fault injection: a fake OpenAI-compatible upstream misbehaves over real sockets.

Two levels. First the model path alone (OpenAIModel inside ResilientModel):
which errors are retried, how often the upstream is called, when the breaker
opens. Then the whole server (the real HTTP API, ChatService, the SQLite
store): for each fault, the events the user receives and the message stored.
docs/resilience.md has the same faults as a table.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest

from daehwa.config import ResilienceSettings
from daehwa.errors import CircuitOpen, ProviderError, RateLimited
from daehwa.llm.base import Chunk, GenerationParams
from daehwa.llm.breaker import BreakerState
from daehwa.llm.http import UpstreamClient
from daehwa.llm.openai import OpenAIModel
from daehwa.llm.resilience import ResilientModel, UpstreamGuard
from daehwa.messages import Message, Role
from tests.api.conftest import Server, ServerFactory
from tests.api.conftest import make_server as make_server  # the fixture
from tests.fakes.http_server import DropConnection, RecordedRequest, Reply
from tests.fakes.openai_upstream import DEFAULT_TEXT, FakeOpenAIUpstream, _pieces

API_KEY = "sk-fault-test-secret"
# Fast retries and small bounds, so that every fault resolves in well under a second;
# the first-token budget is roomy so that a loaded machine cannot turn an answer
# into a fallback reply (the test of the fallback reply shortens it).
SETTINGS: dict[str, Any] = {
    "first_token_timeout": 3.0,
    "attempt_timeout": 0.3,
    "stall_timeout": 0.3,
    "fallback_reply": "잠시 후 다시 시도해 주세요.",
    "max_attempts": 3,
    "backoff_base": 0.01,
    "backoff_max": 0.02,
    "breaker_min_calls": 4,
    "breaker_cooldown": 60.0,
}
MESSAGES = [Message(Role.USER, "안녕")]
me_counter = itertools.count(1)
PARAMS = GenerationParams()


class FaultyUpstream(FakeOpenAIUpstream):
    """The fake upstream, plus a connection reset before the status line."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(api_key=API_KEY, **kw)
        self.resets = 0

    async def handle(self, request: RecordedRequest, reply: Reply) -> None:
        if self.resets and request.method == "POST":
            self.resets -= 1
            raise DropConnection
        await super().handle(request, reply)

    @property
    def calls(self) -> int:
        return sum(1 for r in self.requests if r.method == "POST")


class Upstreams:
    """Fake upstreams with their clients and models, closed together."""

    def __init__(self) -> None:
        self.servers: list[FaultyUpstream] = []
        self.clients: list[UpstreamClient] = []

    async def start(self) -> FaultyUpstream:
        server = await FaultyUpstream(flavor="openai").start()
        self.servers.append(server)
        return server

    def model(self, server: FaultyUpstream, name: str = "main") -> OpenAIModel:
        client = UpstreamClient(server.base_url, read_timeout=10.0)
        self.clients.append(client)
        return OpenAIModel(
            name,
            client=client,
            base_url=server.base_url,
            model="fake",
            api_key=API_KEY,
            options={"flavor": "openai"},
        )

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()
        for server in self.servers:
            await server.aclose()


@pytest.fixture
async def upstreams() -> AsyncIterator[Upstreams]:
    pool = Upstreams()
    try:
        yield pool
    finally:
        await pool.aclose()


def settings(**overrides: Any) -> ResilienceSettings:
    return ResilienceSettings(**{**SETTINGS, **overrides})


def resilient(
    model: OpenAIModel,
    config: ResilienceSettings,
    *,
    fallbacks: tuple[ResilientModel, ...] = (),
    guard: UpstreamGuard | None = None,
) -> ResilientModel:
    guard = guard or UpstreamGuard.create(model.name, config)
    return ResilientModel.from_settings(model, config, guard=guard, fallbacks=fallbacks)


async def collect(model: ResilientModel) -> list[Chunk]:
    stream = model.stream(MESSAGES, PARAMS)
    try:
        return [chunk async for chunk in stream]
    finally:
        await stream.aclose()  # type: ignore[attr-defined]


def text(chunks: list[Chunk]) -> str:
    return "".join(c.text for c in chunks)


# -- the model path ----------------------------------------------------------------


async def test_429_with_retry_after_is_retried_after_the_wait(upstreams: Upstreams) -> None:
    up = await upstreams.start()
    up.enqueue("rate_limit retry_after=0.05", "text")
    assert text(await collect(resilient(upstreams.model(up), settings()))) == DEFAULT_TEXT
    assert up.calls == 2


async def test_a_burst_of_5xx_is_retried(upstreams: Upstreams) -> None:
    up = await upstreams.start()
    up.enqueue("overloaded", "server_error", "text")
    model = resilient(upstreams.model(up), settings())
    assert text(await collect(model)) == DEFAULT_TEXT
    assert up.calls == 3
    assert model.guard.breaker.window_counts() == (3, 2)


async def test_a_reset_before_the_answer_is_retried(upstreams: Upstreams) -> None:
    up = await upstreams.start()
    up.resets = 1
    assert text(await collect(resilient(upstreams.model(up), settings()))) == DEFAULT_TEXT
    assert up.calls == 2


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        ("bad_request", "upstream_bad_request"),
        ("context_length", "context_length_exceeded"),
        ("unauthorized", "upstream_auth"),
        ("not_found", "model_not_found"),
        ("quota", "insufficient_quota"),
    ],
)
async def test_refusals_are_never_retried(upstreams: Upstreams, kind: str, code: str) -> None:
    up = await upstreams.start()
    up.enqueue(kind, "text")
    with pytest.raises(ProviderError) as caught:
        await collect(resilient(upstreams.model(up), settings()))
    assert caught.value.code == code
    assert API_KEY not in caught.value.message
    assert up.calls == 1


@pytest.mark.parametrize("kind", ["truncate", "cut", "error_chunk"])
async def test_no_retry_after_the_first_token(upstreams: Upstreams, kind: str) -> None:
    up = await upstreams.start()
    up.enqueue(kind, "text")
    backup = await upstreams.start()
    fallback = resilient(upstreams.model(backup, "backup"), settings())
    model = resilient(upstreams.model(up), settings(), fallbacks=(fallback,))
    got: list[str] = []
    with pytest.raises(ProviderError):
        async for chunk in model.stream(MESSAGES, PARAMS):
            got.append(chunk.text)
    assert DEFAULT_TEXT.startswith("".join(got)) and "".join(got)
    assert (up.calls, backup.calls) == (1, 0)
    assert model.guard.bulkhead.in_flight == 0


async def test_utf8_and_frames_split_across_writes_arrive_whole(upstreams: Upstreams) -> None:
    up = await upstreams.start()
    up.enqueue("text split=1 crlf=1 keepalive=1")
    chunks = await collect(resilient(upstreams.model(up), settings()))
    assert [c.text for c in chunks if c.text] == _pieces(DEFAULT_TEXT, None)


async def test_the_breaker_opens_and_then_spares_the_upstream(upstreams: Upstreams) -> None:
    up = await upstreams.start()
    up.default = up.default.parse("overloaded")
    model = resilient(upstreams.model(up), settings(max_attempts=2, breaker_min_calls=5))
    requests = 0
    while model.guard.breaker.state is BreakerState.CLOSED:
        requests += 1
        with pytest.raises(ProviderError):
            await collect(model)
    assert (requests, up.calls) == (3, 5)  # 2 + 2 + 1 attempts reach 5 failed calls
    for _ in range(20):
        with pytest.raises(CircuitOpen):
            await collect(model)
    assert up.calls == 5


async def test_a_failing_upstream_fails_over_to_the_next(upstreams: Upstreams) -> None:
    up, backup = await upstreams.start(), await upstreams.start()
    up.default = up.default.parse("overloaded")
    backup.enqueue("text text=대체_모델의_답변")
    fallback = resilient(upstreams.model(backup, "backup"), settings())
    model = resilient(upstreams.model(up), settings(), fallbacks=(fallback,))
    assert text(await collect(model)) == "대체_모델의_답변"
    assert (up.calls, backup.calls) == (3, 1)


async def test_a_slow_first_token_fails_over_within_the_budget(upstreams: Upstreams) -> None:
    up, backup = await upstreams.start(), await upstreams.start()
    up.enqueue("text ttft=30")
    fallback = resilient(upstreams.model(backup, "backup"), settings())
    model = resilient(upstreams.model(up), settings(), fallbacks=(fallback,))
    assert text(await collect(model)) == DEFAULT_TEXT
    assert (up.calls, backup.calls) == (1, 1)


async def test_rate_limited_beyond_the_budget_is_not_waited_for(upstreams: Upstreams) -> None:
    up = await upstreams.start()
    up.enqueue("rate_limit retry_after=30", "text")
    with pytest.raises(RateLimited) as caught:
        await collect(resilient(upstreams.model(up), settings()))
    assert caught.value.retry_after == 30.0
    assert up.calls == 1


# -- what the user sees and what is stored -----------------------------------------


async def serve(
    make_server: ServerFactory, models: dict[str, ResilientModel], **overrides: Any
) -> Server:
    server: Server = await make_server(models, resilience={**SETTINGS, **overrides})
    return server


async def turn(server: Server) -> tuple[Any, dict[str, Any]]:
    """Send one message; returns the streamed reply and the stored assistant message."""
    me = await server.user(f"user{next(me_counter)}")
    status, created = await server.call("POST", "/v1/conversations", me, json={})
    assert status == 201
    cid = created["id"]
    reply = await server.stream(
        "POST", f"/v1/conversations/{cid}/messages", me, json={"content": "안녕"}
    )
    assert reply.status == 200
    return reply, await stored_reply(server, me, cid)


async def stored_reply(server: Server, me: dict[str, str], cid: str) -> dict[str, Any]:
    status, page = await server.call("GET", f"/v1/conversations/{cid}/messages", me)
    assert status == 200
    user, assistant = page["items"]
    assert (user["role"], user["content"]) == ("user", "안녕")
    assistant["_me"], assistant["_cid"] = me, cid
    return dict(assistant)


def ended(reply: Any) -> tuple[str, dict[str, Any]]:
    kind, data, _ = reply.events[-1]
    assert [k for k, _, _ in reply.events].count(kind) == 1
    return kind, data


async def test_user_gets_the_fallback_reply_when_no_token_comes(
    make_server: ServerFactory, upstreams: Upstreams
) -> None:
    up = await upstreams.start()
    up.default = up.default.parse("text ttft=30")
    config = settings(first_token_timeout=0.5)
    server = await serve(
        make_server, {"main": resilient(upstreams.model(up), config)}, first_token_timeout=0.5
    )
    reply, stored = await turn(server)
    assert reply.text == SETTINGS["fallback_reply"]
    kind, done = ended(reply)
    assert (kind, done["status"], done["finish_reason"]) == ("done", "fallback", "fallback")
    assert (stored["status"], stored["content"]) == ("fallback", SETTINGS["fallback_reply"])
    await asyncio.sleep(0.2)  # the late answer is discarded, never appended
    later = await stored_reply(server, stored["_me"], stored["_cid"])
    assert (later["status"], later["content"]) == ("fallback", SETTINGS["fallback_reply"])
    # One attempt timed out (0.3 s); its retry (if it began in time) was cut by the deadline.
    assert 1 <= up.calls <= 2


async def test_user_gets_the_fallback_models_answer_when_the_first_is_slow(
    make_server: ServerFactory, upstreams: Upstreams
) -> None:
    up, backup = await upstreams.start(), await upstreams.start()
    up.default = up.default.parse("text ttft=30")
    fallback = resilient(upstreams.model(backup, "backup"), settings())
    model = resilient(upstreams.model(up), settings(), fallbacks=(fallback,))
    server = await serve(make_server, {"main": model})
    reply, stored = await turn(server)
    assert reply.text == DEFAULT_TEXT
    kind, done = ended(reply)
    assert (kind, done["status"]) == ("done", "complete")
    assert (stored["status"], stored["content"]) == ("complete", DEFAULT_TEXT)


@pytest.mark.parametrize(
    "faults",
    [
        ["rate_limit retry_after=0.05"],
        ["overloaded", "server_error"],
        ["text split=1 crlf=1"],
    ],
    ids=["429-retry-after", "5xx-burst", "split-utf8-and-frames"],
)
async def test_transient_faults_are_invisible_to_the_user(
    make_server: ServerFactory, upstreams: Upstreams, faults: list[str]
) -> None:
    up = await upstreams.start()
    up.enqueue(*faults, "text")
    server = await serve(make_server, {"main": resilient(upstreams.model(up), settings())})
    reply, stored = await turn(server)
    assert reply.text == DEFAULT_TEXT
    kind, done = ended(reply)
    assert (kind, done["status"], done["finish_reason"]) == ("done", "complete", "stop")
    assert (stored["status"], stored["content"]) == ("complete", DEFAULT_TEXT)


async def test_a_connection_reset_before_the_answer_is_invisible(
    make_server: ServerFactory, upstreams: Upstreams
) -> None:
    up = await upstreams.start()
    server = await serve(make_server, {"main": resilient(upstreams.model(up), settings())})
    up.resets = 1
    reply, stored = await turn(server)
    assert reply.text == DEFAULT_TEXT
    assert (stored["status"], stored["content"]) == ("complete", DEFAULT_TEXT)
    assert up.calls == 2


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        ("overloaded", "upstream_error"),
        ("bad_request", "upstream_bad_request"),
        ("unauthorized", "upstream_auth"),
        ("quota", "insufficient_quota"),
    ],
)
async def test_a_failure_before_the_first_token_is_an_error_and_stored_failed(
    make_server: ServerFactory, upstreams: Upstreams, fault: str, code: str
) -> None:
    up = await upstreams.start()
    up.default = up.default.parse(fault)
    server = await serve(make_server, {"main": resilient(upstreams.model(up), settings())})
    reply, stored = await turn(server)
    assert reply.text == ""
    kind, error = ended(reply)
    assert (kind, error["code"]) == ("error", code)
    assert API_KEY not in error["message"]
    assert (stored["status"], stored["content"]) == ("failed", "")
    assert up.calls == (3 if fault == "overloaded" else 1)


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        ("stall stall=30", "provider_timeout"),
        ("truncate", "upstream_disconnected"),
        ("cut", "upstream_truncated"),
        ("error_chunk", "upstream_error"),
    ],
    ids=["stall", "reset-mid-stream", "closed-before-done", "error-chunk"],
)
async def test_a_failure_after_the_first_token_keeps_the_partial_reply(
    make_server: ServerFactory, upstreams: Upstreams, fault: str, code: str
) -> None:
    up, backup = await upstreams.start(), await upstreams.start()
    up.default = up.default.parse(fault)
    fallback = resilient(upstreams.model(backup, "backup"), settings())
    model = resilient(upstreams.model(up), settings(), fallbacks=(fallback,))
    server = await serve(make_server, {"main": model})
    reply, stored = await turn(server)
    partial = "".join(_pieces(DEFAULT_TEXT, None)[: len(_pieces(DEFAULT_TEXT, None)) // 2])
    assert reply.text == partial
    kind, error = ended(reply)
    assert (kind, error["code"]) == ("error", code)
    assert (stored["status"], stored["content"]) == ("incomplete", partial)
    assert (up.calls, backup.calls) == (1, 0)  # no silent switch after the first token


async def test_an_open_circuit_answers_at_once_without_calling_the_upstream(
    make_server: ServerFactory, upstreams: Upstreams
) -> None:
    up = await upstreams.start()
    up.default = up.default.parse("overloaded")
    model = resilient(upstreams.model(up), settings())
    server = await serve(make_server, {"main": model})
    await turn(server)
    await turn(server)  # 6 failed calls: the breaker is open
    assert model.guard.breaker.state is BreakerState.OPEN
    before = up.calls
    reply, stored = await turn(server)
    kind, error = ended(reply)
    assert (kind, error["code"]) == ("error", "circuit_open")
    assert (stored["status"], stored["content"]) == ("failed", "")
    assert up.calls == before


async def test_an_open_circuit_fails_over_to_the_fallback_model(
    make_server: ServerFactory, upstreams: Upstreams
) -> None:
    up, backup = await upstreams.start(), await upstreams.start()
    up.default = up.default.parse("overloaded")
    config = settings()
    guard = UpstreamGuard.create("main", config)
    for _ in range(4):
        guard.breaker.acquire().failure()
    assert guard.breaker.state is BreakerState.OPEN
    fallback = resilient(upstreams.model(backup, "backup"), config)
    model = resilient(upstreams.model(up), config, fallbacks=(fallback,), guard=guard)
    server = await serve(make_server, {"main": model})
    reply, stored = await turn(server)
    assert reply.text == DEFAULT_TEXT
    assert (stored["status"], stored["content"]) == ("complete", DEFAULT_TEXT)
    assert (up.calls, backup.calls) == (0, 1)
