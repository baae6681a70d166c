"""CLOVA Studio native provider: request shapes, both key styles, v1/v3 streams, errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from daehwa.config import ModelSettings
from daehwa.errors import ConfigError, ProviderError, ProviderTimeout, RateLimited
from daehwa.llm.base import GenerationParams, ToolSpec
from daehwa.llm.clova import ClovaModel, default_api_version
from daehwa.llm.http import UpstreamClient
from daehwa.llm.retry import is_retryable
from daehwa.messages import Message, Role, ToolCall
from tests.fakes.clova_upstream import FakeClovaStudio
from tests.fakes.scenario import DEFAULT_TEXT
from tests.llm.streams import collect, text_of, user

KEY = "nv-test-key-0123456789"
GW_KEY = "gw-test-key-0123456789"
WEATHER = ToolSpec(
    "get_weather", "날씨", {"type": "object", "properties": {"city": {"type": "string"}}}
)


@pytest.fixture
async def studio() -> AsyncIterator[FakeClovaStudio]:
    async with FakeClovaStudio(api_key=KEY, apigw_api_key=GW_KEY) as server:
        yield server


@pytest.fixture
async def http(studio: FakeClovaStudio) -> AsyncIterator[UpstreamClient]:
    client = UpstreamClient(studio.url, read_timeout=10.0)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def make(studio: FakeClovaStudio, http: UpstreamClient) -> Any:
    def build(model: str = "HCX-005", **options: Any) -> ClovaModel:
        return ClovaModel(
            "hcx", client=http, model=model, api_key=KEY, base_url=studio.url, options=options
        )

    return build


def test_api_version_follows_the_model() -> None:
    assert default_api_version("HCX-003") == "v1"
    assert default_api_version("HCX-DASH-001") == "v1"
    assert default_api_version("HCX-005") == "v3"
    assert default_api_version("HCX-007") == "v3"


@pytest.mark.parametrize("model", ["HCX-003", "HCX-005"])
async def test_streams_tokens_and_never_appends_the_result(
    studio: FakeClovaStudio, make: Any, model: str
) -> None:
    studio.enqueue("text split=1 keepalive=1 crlf=1")
    chunks = await collect(make(model))
    assert text_of(chunks) == DEFAULT_TEXT  # not twice: the result repeats it whole
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 16
    request = studio.requests[-1]
    version = "v1" if model == "HCX-003" else "v3"
    assert request.path == f"/{version}/chat-completions/{model}"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["accept"] == "text/event-stream"


async def test_v1_request_fields(studio: FakeClovaStudio, make: Any) -> None:
    model = make(
        "HCX-003", top_k=0, top_p=0.8, repeat_penalty=5.0, include_ai_filters=False, seed=7
    )
    params = GenerationParams(max_new_tokens=300, temperature=0.0, stop=("###",))
    await collect(model, params=params)
    body = studio.requests[-1].json
    assert body == {
        "messages": [
            {"role": "system", "content": "친절하게 답하세요."},
            {"role": "user", "content": "안녕하세요"},
        ],
        "maxTokens": 300,
        "temperature": 0.01,  # v1 refuses 0
        "stopBefore": ["###"],
        "topK": 0,
        "topP": 0.8,
        "repeatPenalty": 5.0,
        "includeAiFilters": False,
        "seed": 7,
    }


async def test_v1_keeps_tool_turns_as_text_and_sends_no_tools(
    studio: FakeClovaStudio, make: Any
) -> None:
    call = ToolCall("call_1", "get_weather", {"city": "서울"})
    messages = [
        Message(Role.USER, "서울 날씨 알려줘"),
        Message(Role.ASSISTANT, "", tool_calls=[call]),
        Message(Role.TOOL, '{"city":"서울","condition":"맑음"}', tool_call_id="call_1"),
        Message(Role.ASSISTANT, "서울은 맑습니다."),
        Message(Role.USER, "부산은?"),
    ]
    await collect(make("HCX-003"), messages, GenerationParams(tools=(WEATHER,)))
    body = studio.requests[-1].json
    assert "tools" not in body
    assert body["messages"] == [
        {"role": "user", "content": "서울 날씨 알려줘"},
        {
            "role": "assistant",
            "content": '[tool call] get_weather {"city":"서울"}\n'
            '[tool result] {"city":"서울","condition":"맑음"}\n서울은 맑습니다.',
        },
        {"role": "user", "content": "부산은?"},
    ]


async def test_v3_request_with_tools_and_tool_messages(studio: FakeClovaStudio, make: Any) -> None:
    call = ToolCall("call_1", "get_weather", {"city": "서울"})
    messages = [
        Message(Role.USER, "서울 날씨 알려줘"),
        Message(Role.ASSISTANT, "", tool_calls=[call]),
        Message(Role.TOOL, '{"condition":"맑음"}', tool_call_id="call_1"),
    ]
    model = make("HCX-005", tool_choice="auto", repetition_penalty=1.1)
    await collect(model, messages, GenerationParams(max_new_tokens=256, tools=(WEATHER,)))
    body = studio.requests[-1].json
    assert body["maxTokens"] == 1024  # function calling refuses less
    assert body["toolChoice"] == "auto"
    assert body["repetitionPenalty"] == 1.1
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "날씨",
                "parameters": WEATHER.parameters,
            },
        }
    ]
    assert body["messages"][1] == {
        "role": "assistant",
        "content": "",
        "toolCalls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": {"city": "서울"}},
            }
        ],
    }
    assert body["messages"][2] == {
        "role": "tool",
        "toolCallId": "call_1",
        "content": '{"condition":"맑음"}',
    }


async def test_tool_choice_is_not_sent_without_tools(studio: FakeClovaStudio, make: Any) -> None:
    await collect(make("HCX-005", tool_choice="auto"))
    assert "toolChoice" not in studio.requests[-1].json


@pytest.mark.parametrize("variant", ["", "bare_result"])
async def test_v3_tool_calls_from_partial_json_or_the_result(
    studio: FakeClovaStudio, make: Any, variant: str
) -> None:
    studio.enqueue(f"tools variant={variant}" if variant else "tools")
    chunks = await collect(make("HCX-005"), params=GenerationParams(tools=(WEATHER,)))
    assert [c for c in chunks if c.tool_calls] == [chunks[-1]]
    assert chunks[-1].tool_calls == [
        ToolCall("call_seoul", "get_weather", {"city": "서울"}),
        ToolCall("call_busan", "get_weather", {"city": "부산"}),
    ]
    assert chunks[-1].finish_reason == "tool_calls"


async def test_hcx_007_thinking(studio: FakeClovaStudio, make: Any) -> None:
    model = make("HCX-007", thinking="medium")
    chunks = await collect(model, params=GenerationParams(stop=("###",)))
    assert "".join(c.reasoning for c in chunks) == "사용자가 인사했다."
    assert text_of(chunks) == DEFAULT_TEXT
    body = studio.requests[-1].json
    assert body["thinking"] == {"effort": "medium"}
    assert body["maxCompletionTokens"] == 512 and "maxTokens" not in body
    assert "stop" not in body  # refused together with thinking


async def test_legacy_keys_use_the_app_prefix_and_both_headers(
    studio: FakeClovaStudio, http: UpstreamClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_CLOVA_KEY", KEY)
    monkeypatch.setenv("TEST_CLOVA_GW", GW_KEY)
    config = ModelSettings(
        provider="clova",
        base_url=studio.url,
        model="HCX-003",
        api_key_env="TEST_CLOVA_KEY",
        options={"apigw_api_key_env": "TEST_CLOVA_GW", "app": "serviceapp"},
    )
    chunks = await collect(ClovaModel.from_settings("hcx", config, http))
    assert text_of(chunks) == DEFAULT_TEXT
    request = studio.requests[-1]
    assert request.path == "/serviceapp/v1/chat-completions/HCX-003"
    assert request.headers["x-ncp-clovastudio-api-key"] == KEY
    assert request.headers["x-ncp-apigw-api-key"] == GW_KEY
    assert "authorization" not in request.headers


def test_a_missing_gateway_key_is_a_config_error(
    http: UpstreamClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TEST_CLOVA_GW", raising=False)
    config = ModelSettings(
        provider="clova", model="HCX-003", options={"apigw_api_key_env": "TEST_CLOVA_GW"}
    )
    with pytest.raises(ConfigError, match="TEST_CLOVA_GW"):
        ClovaModel.from_settings("hcx", config, http)


@pytest.mark.parametrize(
    "options",
    [{"temprature": 1}, {"repetition_penalty": 1.1}, {"thinking": "max"}, {"app": "prodapp"}],
)
def test_bad_options_are_config_errors(make: Any, options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        make("HCX-003", **options)


async def test_request_id_header(studio: FakeClovaStudio, make: Any) -> None:
    await collect(make(), params=GenerationParams(request_id="req-123"))
    assert studio.requests[-1].headers["x-ncp-clovastudio-request-id"] == "req-123"


async def test_a_json_answer_is_read_whole(studio: FakeClovaStudio, make: Any) -> None:
    studio.enqueue("json")
    chunks = await collect(make("HCX-003"))
    assert text_of(chunks) == DEFAULT_TEXT
    assert chunks[-1].finish_reason == "stop"


async def test_signal_after_the_result_is_harmless(studio: FakeClovaStudio, make: Any) -> None:
    studio.enqueue("text variant=signal")
    assert text_of(await collect(make("HCX-003"))) == DEFAULT_TEXT


async def test_length_finish(studio: FakeClovaStudio, make: Any) -> None:
    studio.enqueue("length tokens=3")
    chunks = await collect(make("HCX-003"))
    assert chunks[-1].finish_reason == "length"


@pytest.mark.parametrize(
    ("kind", "error_type", "code", "retryable"),
    [
        ("rate_limit", RateLimited, "rate_limited", True),
        ("overloaded", RateLimited, "upstream_overloaded", True),
        ("context", ProviderError, "context_length_exceeded", False),
        ("bad_request", ProviderError, "upstream_bad_request", False),
        ("model", ProviderError, "model_not_found", False),
        ("unauthorized", ProviderError, "upstream_auth", False),
        ("server_error", ProviderError, "upstream_error", True),
        ("timeout", ProviderTimeout, "provider_timeout", True),
        ("error_event", ProviderError, "upstream_error", True),
        ("cut", ProviderError, "upstream_truncated", True),
    ],
)
async def test_errors_map_to_the_tree(
    studio: FakeClovaStudio,
    make: Any,
    kind: str,
    error_type: type[ProviderError],
    code: str,
    retryable: bool,
) -> None:
    studio.enqueue(kind)
    with pytest.raises(ProviderError) as caught:
        await collect(make())
    error = caught.value
    assert type(error) is error_type
    assert error.code == code
    assert is_retryable(error) is retryable
    assert error.provider == "hcx"
    if kind == "rate_limit":
        assert isinstance(error, RateLimited) and error.retry_after == 1.0


async def test_a_wrong_key_is_not_retried(studio: FakeClovaStudio, http: UpstreamClient) -> None:
    model = ClovaModel("hcx", client=http, model="HCX-005", api_key="nv-wrong", base_url=studio.url)
    with pytest.raises(ProviderError) as caught:
        await collect(model, user())
    assert caught.value.code == "upstream_auth" and not is_retryable(caught.value)
    assert "nv-wrong" not in str(caught.value)


async def test_helper_apis_of_the_fake(studio: FakeClovaStudio, http: UpstreamClient) -> None:
    messages = [{"role": "system", "content": "s"}] + [
        {"role": r, "content": "가" * 2000} for r in ("user", "assistant") * 3
    ]
    body = orjson.dumps({"maxTokens": 500, "messages": messages})
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    async with await http.request(
        "POST", "/v1/api-tools/sliding/chat-messages/HCX-003", body=body, headers=headers
    ) as response:
        kept = orjson.loads(await response.read())["result"]["messages"]
    assert [m["role"] for m in kept] == ["system", "user", "assistant"]
    async with await http.request(
        "POST", "/v3/api-tools/chat-tokenize/HCX-005", body=body, headers=headers
    ) as response:
        counted = orjson.loads(await response.read())["result"]["messages"]
    assert counted[1]["count"] == 1000
