"""The official openai client, unchanged, against daehwa."""

from __future__ import annotations

import openai
import pytest

from tests.api.conftest import ServerFactory
from tests.api.models import FailingModel
from tests.api.test_turns import history, new_conversation


def client(server, headers):  # type: ignore[no-untyped-def]
    key = headers["authorization"].split()[1]
    return openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)


async def test_models_and_a_plain_completion(make_server: ServerFactory) -> None:
    server = await make_server()
    me = await server.user("minji")
    api = client(server, me)
    models = await api.models.list()
    assert [m.id for m in models.data] == ["scripted"]
    done = await api.chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "안녕하세요"}]
    )
    assert done.choices[0].message.content == "답: 안녕하세요"
    assert done.choices[0].finish_reason == "stop"
    await api.close()


async def test_streaming_with_usage(make_server: ServerFactory) -> None:
    server = await make_server()
    me = await server.user("minji")
    api = client(server, me)
    stream = await api.chat.completions.create(
        model="scripted",
        messages=[{"role": "system", "content": "짧게"}, {"role": "user", "content": "줄\n바꿈"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage = "", None, None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    assert text == "답: 줄\n바꿈"
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens > 0
    await api.close()


async def test_continuing_a_stored_conversation(make_server: ServerFactory) -> None:
    server = await make_server()
    me = await server.user("minji")
    cid = await new_conversation(server, me)
    api = client(server, me)
    await api.chat.completions.create(
        model="scripted",
        messages=[{"role": "user", "content": "기억해"}],
        metadata={"conversation_id": cid},
    )
    assert [m["content"] for m in await history(server, me, cid)] == ["기억해", "답: 기억해"]
    await api.close()


async def test_errors_reach_the_client_as_openai_errors(make_server: ServerFactory) -> None:
    server = await make_server({"bad": FailingModel()})
    me = await server.user("minji")
    api = client(server, me)
    with pytest.raises(openai.NotFoundError):
        await api.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError):
        await api.chat.completions.create(model="bad", messages=[])
    with pytest.raises(openai.APIStatusError) as failed:
        await api.chat.completions.create(model="bad", messages=[{"role": "user", "content": "x"}])
    assert failed.value.status_code == 502
    bad = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="dh-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        await bad.models.list()
    await api.close()
    await bad.close()
