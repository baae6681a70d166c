"""Fixtures for provider tests: fake upstreams on real sockets and clients for them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from daehwa.llm.http import UpstreamClient
from daehwa.llm.openai import OpenAIModel
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.llm.streams import API_KEY


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAIUpstream]:
    """An OpenAI-flavoured fake upstream (tests switch flavour per scenario)."""
    async with FakeOpenAIUpstream(flavor="openai") as server:
        yield server


@pytest.fixture
async def client(fake: FakeOpenAIUpstream) -> AsyncIterator[UpstreamClient]:
    """The shared pooled client for the fake's origin."""
    http = UpstreamClient(fake.base_url, read_timeout=10.0)
    try:
        yield http
    finally:
        await http.aclose()


ModelFactory = Callable[..., OpenAIModel]


@pytest.fixture
def make_model(fake: FakeOpenAIUpstream, client: UpstreamClient) -> ModelFactory:
    """Build an OpenAIModel on the fake: ``make_model(flavor="zai", thinking=False)``."""

    def build(model: str = "glm-4.5", api_key: str | None = API_KEY, **options: Any) -> OpenAIModel:
        return OpenAIModel(
            "test-model",
            client=client,
            base_url=fake.base_url,
            model=model,
            api_key=api_key,
            options=options,
        )

    return build
