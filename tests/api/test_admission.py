"""Beyond ``[chat] max_running_replies`` a turn is refused with 503 busy, and nothing is stored."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from daehwa.llm.base import Chunk, GenerationParams
from daehwa.messages import Message, Usage
from tests.api.conftest import ServerFactory
from tests.api.test_turns import history, new_conversation
from tests.api.test_ws import connect


class GatedModel:
    """Says "시작", then holds every reply open until ``gate`` is set."""

    name = "gated"

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.started = 0
        self._changed = asyncio.Condition()

    async def until_started(self, count: int) -> None:
        async with asyncio.timeout(10), self._changed:
            await self._changed.wait_for(lambda: self.started >= count)

    async def stream(
        self, messages: Sequence[Message], params: GenerationParams
    ) -> AsyncIterator[Chunk]:
        async with self._changed:
            self.started += 1
            self._changed.notify_all()
        yield Chunk(text="시작")
        await self.gate.wait()
        yield Chunk(text=" 끝")
        yield Chunk(finish_reason="stop", usage=Usage(1, 2))

    async def aclose(self) -> None:
        return None


async def test_a_send_beyond_the_bound_is_refused_before_anything_is_stored(
    make_server: ServerFactory,
) -> None:
    model = GatedModel()
    server = await make_server(
        {"gated": model}, chat={"max_running_replies": 2, "reply_queue_timeout": 0}
    )
    me = await server.user("minji")
    busy = [await new_conversation(server, me) for _ in range(2)]
    spare = await new_conversation(server, me)
    running = [
        asyncio.create_task(
            server.call("POST", f"/v1/conversations/{cid}/messages", me, json={"content": "질문"})
        )
        for cid in busy
    ]
    await model.until_started(2)

    for accept in ("application/json", "text/event-stream"):
        async with server.http.post(
            f"{server.url}/v1/conversations/{spare}/messages",
            headers={**me, "accept": accept},
            json={"content": "하나 더", "request_id": "r-1"},
        ) as response:
            assert response.status == 503
            assert response.headers["retry-after"] == "1"
            assert (await response.json())["error"]["code"] == "busy"
    assert await history(server, me, spare) == []
    for cid in busy:  # the running turns only
        assert [m["status"] for m in await history(server, me, cid)] == ["complete", "streaming"]
    assert server.app_parts.service.admission.refused == 2

    model.gate.set()
    for task in running:
        status, data = await task
        assert status == 200
        assert data["assistant_message"]["status"] == "complete"
    status, data = await server.call(
        "POST", f"/v1/conversations/{spare}/messages", me, json={"content": "하나 더"}
    )
    assert status == 200
    assert data["assistant_message"]["content"] == "시작 끝"
    assert [m["status"] for m in await history(server, me, spare)] == ["complete", "complete"]


async def test_a_turn_waits_for_a_slot_within_the_queue_timeout(make_server: ServerFactory) -> None:
    model = GatedModel()
    server = await make_server(
        {"gated": model}, chat={"max_running_replies": 1, "reply_queue_timeout": 30}
    )
    me = await server.user("minji")
    first, second = await new_conversation(server, me), await new_conversation(server, me)
    running = asyncio.create_task(
        server.call("POST", f"/v1/conversations/{first}/messages", me, json={"content": "1"})
    )
    await model.until_started(1)
    waiting = asyncio.create_task(
        server.call("POST", f"/v1/conversations/{second}/messages", me, json={"content": "2"})
    )
    admission = server.app_parts.service.admission
    for _ in range(1000):  # until the turn waits for a slot (10 s at most)
        if admission.waiting:
            break
        await asyncio.sleep(0.01)
    assert admission.waiting == 1
    assert await history(server, me, second) == []  # nothing stored while it waits
    model.gate.set()
    for task in (running, waiting):
        status, data = await task
        assert status == 200
        assert data["assistant_message"]["status"] == "complete"
    assert admission.refused == 0


async def test_a_chat_frame_beyond_the_bound_gets_a_busy_error_frame(
    make_server: ServerFactory,
) -> None:
    model = GatedModel()
    server = await make_server(
        {"gated": model}, chat={"max_running_replies": 1, "reply_queue_timeout": 0}
    )
    me = await server.user("minji")
    first, second = await new_conversation(server, me), await new_conversation(server, me)
    ws = await connect(server, me)
    await ws.send_json(
        {"type": "chat", "request_id": "a", "conversation_id": first, "content": "1"}
    )
    await model.until_started(1)
    await ws.send_json(
        {"type": "chat", "request_id": "b", "conversation_id": second, "content": "2"}
    )
    async with asyncio.timeout(10):
        while True:
            frame = await ws.receive_json()
            if frame.get("request_id") == "b":
                break
    assert (frame["type"], frame["code"]) == ("error", "busy")
    assert await history(server, me, second) == []
    model.gate.set()
    await ws.close()


async def test_a_completion_beyond_the_bound_is_refused_too(make_server: ServerFactory) -> None:
    model = GatedModel()
    server = await make_server(
        {"gated": model}, chat={"max_running_replies": 1, "reply_queue_timeout": 0}
    )
    me = await server.user("minji")
    body = {"model": "gated", "messages": [{"role": "user", "content": "안녕"}]}
    running = asyncio.create_task(server.call("POST", "/v1/chat/completions", me, json=body))
    await model.until_started(1)
    status, data = await server.call("POST", "/v1/chat/completions", me, json=body)
    assert (status, data["error"]["code"]) == (503, "busy")
    assert model.started == 1
    model.gate.set()
    status, data = await running
    assert status == 200
    assert data["choices"][0]["message"]["content"] == "시작 끝"
