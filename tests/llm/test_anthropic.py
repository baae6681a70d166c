"""Anthropic Messages provider: request shapes, the event stream, and error mapping."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from daehwa.errors import ConfigError, ProviderError, RateLimited
from daehwa.llm.anthropic import AnthropicModel, wire_messages
from daehwa.llm.anthropic_stream import EventReader
from daehwa.llm.base import GenerationParams, ToolSpec
from daehwa.llm.http import UpstreamClient
from daehwa.llm.retry import is_retryable
from daehwa.messages import Message, Role, ToolCall
from tests.fakes.anthropic_upstream import FakeAnthropicUpstream
from tests.fakes.scenario import DEFAULT_TEXT
from tests.llm.streams import collect, reasoning_of, text_of

KEY = "sk-ant-test-0123456789"
WEATHER = ToolSpec(
    "get_weather", "날씨", {"type": "object", "properties": {"city": {"type": "string"}}}
)


@pytest.fixture
async def claude_api() -> AsyncIterator[FakeAnthropicUpstream]:
    async with FakeAnthropicUpstream(api_key=KEY) as server:
        yield server


@pytest.fixture
async def http(claude_api: FakeAnthropicUpstream) -> AsyncIterator[UpstreamClient]:
    client = UpstreamClient(claude_api.url, read_timeout=10.0)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def make(claude_api: FakeAnthropicUpstream, http: UpstreamClient) -> Any:
    def build(temperature: float | None = None, **options: Any) -> AnthropicModel:
        return AnthropicModel(
            "claude",
            client=http,
            model="claude-sonnet-4-5",
            api_key=KEY,
            base_url=claude_api.url,
            temperature=temperature,
            options=options,
        )

    return build


@pytest.mark.parametrize("spec", ["text", "text split=1 keepalive=1 crlf=1"])
async def test_streams_text_skipping_pings(
    claude_api: FakeAnthropicUpstream, make: Any, spec: str
) -> None:
    claude_api.enqueue(spec)
    chunks = await collect(make())
    assert text_of(chunks) == DEFAULT_TEXT
    assert chunks[-1].finish_reason == "stop"
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == 16  # message_delta's, not summed
    request = claude_api.requests[-1]
    assert request.path == "/v1/messages"
    assert request.headers["x-api-key"] == KEY
    assert request.headers["anthropic-version"] == "2023-06-01"


async def test_request_body(claude_api: FakeAnthropicUpstream, make: Any) -> None:
    model = make(temperature=1.5, top_k=40, tool_choice={"type": "auto"})
    params = GenerationParams(max_new_tokens=300, stop=("###",), tools=(WEATHER,))
    await collect(model, params=params)
    body = claude_api.requests[-1].json
    assert body == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 300,
        "system": "친절하게 답하세요.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "안녕하세요"}]}],
        "temperature": 1.0,  # Claude's range is 0-1
        "stop_sequences": ["###"],
        "tools": [
            {"name": "get_weather", "description": "날씨", "input_schema": WEATHER.parameters}
        ],
        "top_k": 40,
        "tool_choice": {"type": "auto"},
        "stream": True,
    }


def test_tool_turns_in_the_messages_shape() -> None:
    calls = [ToolCall("toolu_1", "get_weather", {"city": "서울"}), ToolCall("toolu_2", "x", {})]
    system, wire = wire_messages(
        [
            Message(Role.SYSTEM, "시스템"),
            Message(Role.USER, "서울 날씨 알려줘"),
            Message(Role.ASSISTANT, "확인할게요.", tool_calls=calls),
            Message(Role.TOOL, '{"condition":"맑음"}', tool_call_id="toolu_1"),
            Message(Role.TOOL, "boom", tool_call_id="toolu_2", metadata={"is_error": True}),
            Message(Role.SYSTEM, "요약: 없음"),
        ]
    )
    assert system == "시스템\n\n요약: 없음"
    assert wire == [
        {"role": "user", "content": [{"type": "text", "text": "서울 날씨 알려줘"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "확인할게요."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "서울"},
                },
                {"type": "tool_use", "id": "toolu_2", "name": "x", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": '{"condition":"맑음"}',
                },
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": "boom",
                    "is_error": True,
                },
            ],
        },
    ]


def test_unpaired_tool_turns_are_repaired() -> None:
    call = ToolCall("toolu_1", "get_weather", {"city": "서울"})
    _, wire = wire_messages(
        [
            Message(Role.TOOL, "old result", tool_call_id="toolu_0"),  # its call fell out
            Message(Role.USER, "서울 날씨"),
            Message(Role.ASSISTANT, "", tool_calls=[call]),
            Message(Role.USER, "아니 됐어"),  # the result never came
        ]
    )
    assert wire[0]["content"] == [
        {"type": "text", "text": "[tool result] old result"},
        {"type": "text", "text": "서울 날씨"},
    ]
    assert wire[2]["content"] == [
        {
            "type": "tool_result",
            "tool_use_id": "toolu_1",
            "content": "(no result)",
            "is_error": True,
        },
        {"type": "text", "text": "아니 됐어"},
    ]


async def test_tool_use_blocks_become_complete_calls(
    claude_api: FakeAnthropicUpstream, make: Any
) -> None:
    claude_api.enqueue("tools split=1")
    chunks = await collect(make(), params=GenerationParams(tools=(WEATHER,)))
    assert text_of(chunks) == "확인해 볼게요."
    final = chunks[-1]
    assert final.finish_reason == "tool_calls"
    assert [(c.name, c.arguments) for c in final.tool_calls] == [
        ("get_weather", {"city": "서울"}),
        ("get_weather", {"city": "부산"}),
    ]
    assert all(c.id.startswith("toolu_") for c in final.tool_calls)
    assert all(not c.tool_calls for c in chunks[:-1])


async def test_thinking_is_reasoning_not_text(claude_api: FakeAnthropicUpstream, make: Any) -> None:
    claude_api.enqueue("text thinking=1")
    chunks = await collect(make(thinking_budget=2048), params=GenerationParams(max_new_tokens=500))
    assert reasoning_of(chunks) == "사용자가 인사했다."
    assert text_of(chunks) == DEFAULT_TEXT
    body = claude_api.requests[-1].json
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert body["max_tokens"] == 2548
    assert "temperature" not in body


async def test_no_thinking_when_continuing_a_tool_call(
    claude_api: FakeAnthropicUpstream, make: Any
) -> None:
    call = ToolCall("toolu_1", "get_weather", {"city": "서울"})
    messages = [
        Message(Role.USER, "서울 날씨"),
        Message(Role.ASSISTANT, "", tool_calls=[call]),
        Message(Role.TOOL, "{}", tool_call_id="toolu_1"),
    ]
    await collect(make(thinking_budget=2048), messages)
    assert "thinking" not in claude_api.requests[-1].json


async def test_beta_header_and_cached_system(claude_api: FakeAnthropicUpstream, make: Any) -> None:
    await collect(make(beta=["a-2025", "b-2025"], cache_system=True))
    request = claude_api.requests[-1]
    assert request.headers["anthropic-beta"] == "a-2025,b-2025"
    assert request.json["system"] == [
        {"type": "text", "text": "친절하게 답하세요.", "cache_control": {"type": "ephemeral"}}
    ]


@pytest.mark.parametrize(
    "options", [{"topk": 1}, {"thinking_budget": 10}, {"beta": "x"}, {"extra_body": 1}]
)
def test_bad_options_are_config_errors(make: Any, options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        make(**options)


@pytest.mark.parametrize(
    ("kind", "error_type", "code", "retryable"),
    [
        ("rate_limit", RateLimited, "rate_limited", True),
        ("overloaded", RateLimited, "upstream_overloaded", True),
        ("bad_request", ProviderError, "upstream_bad_request", False),
        ("context", ProviderError, "context_length_exceeded", False),
        ("unauthorized", ProviderError, "upstream_auth", False),
        ("forbidden", ProviderError, "upstream_auth", False),
        ("not_found", ProviderError, "model_not_found", False),
        ("too_large", ProviderError, "request_too_large", False),
        ("server_error", ProviderError, "upstream_error", True),
        ("error_after_200", RateLimited, "upstream_overloaded", True),
        ("cut", ProviderError, "upstream_truncated", True),
        ("truncate", ProviderError, "upstream_disconnected", True),
    ],
)
async def test_errors_map_to_the_tree(
    claude_api: FakeAnthropicUpstream,
    make: Any,
    kind: str,
    error_type: type[ProviderError],
    code: str,
    retryable: bool,
) -> None:
    claude_api.enqueue(kind)
    with pytest.raises(ProviderError) as caught:
        await collect(make())
    error = caught.value
    assert type(error) is error_type
    assert error.code == code
    assert is_retryable(error) is retryable
    assert error.provider == "claude"
    if kind in ("rate_limit", "overloaded"):
        assert isinstance(error, RateLimited) and error.retry_after == 1.0


async def test_x_should_retry_overrides(claude_api: FakeAnthropicUpstream, make: Any) -> None:
    from daehwa.llm.anthropic_stream import error_from_body

    body = b'{"type":"error","error":{"type":"api_error","message":"x"}}'
    assert error_from_body("c", 500, body, {"x-should-retry": "false"}).retryable is False
    assert error_from_body("c", 500, b"<html>bad gateway</html>", {}).retryable is True


def test_reader_tolerates_a_delta_for_an_unstarted_block() -> None:
    reader = EventReader("claude")
    reader.read({"type": "message_start", "message": {"usage": {"input_tokens": 5}}})
    text = {"type": "text_delta", "text": "안녕"}
    chunk = reader.read({"type": "content_block_delta", "index": 3, "delta": text})
    assert chunk is not None and chunk.text == "안녕"  # the SDK's accumulator breaks here
    piece = {"type": "input_json_delta", "partial_json": '{"city": "서울"}'}
    reader.read({"type": "content_block_delta", "index": 0, "delta": piece})
    with pytest.raises(ProviderError, match="no name") as caught:
        reader.read({"type": "content_block_stop", "index": 0})  # a call without a name
    assert caught.value.code == "upstream_protocol_error"


def test_reader_counts_cached_prompt_tokens() -> None:
    reader = EventReader("claude")
    usage = {"input_tokens": 5, "cache_read_input_tokens": 100, "output_tokens": 1}
    reader.read({"type": "message_start", "message": {"usage": usage}})
    reader.read(
        {
            "type": "message_delta",
            "delta": {"stop_reason": "max_tokens"},
            "usage": {"output_tokens": 9},
        }
    )
    final = reader.final_chunk()
    assert final.usage is not None and (
        final.usage.prompt_tokens,
        final.usage.completion_tokens,
    ) == (105, 9)
    assert final.finish_reason == "length"


def test_invalid_tool_json_is_a_retryable_error() -> None:
    reader = EventReader("claude")
    start = {"type": "tool_use", "id": "t", "name": "n", "input": {}}
    reader.read({"type": "content_block_start", "index": 0, "content_block": start})
    delta = {"type": "input_json_delta", "partial_json": '{"city": '}
    reader.read({"type": "content_block_delta", "index": 0, "delta": delta})
    with pytest.raises(ProviderError) as caught:
        reader.read({"type": "content_block_stop", "index": 0})
    assert caught.value.code == "invalid_tool_arguments" and caught.value.retryable


def test_a_persona_opening_line_moves_into_the_system_prompt() -> None:
    from daehwa.llm.anthropic import wire_messages

    system, messages = wire_messages(
        [
            Message(Role.SYSTEM, "당신은 일본어 선생님입니다."),
            Message(Role.ASSISTANT, "안녕하세요! 시작해 볼까요?"),
            Message(Role.USER, "네"),
        ]
    )
    assert messages[0]["role"] == "user"
    assert "안녕하세요! 시작해 볼까요?" in system
    assert system.startswith("당신은 일본어 선생님입니다.")
