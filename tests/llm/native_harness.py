"""One way to start every provider against its fake upstream, for suites that run them all.

:func:`harness` yields a :class:`Harness`: the model (built from a
``[models.NAME]``-style :class:`ModelSettings`, as the server builds it), its
fake, and the fake's spec for each contract scenario (None: the provider has
no such behaviour).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

from daehwa.config import ModelSettings
from daehwa.llm.anthropic import AnthropicModel
from daehwa.llm.base import ChatModel
from daehwa.llm.bedrock import BedrockModel
from daehwa.llm.clova import ClovaModel
from daehwa.llm.http import UpstreamClient
from daehwa.llm.openai import OpenAIModel
from daehwa.llm.scripted import ScriptedModel
from tests.fakes.anthropic_upstream import FakeAnthropicUpstream
from tests.fakes.bedrock_upstream import FakeBedrockRuntime
from tests.fakes.clova_upstream import FakeClovaStudio
from tests.fakes.http_server import FakeHTTPServer
from tests.fakes.openai_upstream import FakeOpenAIUpstream

PROVIDERS = ("clova-v1", "clova-v3", "anthropic", "bedrock", "openai", "scripted")
CLOVA_KEY = "nv-test-0123456789"
ANTHROPIC_KEY = "sk-ant-test-0123456789"
OPENAI_KEY = "sk-test-0123456789"
AWS_KEYS = ("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
BEDROCK_MODEL = "anthropic.claude-3-5-haiku-20241022-v1:0"

#: Contract scenario → the spec each fake uses for it.
SPECS: dict[str, dict[str, str | None]] = {
    "clova-v1": {
        "text": "text split=1 keepalive=1",
        "tools": None,
        "stall": "stall",
        "rate_limit": "rate_limit",
        "server_error": "server_error",
        "unauthorized": "unauthorized",
        "error_after_200": "error_event",
        "truncate": "truncate",
        "silent": "text ttft=30",
    },
    "clova-v3": {
        "text": "text split=1 crlf=1",
        "tools": "tools",
        "stall": "stall",
        "rate_limit": "rate_limit",
        "server_error": "server_error",
        "unauthorized": "unauthorized",
        "error_after_200": "error_event",
        "truncate": "truncate",
        "silent": "text ttft=30",
    },
    "anthropic": {
        "text": "text split=1 keepalive=1",
        "tools": "tools",
        "stall": "stall",
        "rate_limit": "rate_limit",
        "server_error": "server_error",
        "unauthorized": "unauthorized",
        "error_after_200": "error_after_200",
        "truncate": "truncate",
        "silent": "text ttft=30",
    },
    "bedrock": {
        "text": "text split=1",
        "tools": "tools",
        "stall": "stall",
        "rate_limit": "throttled",
        "server_error": "server_error",
        "unauthorized": "forbidden",
        "error_after_200": "throttle_frame",
        "truncate": "truncate",
        "silent": "text ttft=30",
    },
    "openai": {
        "text": "text split=1 keepalive=1",
        "tools": "tools",
        "stall": "stall",
        "rate_limit": "rate_limit",
        "server_error": "server_error",
        "unauthorized": "unauthorized",
        "error_after_200": "error_chunk",
        "truncate": "truncate",
        "silent": "text ttft=30",
    },
}


@dataclass
class Harness:
    """A provider's model on its fake upstream."""

    provider: str
    model: ChatModel
    fake: FakeHTTPServer | None
    client: UpstreamClient | None
    specs: dict[str, str | None] = field(default_factory=dict)
    #: Whether a 429 from this fake carries Retry-After: 1.
    retry_after: float | None = 1.0

    def supports(self, scenario: str) -> bool:
        return self.specs.get(scenario) is not None

    def enqueue(self, scenario: str) -> None:
        spec = self.specs[scenario]
        assert spec is not None and self.fake is not None
        self.fake.enqueue(spec)  # type: ignore[attr-defined]

    def tool_results(self, body: dict[str, Any]) -> list[tuple[str, str]]:
        """``(call id, content)`` of the tool results in a recorded request body."""
        results: list[tuple[str, str]] = []
        for message in body.get("messages") or []:
            content = message.get("content")
            if message.get("role") == "tool":
                call_id = message.get("toolCallId") or message.get("tool_call_id")
                results.append((str(call_id), str(content)))
            elif isinstance(content, list):
                results += [
                    (b["tool_use_id"], b["content"])
                    for b in content
                    if b.get("type") == "tool_result"
                ]
        return results


