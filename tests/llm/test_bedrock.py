"""Claude on Bedrock: SigV4 or Bearer auth, event-stream frames, metrics, errors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from daehwa.config import ModelSettings
from daehwa.errors import ProviderError, ProviderTimeout, RateLimited
from daehwa.llm.base import GenerationParams, ToolSpec
from daehwa.llm.bedrock import AwsAuth, BedrockModel, bedrock_error, endpoint_for
from daehwa.llm.http import UpstreamClient
from daehwa.llm.retry import is_retryable
from tests.fakes.bedrock_upstream import FakeBedrockRuntime
from tests.fakes.scenario import DEFAULT_TEXT
from tests.llm.native_harness import AWS_KEYS, BEDROCK_MODEL, aws_environment
from tests.llm.streams import collect, text_of

WEATHER = ToolSpec(
    "get_weather", "날씨", {"type": "object", "properties": {"city": {"type": "string"}}}
)


@pytest.fixture
def aws_env(tmp_path: Any) -> Iterator[None]:
    with aws_environment(str(tmp_path)):
        yield


@pytest.fixture
async def runtime(aws_env: None) -> AsyncIterator[FakeBedrockRuntime]:
    async with FakeBedrockRuntime(credentials=AWS_KEYS) as server:
        yield server


@pytest.fixture
async def http(runtime: FakeBedrockRuntime) -> AsyncIterator[UpstreamClient]:
    client = UpstreamClient(runtime.url, read_timeout=10.0)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def make(runtime: FakeBedrockRuntime, http: UpstreamClient) -> Any:
    def build(api_key_env: str = "", **options: Any) -> BedrockModel:
        config = ModelSettings(
            provider="bedrock",
            base_url=runtime.url,
            model=BEDROCK_MODEL,
            api_key_env=api_key_env,
            options=options,
        )
        return BedrockModel.from_settings("claude-br", config, http)

    return build


@pytest.mark.parametrize("spec", ["text", "text split=1"])
async def test_streams_signed_requests(runtime: FakeBedrockRuntime, make: Any, spec: str) -> None:
    runtime.enqueue(spec)
    chunks = await collect(make())
    assert text_of(chunks) == DEFAULT_TEXT
    final = chunks[-1]
    assert final.finish_reason == "stop"
    # The usage is amazon-bedrock-invocationMetrics' (the fake counts its own way).
    assert final.usage is not None and final.usage.completion_tokens == 16
    request = runtime.requests[-1]
    assert (
        request.path
        == "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/invoke-with-response-stream"
    )
    assert runtime.model_ids[-1] == BEDROCK_MODEL
    assert request.headers["authorization"].startswith(
        f"AWS4-HMAC-SHA256 Credential={AWS_KEYS[0]}/"
    )
    assert "/us-east-1/bedrock/aws4_request" in request.headers["authorization"]
    assert request.headers["accept"] == "application/vnd.amazon.eventstream"


async def test_body_has_the_bedrock_version_and_no_model(
    runtime: FakeBedrockRuntime, make: Any
) -> None:
    await collect(make(beta=["token-efficient-tools-2025-02-19"], top_k=5))
    body = runtime.requests[-1].json
    assert body["anthropic_version"] == "bedrock-2023-05-31"
    assert body["anthropic_beta"] == ["token-efficient-tools-2025-02-19"]
    assert body["top_k"] == 5
    assert "model" not in body and "stream" not in body
    assert "anthropic-beta" not in runtime.requests[-1].headers


async def test_a_wrong_secret_fails_the_signature(
    runtime: FakeBedrockRuntime, make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(ProviderError) as caught:
        await collect(make())
    assert caught.value.code == "upstream_auth" and not is_retryable(caught.value)


async def test_session_token_is_signed_too(
    runtime: FakeBedrockRuntime, make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session-token-123")
    assert text_of(await collect(make())) == DEFAULT_TEXT
    headers = runtime.requests[-1].headers
    assert headers["x-amz-security-token"] == "session-token-123"
    assert "x-amz-security-token" in headers["authorization"]


async def test_a_bedrock_api_key_is_sent_as_bearer(
    runtime: FakeBedrockRuntime, make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", "bedrock-api-key-abc")
    await collect(make())
    assert runtime.requests[-1].headers["authorization"] == "Bearer bedrock-api-key-abc"


async def test_no_credentials_is_a_clear_error(
    runtime: FakeBedrockRuntime, http: UpstreamClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    model = BedrockModel(
        "claude-br",
        client=http,
        model=BEDROCK_MODEL,
        auth=AwsAuth("us-east-1"),
        base_url=runtime.url,
    )
    with pytest.raises(ProviderError, match="no AWS credentials") as caught:
        await collect(model)
    assert caught.value.code == "upstream_auth"
    assert runtime.requests == type(runtime.requests)()  # nothing was sent


async def test_tool_calls(runtime: FakeBedrockRuntime, make: Any) -> None:
    runtime.enqueue("tools split=1")
    chunks = await collect(make(), params=GenerationParams(tools=(WEATHER,)))
    assert [(c.name, c.arguments) for c in chunks[-1].tool_calls] == [
        ("get_weather", {"city": "서울"}),
        ("get_weather", {"city": "부산"}),
    ]
    assert chunks[-1].finish_reason == "tool_calls"


@pytest.mark.parametrize(
    ("kind", "error_type", "code", "retryable"),
    [
        ("throttled", RateLimited, "rate_limited", True),
        ("forbidden", ProviderError, "upstream_auth", False),
        ("validation", ProviderError, "upstream_bad_request", False),
        ("context", ProviderError, "context_length_exceeded", False),
        ("not_found", ProviderError, "model_not_found", False),
        ("server_error", ProviderError, "upstream_error", True),
        ("unavailable", ProviderError, "upstream_error", True),
        ("throttle_frame", RateLimited, "rate_limited", True),
        ("stream_error", ProviderError, "upstream_error", True),
        ("cut", ProviderError, "upstream_truncated", True),
        ("truncate", ProviderError, "upstream_disconnected", True),
    ],
)
async def test_errors_map_to_the_tree(
    runtime: FakeBedrockRuntime,
    make: Any,
    kind: str,
    error_type: type[ProviderError],
    code: str,
    retryable: bool,
) -> None:
    runtime.enqueue(kind)
    with pytest.raises(ProviderError) as caught:
        await collect(make())
    error = caught.value
    assert type(error) is error_type
    assert error.code == code
    assert is_retryable(error) is retryable
    assert error.provider == "claude-br"


def test_model_timeout_and_not_ready() -> None:
    timeout = bedrock_error("b", 408, "ModelTimeoutException", "slow", {})
    assert isinstance(timeout, ProviderTimeout) and is_retryable(timeout)
    mid = bedrock_error("b", None, "modelTimeoutException", "slow", {})
    assert isinstance(mid, ProviderTimeout) and is_retryable(mid)
    assert is_retryable(bedrock_error("b", 429, "ModelNotReadyException", "warming", {}))
    assert not is_retryable(bedrock_error("b", None, "validationException", "bad", {}))


def test_endpoint_defaults_to_the_regional_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-northeast-2")
    config = ModelSettings(provider="bedrock", model=BEDROCK_MODEL)
    assert endpoint_for(config) == "https://bedrock-runtime.ap-northeast-2.amazonaws.com"
    config = ModelSettings(provider="bedrock", model=BEDROCK_MODEL, options={"region": "eu-west-1"})
    assert endpoint_for(config) == "https://bedrock-runtime.eu-west-1.amazonaws.com"


async def test_warm_resolves_credentials_before_the_first_request(
    runtime: FakeBedrockRuntime, make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = make()
    await model.warm()
    # Credentials are frozen now: later changes to the environment do not matter for a while.
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    assert text_of(await collect(model)) == DEFAULT_TEXT
