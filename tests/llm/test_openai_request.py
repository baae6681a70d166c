"""What OpenAIModel sends: messages, parameters, per-flavour options and headers."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from daehwa.config import ModelSettings
from daehwa.errors import ConfigError
from daehwa.llm.base import GenerationParams, ToolSpec
from daehwa.llm.http import UpstreamClient
from daehwa.llm.openai import OpenAIModel, guess_flavor, wire_message
from daehwa.messages import Message, Role, ToolCall
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.llm.conftest import ModelFactory
from tests.llm.streams import API_KEY, collect, user

CONVERSATION = [
    Message(Role.SYSTEM, "날씨 비서입니다."),
    Message(Role.USER, "서울 날씨 알려줘"),
    Message(
        Role.ASSISTANT,
        "",
        tool_calls=[ToolCall("call_1", "get_weather", {"location": "서울"})],
    ),
    Message(Role.TOOL, '{"temp": 21}', tool_call_id="call_1"),
    Message(Role.ASSISTANT, "서울은 21도입니다."),
    Message(Role.USER, "부산은?"),
]


async def sent(fake: FakeOpenAIUpstream, model: OpenAIModel, **params: Any) -> dict[str, Any]:
    await collect(model, CONVERSATION, GenerationParams(**params))
    body = fake.requests[-1].json
    assert isinstance(body, dict)
    return body


async def test_messages_on_the_wire(fake: FakeOpenAIUpstream, make_model: ModelFactory) -> None:
    body = await sent(fake, make_model())
    assert body["messages"] == [
        {"role": "system", "content": "날씨 비서입니다."},
        {"role": "user", "content": "서울 날씨 알려줘"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location":"서울"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
        {"role": "assistant", "content": "서울은 21도입니다."},
        {"role": "user", "content": "부산은?"},
    ]
    arguments = body["messages"][2]["tool_calls"][0]["function"]["arguments"]
    assert orjson.loads(arguments) == {"location": "서울"}


async def test_generation_parameters(fake: FakeOpenAIUpstream, make_model: ModelFactory) -> None:
    tool = ToolSpec("get_weather", "날씨", {"type": "object"})
    body = await sent(
        fake,
        make_model(model="glm-4.5", flavor="vllm"),
        max_new_tokens=77,
        temperature=0.3,
        stop=("\n\n", "끝"),
        tools=(tool,),
    )
    assert body["model"] == "glm-4.5"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 77
    assert "max_completion_tokens" not in body
    assert body["temperature"] == 0.3
    assert body["stop"] == ["\n\n", "끝"]
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "날씨",
                "parameters": {"type": "object"},
            },
        }
    ]


async def test_no_temperature_or_stop_unless_given(
    fake: FakeOpenAIUpstream, make_model: ModelFactory
) -> None:
    body = await sent(fake, make_model())
    assert not {"temperature", "stop", "tools", "thinking"} & set(body)


async def test_configured_temperature_is_the_default(
    fake: FakeOpenAIUpstream, client: UpstreamClient
) -> None:
    model = OpenAIModel("m", client=client, base_url=fake.base_url, model="x", temperature=0.6)
    assert (await sent(fake, model))["temperature"] == 0.6
    assert (await sent(fake, model, temperature=0.1))["temperature"] == 0.1


async def test_openai_flavour_fields(fake: FakeOpenAIUpstream, make_model: ModelFactory) -> None:
    body = await sent(
        fake, make_model(flavor="openai"), max_new_tokens=9, cache_key="conv-1", request_id="r-1"
    )
    assert body["max_completion_tokens"] == 9
    assert "max_tokens" not in body
    assert body["prompt_cache_key"] == "conv-1"
    assert "request_id" not in body


async def test_max_tokens_field_option(fake: FakeOpenAIUpstream, make_model: ModelFactory) -> None:
    body = await sent(fake, make_model(flavor="openai", max_tokens_field="max_tokens"))
    assert body["max_tokens"] == 512


@pytest.mark.parametrize(("thinking", "kind"), [(True, "enabled"), (False, "disabled")])
async def test_zai_thinking_and_request_id(
    fake: FakeOpenAIUpstream, make_model: ModelFactory, thinking: bool, kind: str
) -> None:
    fake.enqueue("text flavor=zai")
    body = await sent(fake, make_model(flavor="zai", thinking=thinking), request_id="req-42")
    assert body["thinking"] == {"type": kind}
    assert body["request_id"] == "req-42"
    assert body["max_tokens"] == 512
    assert "chat_template_kwargs" not in body


async def test_vllm_passthrough_and_extra_body(
    fake: FakeOpenAIUpstream, make_model: ModelFactory
) -> None:
    model = make_model(
        flavor="vllm",
        thinking=False,
        top_k=20,
        min_p=0.05,
        repetition_penalty=1.1,
        chat_template_kwargs={"custom": 1},
        extra_body={"guided_json": {"type": "object"}},
    )
    body = await sent(fake, model)
    assert body["chat_template_kwargs"] == {"custom": 1, "enable_thinking": False}
    assert (body["top_k"], body["min_p"], body["repetition_penalty"]) == (20, 0.05, 1.1)
    assert body["guided_json"] == {"type": "object"}


async def test_headers(fake: FakeOpenAIUpstream, make_model: ModelFactory) -> None:
    await collect(make_model(headers={"OpenAI-Organization": "org-1"}))
    headers = fake.requests[-1].headers
    assert headers["authorization"] == f"Bearer {API_KEY}"
    assert headers["accept"] == "text/event-stream"
    assert headers["content-type"] == "application/json"
    assert headers["openai-organization"] == "org-1"


async def test_no_key_no_authorization_header(
    fake: FakeOpenAIUpstream, make_model: ModelFactory
) -> None:
    await collect(make_model(api_key=None, flavor="ollama"))
    assert "authorization" not in fake.requests[-1].headers


async def test_key_read_from_env_with_its_newline_stripped(
    fake: FakeOpenAIUpstream, client: UpstreamClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_ZAI_KEY", API_KEY + "\n")
    config = ModelSettings(
        provider="openai", base_url=fake.base_url, model="glm-4.5", api_key_env="TEST_ZAI_KEY"
    )
    model = OpenAIModel.from_settings("glm", config, client)
    await collect(model)
    assert fake.requests[-1].headers["authorization"] == f"Bearer {API_KEY}"


async def test_base_url_path_is_kept(fake: FakeOpenAIUpstream, client: UpstreamClient) -> None:
    model = OpenAIModel("m", client=client, base_url=fake.url + "/api/paas/v4/", model="glm-4.5")
    await collect(model)
    assert fake.requests[-1].path == "/api/paas/v4/chat/completions"


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"temprature": 1}, ["temprature"]),
        ({"flavor": "azure"}, ["flavor"]),
        ({"flavor": "ollama", "thinking": False}, ["thinking", "zai or vllm"]),
        ({"thinking": "yes"}, ["thinking"]),
        ({"max_tokens_field": "tokens"}, ["max_tokens_field"]),
        ({"extra_body": [1]}, ["extra_body"]),
    ],
)
def test_bad_options_fail_fast(options: dict[str, Any], words: list[str]) -> None:
    client = UpstreamClient("http://127.0.0.1:1")
    with pytest.raises(ConfigError) as info:
        OpenAIModel(
            "glm", client=client, base_url="http://127.0.0.1:1/v1", model="m", options=options
        )
    for word in ["models.glm", *words]:
        assert word in info.value.message


@pytest.mark.parametrize("missing", ["base_url", "model"])
def test_from_settings_requires_url_and_model(missing: str) -> None:
    values = {"base_url": "http://127.0.0.1:1/v1", "model": "m", missing: ""}
    config = ModelSettings(provider="openai", **values)
    with pytest.raises(ConfigError, match=missing):
        OpenAIModel.from_settings("x", config, UpstreamClient("http://127.0.0.1:1"))


@pytest.mark.parametrize(
    ("url", "flavor"),
    [
        ("https://api.openai.com/v1", "openai"),
        ("https://api.z.ai/api/paas/v4", "zai"),
        ("https://open.bigmodel.cn/api/paas/v4", "zai"),
        ("http://127.0.0.1:11434/v1", "ollama"),
        ("http://ollama.internal/v1", "ollama"),
        ("http://gpu-box:8000/v1", "vllm"),
    ],
)
def test_guess_flavor(url: str, flavor: str) -> None:
    assert guess_flavor(url) == flavor


def test_tool_message_without_id_and_plain_assistant() -> None:
    assert wire_message(Message(Role.TOOL, "x")) == {
        "role": "tool",
        "tool_call_id": "",
        "content": "x",
    }
    assert wire_message(user("안녕")[1]) == {"role": "user", "content": "안녕"}
