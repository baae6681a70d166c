"""The contract every provider keeps, each against its fake upstream on a real socket.

Streaming text (split UTF-8 and keep-alives included), usage on the last chunk,
stopping (closing the iterator drops the upstream connection), errors mapped
to the tree with the right retry flags, and a tool call round trip.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from daehwa.chat.tools import ToolRegistry, tool
from daehwa.config import ModelSettings, Settings
from daehwa.errors import ProviderError, ProviderTimeout, RateLimited
from daehwa.llm.base import ChatModel, GenerationParams
from daehwa.llm.registry import ModelRegistry
from daehwa.llm.retry import is_retryable
from daehwa.messages import Message, Role
from tests.fakes.scenario import DEFAULT_TEXT, ScriptedUpstream
from tests.llm.native_harness import BEDROCK_MODEL, PROVIDERS, Harness, harness

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(params=PROVIDERS)
async def h(request: pytest.FixtureRequest, tmp_path: object) -> AsyncIterator[Harness]:
    async with harness(request.param, str(tmp_path)) as started:
        yield started


def conversation(text: str = "서울 날씨 알려줘") -> list[Message]:
    return [Message(Role.SYSTEM, "친절하게 답하세요."), Message(Role.USER, text)]


async def drain(model: ChatModel, messages: list[Message], params: GenerationParams) -> list:
    return [c async for c in model.stream(messages, params)]


async def test_streams_text_and_reports_usage_last(h: Harness) -> None:
    if h.fake is not None:
        h.enqueue("text")
    chunks = await drain(h.model, conversation(), GenerationParams())
    text = "".join(c.text for c in chunks)
    expected = "안녕하세요 서울 날씨 알려줘" if h.fake is None else DEFAULT_TEXT
    assert text.replace("\n", "") == expected
    assert len([c for c in chunks if c.text]) > 1  # streamed, not one lump
    last = chunks[-1]
    assert last.finish_reason == "stop"
    assert last.usage is not None and last.usage.completion_tokens > 0
    assert all(c.finish_reason is None for c in chunks[:-1])


async def test_closing_the_stream_drops_the_upstream_connection(h: Harness) -> None:
    if h.fake is None:
        pytest.skip("no upstream")
    h.enqueue("stall")
    stream = h.model.stream(conversation(), GenerationParams())
    first = await anext(stream)  # type: ignore[call-overload]
    assert first.text
    await stream.aclose()  # type: ignore[attr-defined]
    assert h.client is not None and h.client.idle_connections == 0  # not put back for reuse
    if isinstance(h.fake, ScriptedUpstream):
        await h.fake.disconnected.wait()  # the fake saw the client leave
        assert h.fake.disconnects == 1
    # The pool still works for the next request.
    h.enqueue("text")
    assert "".join(c.text for c in await drain(h.model, conversation(), GenerationParams()))


@pytest.mark.parametrize(
    ("scenario", "retryable", "code"),
    [
        ("rate_limit", True, None),
        ("server_error", True, "upstream_error"),
        ("unauthorized", False, "upstream_auth"),
    ],
)
async def test_refusals_map_to_the_error_tree(
    h: Harness, scenario: str, retryable: bool, code: str | None
) -> None:
    if not h.supports(scenario):
        pytest.skip("no upstream")
    h.enqueue(scenario)
    with pytest.raises(ProviderError) as caught:
        await drain(h.model, conversation(), GenerationParams())
    error = caught.value
    assert error.retryable is retryable
    assert is_retryable(error) is retryable
    assert error.provider == h.provider
    if code is not None:
        assert error.code == code
    if scenario == "rate_limit":
        assert isinstance(error, RateLimited)
        assert error.retry_after == h.retry_after
    assert "test-0123456789" not in str(error)  # no key in messages


async def test_error_after_the_first_tokens_is_retryable(h: Harness) -> None:
    if not h.supports("error_after_200"):
        pytest.skip("no upstream")
    h.enqueue("error_after_200")
    seen: list[str] = []
    with pytest.raises(ProviderError) as caught:
        async for chunk in h.model.stream(conversation(), GenerationParams()):
            seen.append(chunk.text)
    assert "".join(seen)  # the failure came after text had streamed
    assert is_retryable(caught.value)


async def test_a_cut_connection_is_a_retryable_error(h: Harness) -> None:
    if not h.supports("truncate"):
        pytest.skip("no upstream")
    h.enqueue("truncate")
    with pytest.raises(ProviderError) as caught:
        await drain(h.model, conversation(), GenerationParams())
    assert is_retryable(caught.value)


@tool(name="get_weather")
async def get_weather(
    city: str | None = None, location: str | None = None, unit: str = "celsius"
) -> dict[str, str]:
    """The weather of a city (the OpenAI fake asks with location and unit)."""
    return {"city": city or location or "?", "condition": "맑음", "unit": unit}


async def test_tool_call_round_trip(h: Harness) -> None:
    if not h.supports("tools"):
        pytest.skip("no tool calling")
    registry = ToolRegistry([get_weather])
    params = GenerationParams(tools=registry.specs())
    h.enqueue("tools")
    chunks = await drain(h.model, conversation(), params)
    final = chunks[-1]
    assert final.finish_reason == "tool_calls"
    calls = final.tool_calls
    assert len(calls) == 2
    assert all(c.name == "get_weather" and c.id for c in calls)
    assert all(isinstance(c.arguments, dict) and c.arguments for c in calls)
    assert len({c.id for c in calls}) == 2

    history = conversation()
    history.append(Message(Role.ASSISTANT, "".join(c.text for c in chunks), tool_calls=calls))
    results = await registry.execute_all(calls, timeout=5.0)
    assert all(r.ok for r in results)
    history += [r.to_message() for r in results]
    h.enqueue("text")
    answer = await drain(h.model, history, params)
    assert answer[-1].finish_reason == "stop"
    assert h.fake is not None
    sent = h.fake.requests[-1].json
    assert h.tool_results(sent) == [(r.call_id, r.content()) for r in results]


@pytest.mark.parametrize("provider", ["clova-v1", "clova-v3", "anthropic", "bedrock"])
async def test_the_registry_builds_native_providers(provider: str, tmp_path: object) -> None:
    """``[models.NAME] provider = "clova" | "anthropic" | "bedrock"`` through ModelRegistry."""
    async with harness(provider, str(tmp_path)) as h:
        assert h.fake is not None
        kind, model_name, key_env = {
            "clova-v1": ("clova", "HCX-003", "TEST_CLOVA_KEY"),
            "clova-v3": ("clova", "HCX-005", "TEST_CLOVA_KEY"),
            "anthropic": ("anthropic", "claude-sonnet-4-5", "TEST_ANTHROPIC_KEY"),
            "bedrock": ("bedrock", BEDROCK_MODEL, ""),
        }[provider]
        config = ModelSettings(
            provider=kind,  # type: ignore[arg-type]
            base_url=h.fake.url,
            model=model_name,
            api_key_env=key_env,
        )
        registry = ModelRegistry(Settings(models={"m": config}, chat={"default_model": "m"}))
        try:
            model = registry.get("m")
            chunks = await drain(model, conversation(), GenerationParams())
            assert "".join(c.text for c in chunks) == DEFAULT_TEXT
            assert [c.origin for c in registry.clients.clients()] == [
                f"http://127.0.0.1:{h.fake.port}"
            ]
        finally:
            await registry.aclose()


@pytest.mark.parametrize("provider", [p for p in PROVIDERS if p != "scripted"])
async def test_a_silent_upstream_times_out_and_is_retryable(
    provider: str, tmp_path: object
) -> None:
    """Headers, then nothing for longer than the model's ``timeout``."""
    async with harness(provider, str(tmp_path), read_timeout=0.3) as h:
        h.enqueue("silent")
        with pytest.raises(ProviderTimeout) as caught:
            await drain(h.model, conversation(), GenerationParams())
        assert is_retryable(caught.value)
        assert caught.value.provider == h.provider


async def test_cancelling_the_consumer_drops_the_upstream_connection(h: Harness) -> None:
    if not isinstance(h.fake, ScriptedUpstream):
        pytest.skip("the fake cannot see a client leave")
    h.enqueue("stall")
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in h.model.stream(conversation(), GenerationParams()):
            first.set()

    task = asyncio.create_task(consume())
    await first.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await h.fake.disconnected.wait()
    assert h.client is not None and h.client.idle_connections == 0
