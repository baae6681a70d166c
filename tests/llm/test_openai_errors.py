"""Errors before the stream: mapped to the error tree with the right ``retryable``."""

from __future__ import annotations

import pytest

from daehwa.errors import ProviderError, ProviderTimeout, RateLimited
from daehwa.llm.base import GenerationParams
from daehwa.llm.http import UpstreamClient
from daehwa.llm.openai import OpenAIModel
from daehwa.llm.openai_errors import error_fields, error_from_response
from tests.fakes.openai_upstream import DEFAULT_TEXT, FakeOpenAIUpstream
from tests.llm.conftest import ModelFactory
from tests.llm.streams import API_KEY, collect, text_of, user

CASES = [
    # kind, flavor, error class, code, retryable, upstream status
    ("rate_limit", "openai", RateLimited, "rate_limited", True, 429),
    ("rate_limit", "zai", RateLimited, "rate_limited", True, 429),  # code 1302
    ("quota", "openai", ProviderError, "insufficient_quota", False, 429),
    ("quota", "zai", ProviderError, "insufficient_quota", False, 429),  # code 1113
    ("context_length", "openai", ProviderError, "context_length_exceeded", False, 400),
    ("bad_request", "vllm", ProviderError, "upstream_bad_request", False, 400),
    ("bad_request", "zai", ProviderError, "upstream_bad_request", False, 400),
    ("unauthorized", "openai", ProviderError, "upstream_auth", False, 401),
    ("unauthorized", "vllm", ProviderError, "upstream_auth", False, 401),  # flat error
    ("unauthorized", "zai", ProviderError, "upstream_auth", False, 401),
    ("not_found", "openai", ProviderError, "model_not_found", False, 404),
    ("not_found", "zai", ProviderError, "model_not_found", False, 400),  # code 1211
    ("server_error", "openai", ProviderError, "upstream_error", True, 500),
    ("overloaded", "openai", ProviderError, "upstream_error", True, 503),
]


@pytest.mark.parametrize(("kind", "flavor", "cls", "code", "retryable", "status"), CASES)
async def test_http_errors_map_to_the_tree(
    fake: FakeOpenAIUpstream,
    make_model: ModelFactory,
    kind: str,
    flavor: str,
    cls: type[ProviderError],
    code: str,
    retryable: bool,
    status: int,
) -> None:
    fake.enqueue(f"{kind} flavor={flavor}")
    with pytest.raises(ProviderError) as info:
        await collect(make_model(flavor=flavor))
    error = info.value
    assert type(error) is cls
    assert (error.code, error.retryable, error.upstream_status) == (code, retryable, status)
    assert error.provider == "test-model"
    assert API_KEY not in str(error)


async def test_legacy_vllm_flat_error_object(
    fake: FakeOpenAIUpstream, make_model: ModelFactory
) -> None:
    fake.enqueue("bad_request flavor=vllm legacy=1")
    with pytest.raises(ProviderError) as info:
        await collect(make_model(flavor="vllm"))
    assert "bad temperature" in info.value.message
    assert info.value.retryable is False


async def test_429_retry_after_then_200(fake: FakeOpenAIUpstream, make_model: ModelFactory) -> None:
    fake.enqueue("rate_limit retry_after=1", "text")
    model = make_model()
    with pytest.raises(RateLimited) as info:
        await collect(model)
    assert info.value.retry_after == 1.0
    # The provider does not retry by itself; the next call (the wrapper's retry) succeeds.
    assert len(fake.requests) == 1
    assert text_of(await collect(model)) == DEFAULT_TEXT


async def test_wrong_key_is_never_echoed(fake: FakeOpenAIUpstream, client: UpstreamClient) -> None:
    fake.api_key = "the-right-key"
    model = OpenAIModel("m", client=client, base_url=fake.base_url, model="gpt-4o", api_key=API_KEY)
    with pytest.raises(ProviderError) as info:
        await collect(model)
    assert info.value.code == "upstream_auth"
    assert API_KEY not in repr(info.value) and API_KEY not in info.value.message


def test_key_echoed_by_the_upstream_is_scrubbed() -> None:
    body = b'{"error":{"message":"Incorrect API key provided: ' + API_KEY.encode() + b'"}}'
    error = error_from_response("m", 401, body, {}, api_key=API_KEY)
    assert API_KEY not in error.message
    assert "***" in error.message


@pytest.mark.parametrize(
    ("headers", "retry_after"),
    [
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_headers(headers: dict[str, str], retry_after: float | None) -> None:
    error = error_from_response("m", 429, b"{}", headers)
    assert isinstance(error, RateLimited)
    assert error.retry_after == retry_after


@pytest.mark.parametrize(
    ("status", "header", "retryable"), [(500, "false", False), (400, "true", True)]
)
def test_x_should_retry_overrides_the_status(status: int, header: str, retryable: bool) -> None:
    error = error_from_response("m", status, b"", {"x-should-retry": header})
    assert error.retryable is retryable


@pytest.mark.parametrize(
    ("status", "retryable"), [(408, True), (409, True), (403, False), (422, False), (502, True)]
)
def test_status_alone_decides_retry(status: int, retryable: bool) -> None:
    assert error_from_response("m", status, b"<html>oops</html>", {}).retryable is retryable


def test_error_shapes() -> None:
    assert error_fields({"error": {"code": "1302", "message": "busy"}}) == ("busy", "1302")
    assert error_fields({"error": "Unauthorized"}) == ("Unauthorized", "")
    flat = {"object": "error", "message": "bad", "type": "BadRequestError", "code": 400}
    assert error_fields(flat) == ("bad", "BadRequestError")
    assert error_fields(None) == ("", "")


async def test_unreachable_upstream_is_retryable() -> None:
    # Port 9 (discard) on loopback has no listener here: the connection is refused.
    client = UpstreamClient("http://127.0.0.1:9/v1", connect_timeout=2.0)
    model = OpenAIModel("m", client=client, base_url="http://127.0.0.1:9/v1", model="x")
    with pytest.raises(ProviderError) as info:
        await collect(model)
    assert not isinstance(info.value, ProviderTimeout)
    assert (info.value.code, info.value.retryable, info.value.provider) == (
        "upstream_unreachable",
        True,
        "m",
    )
    await client.aclose()


async def test_stall_mid_stream_hits_the_read_timeout(fake: FakeOpenAIUpstream) -> None:
    client = UpstreamClient(fake.base_url)
    model = OpenAIModel(
        "m", client=client, base_url=fake.base_url, model="x", timeout=0.3, options={}
    )
    fake.enqueue("stall")
    seen: list[str] = []
    with pytest.raises(ProviderTimeout) as info:
        async for chunk in model.stream(user(), GenerationParams()):
            seen.append(chunk.text)
    assert seen, "text before the stall arrives"
    assert info.value.retryable is True
    assert info.value.provider == "m"
    await client.aclose()