@contextmanager
def aws_environment(tmp_dir: str) -> Iterator[None]:
    """Test AWS keys in the environment, and no config file, profile or metadata lookups."""
    saved = dict(os.environ)
    for name in list(os.environ):
        if name.startswith("AWS_"):
            del os.environ[name]
    os.environ.update(
        AWS_ACCESS_KEY_ID=AWS_KEYS[0],
        AWS_SECRET_ACCESS_KEY=AWS_KEYS[1],
        AWS_REGION="us-east-1",
        AWS_CONFIG_FILE=os.path.join(tmp_dir, "no-config"),
        AWS_SHARED_CREDENTIALS_FILE=os.path.join(tmp_dir, "no-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _settings(provider: str, base_url: str, model: str, **extra: Any) -> ModelSettings:
    return ModelSettings(provider=provider, base_url=base_url, model=model, **extra)  # type: ignore[arg-type]


@asynccontextmanager
async def harness(
    provider: str, tmp_dir: str, *, read_timeout: float = 60.0
) -> AsyncIterator[Harness]:
    """Start ``provider``'s fake and a model on it (``read_timeout``: the model's timeout)."""
    if provider == "scripted":
        yield Harness(provider, ScriptedModel(reply="안녕하세요 {input}"), None, None)
        return
    build: Callable[[UpstreamClient], ChatModel]
    fake: FakeHTTPServer
    retry_after: float | None = 1.0
    env: dict[str, str] = {}
    if provider.startswith("clova"):
        fake = FakeClovaStudio(api_key=CLOVA_KEY)
        model = "HCX-003" if provider == "clova-v1" else "HCX-005"
        env["TEST_CLOVA_KEY"] = CLOVA_KEY

        def build(client: UpstreamClient) -> ChatModel:
            config = _settings(
                "clova", fake.url, model, api_key_env="TEST_CLOVA_KEY", timeout=read_timeout
            )
            return ClovaModel.from_settings(provider, config, client)

    elif provider == "anthropic":
        fake = FakeAnthropicUpstream(api_key=ANTHROPIC_KEY)
        env["TEST_ANTHROPIC_KEY"] = ANTHROPIC_KEY

        def build(client: UpstreamClient) -> ChatModel:
            config = _settings(
                "anthropic",
                fake.url,
                "claude-sonnet-4-5",
                api_key_env="TEST_ANTHROPIC_KEY",
                timeout=read_timeout,
            )
            return AnthropicModel.from_settings(provider, config, client)

    elif provider == "bedrock":
        fake = FakeBedrockRuntime(credentials=AWS_KEYS)
        retry_after = None  # Bedrock sends no Retry-After

        def build(client: UpstreamClient) -> ChatModel:
            return BedrockModel.from_settings(
                provider,
                _settings("bedrock", fake.url, BEDROCK_MODEL, timeout=read_timeout),
                client,
            )

    elif provider == "openai":
        fake = FakeOpenAIUpstream(flavor="openai", api_key=OPENAI_KEY)
        env["TEST_OPENAI_KEY"] = OPENAI_KEY

        def build(client: UpstreamClient) -> ChatModel:
            config = _settings(
                "openai",
                f"{fake.url}/v1",
                "gpt-4o-mini",
                api_key_env="TEST_OPENAI_KEY",
                timeout=read_timeout,
            )
            return OpenAIModel.from_settings(provider, config, client)

    else:
        raise ValueError(provider)
    with aws_environment(tmp_dir):
        os.environ.update(env)
        async with fake:
            client = UpstreamClient(fake.url, read_timeout=10.0)
            model_obj = build(client)
            try:
                yield Harness(
                    provider, model_obj, fake, client, SPECS[provider], retry_after=retry_after
                )
            finally:
                await model_obj.aclose()
                await client.aclose()
