"""Tool registration, schemas, safe execution, and the weather tool through real providers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import orjson
import pytest
from pydantic import BaseModel, Field

from daehwa.chat.tools import ToolError, ToolRegistry, ToolResult, make_tool, tool
from daehwa.errors import ConfigError
from daehwa.llm.base import ChatModel, GenerationParams
from daehwa.messages import Message, Role, ToolCall
from daehwa.tools.weather import weather_tool
from tests.fakes.weather_service import FakeWeatherService
from tests.llm.native_harness import harness


@tool(name="add", description="두 수를 더합니다.")
async def add(a: int, b: int = 1) -> int:
    return a + b


@tool
def shout(text: Annotated[str, Field(description="외칠 말")], times: int | None = None) -> str:
    """Repeat text loudly (a sync tool, run in a thread)."""
    return text.upper() * (times or 1)


def test_schema_from_type_hints() -> None:
    assert add.spec().parameters == {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer", "default": 1}},
        "required": ["a"],
        "additionalProperties": False,
    }
    assert shout.name == "shout"
    assert shout.description == "Repeat text loudly (a sync tool, run in a thread)."
    assert shout.parameters["properties"] == {
        "text": {"type": "string", "description": "외칠 말"},
        "times": {"type": "integer"},  # Optional: not required, no null union
    }


class Place(BaseModel):
    city: str


def test_literal_and_nested_models() -> None:
    @tool(description="x")
    async def where(place: Place, unit: Literal["c", "f"] = "c") -> str:
        return place.city

    schema = where.parameters
    assert schema["properties"]["unit"] == {"type": "string", "enum": ["c", "f"], "default": "c"}
    assert "title" not in orjson.dumps(schema).decode()


def test_a_hint_that_cannot_be_resolved_is_a_config_error() -> None:
    class Local(BaseModel):
        x: int

    async def uses_local(value: Local) -> None:
        """Its hint is a string naming a class only the function body knows."""

    with pytest.raises(ConfigError, match="cannot derive a schema"):
        make_tool(uses_local)


def test_explicit_schema_and_bad_names() -> None:
    schema = {"type": "object", "properties": {}}
    assert (
        make_tool(add.fn, name="plus", description="더하기", parameters=schema).parameters is schema
    )
    with pytest.raises(ConfigError, match="tool name"):
        make_tool(add.fn, name="두 수")
    with pytest.raises(ConfigError, match="description"):
        make_tool(lambda: 1, name="nodoc")


def test_registry_specs_by_name() -> None:
    registry = ToolRegistry([add, shout])
    assert [s.name for s in registry.specs()] == ["add", "shout"]
    assert [s.name for s in registry.specs(["shout"])] == ["shout"]
    assert "add" in registry and registry.names() == ["add", "shout"]
    with pytest.raises(ConfigError, match="unknown tool"):
        registry.specs(["add", "missing"])
    with pytest.raises(ConfigError, match="twice"):
        registry.add(add)


async def test_execute_success_async_and_sync() -> None:
    registry = ToolRegistry([add, shout])
    result = await registry.execute(ToolCall("c1", "add", {"a": 2, "b": "3"}))
    assert (result.ok, result.value, result.error) == (True, 5, None)  # "3" coerced
    loud = await registry.execute(ToolCall("c2", "shout", {"text": "hi", "times": 2}))
    assert loud.value == "HIHI"
    message = result.to_message("conv-1")
    assert message.role is Role.TOOL and message.tool_call_id == "c1"
    assert message.content == "5" and message.conversation_id == "conv-1"
    assert message.metadata == {"tool": "add", "is_error": False}


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (ToolCall("c", "nope", {}), "unknown tool 'nope'"),
        (ToolCall("c", "add", {"b": 2}), "invalid arguments: a: Missing required argument"),
        (ToolCall("c", "add", {"a": "x"}), "invalid arguments: a: Input should be a valid integer"),
        (ToolCall("c", "add", {"a": 1, "zz": 2}), "invalid arguments: zz: Unexpected keyword"),
    ],
)
async def test_bad_calls_become_error_results(call: ToolCall, error: str) -> None:
    result = await ToolRegistry([add]).execute(call)
    assert not result.ok
    assert result.error is not None and result.error.startswith(error)
    assert orjson.loads(result.content()) == {"error": result.error}
    assert result.to_message().metadata["is_error"] is True


async def test_failures_never_raise() -> None:
    @tool(description="raises a ToolError")
    async def refuses() -> None:
        raise ToolError("도시를 찾을 수 없습니다")

    @tool(description="has a bug")
    async def buggy() -> None:
        raise KeyError("secret-internal-detail")

    @tool(description="returns something that is not JSON")
    async def opaque() -> object:
        return object()

    registry = ToolRegistry([refuses, buggy, opaque])
    results = await registry.execute_all(
        [ToolCall("1", "refuses", {}), ToolCall("2", "buggy", {}), ToolCall("3", "opaque", {})]
    )
    assert [r.error for r in results][:2] == ["도시를 찾을 수 없습니다", "the tool 'buggy' failed"]
    assert "not JSON" in (results[2].error or "")
    assert "secret-internal-detail" not in results[1].content()


async def test_timeout_is_enforced_and_cancels_the_tool() -> None:
    cancelled = asyncio.Event()

    @tool(description="never answers")
    async def slow() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            cancelled.set()

    @tool(description="bounded by its own limit", timeout=0.05)
    async def bounded() -> None:
        await asyncio.sleep(3600)

    registry = ToolRegistry([slow, bounded])
    result = await registry.execute(ToolCall("c", "slow", {}), timeout=0.05)
    assert not result.ok and result.error == "the tool 'slow' did not answer within 0.05 s"
    assert cancelled.is_set()
    result = await registry.execute(ToolCall("c", "bounded", {}), timeout=60)
    assert result.error == "the tool 'bounded' did not answer within 0.05 s"


async def test_parallel_calls_run_concurrently_in_order() -> None:
    both = asyncio.Barrier(2)

    @tool(description="waits for the other call")
    async def meet(n: int) -> int:
        await both.wait()  # deadlocks (and times out) unless both run at once
        return n

    results = await ToolRegistry([meet]).execute_all(
        [ToolCall("a", "meet", {"n": 1}), ToolCall("b", "meet", {"n": 2})], timeout=5
    )
    assert [(r.call_id, r.value) for r in results] == [("a", 1), ("b", 2)]


async def test_sync_tools_run_off_the_event_loop() -> None:
    loop_thread = threading.get_ident()

    @tool(description="reports its thread")
    def which() -> int:
        return threading.get_ident()

    result = await ToolRegistry([which]).execute(ToolCall("c", "which", {}))
    assert result.ok and result.value != loop_thread


def test_long_results_are_cut() -> None:
    result = ToolResult("c", "big", True, "가" * 20000)
    data = orjson.loads(result.content())
    assert data["truncated"] is True and len(data["text"]) == 8000


@pytest.fixture
async def weather() -> AsyncIterator[FakeWeatherService]:
    async with FakeWeatherService() as service:
        yield service


async def test_weather_tool_against_the_service(weather: FakeWeatherService) -> None:
    item = weather_tool(weather.url, timeout=0.5)
    registry = ToolRegistry([item])
    try:
        seoul = await registry.execute(ToolCall("1", "get_weather", {"city": "서울"}))
        assert seoul.ok and seoul.value["condition"] == "맑음"
        unknown = await registry.execute(ToolCall("2", "get_weather", {"city": "평양"}))
        assert unknown.error == "'평양'의 날씨 정보를 찾을 수 없습니다"
        broken = await registry.execute(ToolCall("3", "get_weather", {"city": "고장"}))
        assert broken.error == "날씨 서비스 오류 (HTTP 500)"
        slow = await registry.execute(ToolCall("4", "get_weather", {"city": "느림"}), timeout=5)
        assert slow.error == "the tool 'get_weather' did not answer within 0.5 s"
        empty = await registry.execute(ToolCall("5", "get_weather", {"city": ""}))
        assert empty.error is not None and empty.error.startswith("invalid arguments")
    finally:
        await registry.aclose()
    assert weather.lookups == ["서울", "평양", "고장", "느림"]


async def test_weather_tool_when_the_service_is_down() -> None:
    service = FakeWeatherService()
    await service.start()
    url = service.url
    await service.aclose()
    registry = ToolRegistry([weather_tool(url)])
    result = await registry.execute(ToolCall("1", "get_weather", {"city": "서울"}))
    assert result.error == "날씨 서비스에 연결할 수 없습니다"
    await registry.aclose()


async def turn(
    model: ChatModel, registry: ToolRegistry, history: list[Message], text: str
) -> tuple[str, int]:
    """A minimal tool loop (the real one lives in ChatService): answer, tool calls made."""
    history.append(Message(Role.USER, text))
    params = GenerationParams(tools=registry.specs())
    calls_made = 0
    for _ in range(4):
        chunks = [c async for c in model.stream(history, params)]
        reply = "".join(c.text for c in chunks)
        calls = chunks[-1].tool_calls
        if not calls:
            history.append(Message(Role.ASSISTANT, reply))
            return reply, calls_made
        calls_made += len(calls)
        history.append(Message(Role.ASSISTANT, reply, tool_calls=calls))
        history += [r.to_message() for r in await registry.execute_all(calls, timeout=5)]
    raise AssertionError("the tool loop did not end")


@pytest.mark.parametrize("provider", ["clova-v3", "anthropic", "bedrock"])
async def test_seoul_then_busan_through_the_weather_tool(
    provider: str, weather: FakeWeatherService, tmp_path: Any
) -> None:
    async with harness(provider, str(tmp_path)) as h:
        assert h.fake is not None
        h.fake.default = h.fake.scenario("weather")  # type: ignore[attr-defined]
        registry = ToolRegistry([weather_tool(weather.url)])
        history = [Message(Role.SYSTEM, "날씨는 도구로 확인하세요.")]
        answer, calls = await turn(h.model, registry, history, "서울 날씨 알려줘")
        assert (answer, calls) == ("서울의 현재 날씨는 맑음, 기온 23.5도입니다.", 1)
        answer, calls = await turn(h.model, registry, history, "부산은?")
        assert (answer, calls) == ("부산의 현재 날씨는 흐림, 기온 21.0도입니다.", 1)
        assert weather.lookups == ["서울", "부산"]
        # Without the first turn, "부산은?" is not about the weather: no tool call.
        answer, calls = await turn(h.model, registry, [], "부산은?")
        assert calls == 0
        await registry.aclose()
