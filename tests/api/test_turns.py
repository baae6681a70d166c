"""A turn over the real HTTP API: streaming, JSON, statuses, what is stored."""

from __future__ import annotations

import asyncio
from typing import Any

from daehwa.llm.scripted import ScriptedModel
from tests.api.conftest import ServerFactory
from tests.api.models import FailingModel, SlowModel


async def new_conversation(server: Any, headers: dict[str, str], **body: Any) -> str:
    status, data = await server.call("POST", "/v1/conversations", headers, json=body)
    assert status == 201, data
    return str(data["id"])


async def history(server: Any, headers: dict[str, str], cid: str) -> list[dict[str, Any]]:
    status, data = await server.call("GET", f"/v1/conversations/{cid}/messages?limit=500", headers)
    assert status == 200
    return list(data["items"])


async def test_stream_meta_steps_deltas_done_and_stored(make_server: ServerFactory) -> None:
    server = await make_server()
    me = await server.user("minji")
    cid = await new_conversation(server, me, title="날씨")
    reply = await server.stream(
        "POST", f"/v1/conversations/{cid}/messages", me, json={"content": "서울 날씨 알려줘"}
    )
    assert reply.status == 200
    kinds = [kind for kind, _, _ in reply.events]
    assert kinds[0] == "meta"
    assert kinds[-1] == "done"
    assert "step" in kinds and "delta" in kinds
    assert [int(seq) for _, _, seq in reply.events] == list(range(1, len(reply.events) + 1))
    meta = reply.of("meta")[0]
    assert meta["conversation_id"] == cid and meta["model"] == "scripted"
    assert reply.text == "답: 서울 날씨 알려줘"
    done = reply.of("done")[0]
    assert done["status"] == "complete" and done["message_id"] == meta["message_id"]
    stored = await history(server, me, cid)
    assert [(m["role"], m["status"]) for m in stored] == [
        ("user", "complete"),
        ("assistant", "complete"),
    ]
    assert stored[1]["content"] == reply.text
    assert stored[0]["id"] == meta["user_message_id"]


async def test_json_send_returns_both_messages(make_server: ServerFactory) -> None:
    server = await make_server()
    me = await server.user("minji")
    cid = await new_conversation(server, me)
    status, data = await server.call(
        "POST", f"/v1/conversations/{cid}/messages", me, json={"content": "안녕"}
    )
    assert status == 200
    assert data["user_message"]["content"] == "안녕"
    assert data["assistant_message"]["content"] == "답: 안녕"
    assert data["assistant_message"]["status"] == "complete"


async def test_follow_up_reaches_the_model_with_the_earlier_turn(
    make_server: ServerFactory,
) -> None:
    server = await make_server({"echo": ScriptedModel("echo", reply="turns={turns}")})
    me = await server.user("minji")
    cid = await new_conversation(server, me)
    path = f"/v1/conversations/{cid}/messages"
    await server.call("POST", path, me, json={"content": "서울 날씨 알려줘"})
    _, data = await server.call("POST", path, me, json={"content": "부산은?"})
    assert data["assistant_message"]["content"] == "turns=2"
    _, context = await server.call("GET", f"/v1/conversations/{cid}/context", me)
    contents = [m["content"] for m in context["messages"]]
    assert "서울 날씨 알려줘" in contents and "부산은?" in contents
    assert context["messages"][0]["role"] == "system"


async def test_failure_before_first_token_is_stored_failed(make_server: ServerFactory) -> None:
    server = await make_server({"bad": FailingModel()})
    me = await server.user("minji")
    cid = await new_conversation(server, me)
    reply = await server.stream(
        "POST", f"/v1/conversations/{cid}/messages", me, json={"content": "안녕"}
    )
    assert [k for k, _, _ in reply.events][-1] == "error"
    assert reply.of("error")[0]["code"] == "upstream_error"
    stored = await history(server, me, cid)
    assert [(m["role"], m["status"]) for m in stored] == [
        ("user", "complete"),
        ("assistant", "failed"),
    ]


async def test_failure_after_first_token_is_stored_incomplete(make_server: ServerFactory) -> None:
    server = await make_server({"bad": FailingModel(["부분 ", "답변"])})
    me = await server.user("minji")
    cid = await new_conversation(server, me)
    reply = await server.stream(
        "POST", f"/v1/conversations/{cid}/messages", me, json={"content": "안녕"}
    )
    assert reply.text == "부분 답변"
    assert reply.events[-1][0] == "error"
    stored = await history(server, me, cid)
    assert stored[1]["status"] == "incomplete"
    assert stored[1]["content"] == "부분 답변"


async def test_no_first_token_in_time_gives_the_fallback_reply(make_server: ServerFactory) -> None:
    slow = SlowModel(["늦은 답"], first=5.0)
    server = await make_server(
        {"slow": slow}, resilience={"first_token_timeout": 0.2, "fallback_reply": "잠시 후 다시"}
    )
    me = await server.user("minji")
    cid = await new_conversation(server, me)
    reply = await server.stream(
        "POST", f"/v1/conversations/{cid}/messages", me, json={"content": "안녕"}
    )
    assert reply.text == "잠시 후 다시"
    assert reply.of("done")[0]["status"] == "fallback"
    stored = await history(server, me, cid)
    assert (stored[1]["status"], stored[1]["content"]) == ("fallback", "잠시 후 다시")
    assert slow.finished == 0


async def test_a_stall_after_the_first_token_ends_incomplete(make_server: ServerFactory) -> None:
    server = await make_server(
        {"slow": SlowModel(["시작", "끝"], gap=5.0)}, resilience={"stall_timeout": 0.2}
    )
    me = await server.user("minji")
    cid = await new_conversation(server, me)
    reply = await server.stream(
        "POST", f"/v1/conversations/{cid}/messages", me, json={"content": "안녕"}
    )
    assert reply.text == "시작"
    assert reply.of("error")[0]["code"] == "provider_timeout"
    stored = await history(server, me, cid)
    assert (stored[1]["status"], stored[1]["content"]) == ("incomplete", "시작")


async def test_disconnect_is_not_a_stop_and_resume_has_no_gap(make_server: ServerFactory) -> None:
    pieces = [f"{i} " for i in range(30)]
    server = await make_server({"slow": SlowModel(pieces, gap=0.01)})
    me = await server.user("minji")
    cid = await new_conversation(server, me)
    path = f"/v1/conversations/{cid}/messages"
    seen: list[tuple[int, str, dict[str, Any]]] = []
    import orjson

    from daehwa.llm.sse import SSEDecoder

    async with server.http.post(
        server.url + path,
        headers={**me, "accept": "text/event-stream"},
        json={"content": "세어 줘"},
    ) as response:
        decoder = SSEDecoder()
        async for data in response.content.iter_any():
            for event in decoder.feed(data):
                seen.append((int(event.id or 0), event.event, orjson.loads(event.data)))
            if sum(1 for _, kind, _ in seen if kind == "delta") >= 3:
                break  # drop the connection mid-reply
    message_id = next(d for _, kind, d in seen if kind == "meta")["message_id"]
    last = seen[-1][0]
    resumed = await server.stream(
        "GET", f"{path}/{message_id}/events", {**me, "last-event-id": str(last)}
    )
    seqs = [s for s, _, _ in seen] + [int(seq or 0) for _, _, seq in resumed.events]
    assert seqs == list(range(1, len(seqs) + 1))
    text = "".join(d["text"] for _, k, d in seen if k == "delta") + resumed.text
    assert text == "".join(pieces)
    stored = await history(server, me, cid)
    assert (stored[1]["status"], stored[1]["content"]) == ("complete", "".join(pieces))


async def test_stop_keeps_the_partial_reply_as_stopped(make_server: ServerFactory) -> None:
    server = await make_server({"slow": SlowModel([f"{i} " for i in range(100)], gap=0.02)})
    me = await server.user("minji")
    cid = await new_conversation(server, me)
    path = f"/v1/conversations/{cid}/messages"
    task = asyncio.create_task(server.stream("POST", path, me, json={"content": "길게"}))
    await asyncio.sleep(0.3)
    stored = await history(server, me, cid)
    reply_id = stored[1]["id"]
    status, stopped = await server.call("POST", f"{path}/{reply_id}/stop", me)
    assert status == 200
    assert stopped["status"] == "stopped"
    reply = await task
    assert reply.of("done")[0]["status"] == "stopped"
    stored = await history(server, me, cid)
    assert stored[1]["status"] == "stopped"
    assert stored[1]["content"] == reply.text and reply.text


async def test_same_request_id_five_times_is_one_turn(make_server: ServerFactory) -> None:
    slow = SlowModel(["하나"], first=0.05)
    server = await make_server({"slow": slow})
    me = await server.user("minji")
    cid = await new_conversation(server, me)
    path = f"/v1/conversations/{cid}/messages"
    body = {"content": "한 번만", "request_id": "req-1"}
    replies = await asyncio.gather(*(server.stream("POST", path, me, json=body) for _ in range(5)))
    assert {r.of("meta")[0]["message_id"] for r in replies} == {
        replies[0].of("meta")[0]["message_id"]
    }
    assert all(r.text == "하나" for r in replies)
    stored = await history(server, me, cid)
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert slow.calls == 1


async def test_history_survives_a_restart(make_server: ServerFactory, tmp_path: Any) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'keep.db'}"
    first = await make_server(store_url=db)
    me = await first.user("minji")
    cid = await new_conversation(first, me)
    await first.call("POST", f"/v1/conversations/{cid}/messages", me, json={"content": "기억해"})
    second = await make_server(store_url=db)
    stored = await history(second, me, cid)
    assert [m["content"] for m in stored] == ["기억해", "답: 기억해"]


async def test_fifty_concurrent_sends_on_one_conversation_keep_order(
    make_server: ServerFactory,
) -> None:
    server = await make_server({"echo": ScriptedModel("echo", reply="turns={turns} {input}")})
    me = await server.user("minji")
    cid = await new_conversation(server, me)
    path = f"/v1/conversations/{cid}/messages"
    results = await asyncio.gather(
        *(server.call("POST", path, me, json={"content": f"m{i}"}) for i in range(50))
    )
    assert all(status == 200 for status, _ in results)
    stored = await history(server, me, cid)
    assert len(stored) == 100
    assert [m["seq"] for m in stored] == list(range(1, 101))
    # Each reply follows its own message, and each turn saw every earlier reply.
    for n, (question, answer) in enumerate(zip(stored[0::2], stored[1::2], strict=True), 1):
        assert question["role"] == "user" and answer["role"] == "assistant"
        assert answer["status"] == "complete"
        assert answer["content"] == f"turns={n} {question['content']}"
    assert len({m["content"] for m in stored[0::2]}) == 50


async def test_a_streamed_turn_reads_the_conversation_once(make_server: ServerFactory) -> None:
    server = await make_server()
    me, other = await server.user("minji"), await server.user("jisu")
    cid = await new_conversation(server, me)
    store = server.app_parts.store
    reads: list[str] = []
    read = store.get_conversation

    async def counted(conversation_id: str) -> Any:
        reads.append(conversation_id)
        return await read(conversation_id)

    store.get_conversation = counted  # type: ignore[method-assign]
    path = f"/v1/conversations/{cid}/messages"
    reply = await server.stream("POST", path, me, json={"content": "안녕"})
    assert reply.text == "답: 안녕"
    assert reads == [cid]
    # Still checked: someone else's conversation answers 404 and stores nothing.
    status, data = await server.call("POST", path, other, json={"content": "몰래"})
    assert (status, data["error"]["code"]) == (404, "not_found")
    assert len(await history(server, me, cid)) == 2


async def test_turns_bypass_middleware_and_routing_with_the_same_errors(
    make_server: ServerFactory, monkeypatch: Any, caplog: Any
) -> None:
    seen: list[str] = []

    def with_recorder(app: Any) -> Any:
        class Recorder:
            def __init__(self, inner: Any) -> None:
                self.inner = inner

            async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
                if scope["type"] == "http":
                    seen.append(f"{scope['method']} {scope['path']}")
                await self.inner(scope, receive, send)

        app.add_middleware(Recorder)
        return app

    server = await make_server(wrap=with_recorder)
    me = await server.user("minji")
    cid = await new_conversation(server, me)
    path = f"/v1/conversations/{cid}/messages"
    reply = await server.stream("POST", path, me, json={"content": "안녕"})
    assert reply.text == "답: 안녕" and reply.of("done")
    status, data = await server.call("POST", path, me, json={"content": "또"})
    assert status == 200 and data["assistant_message"]["content"] == "답: 또"
    # The turns went straight to their endpoint; every other request through the stack.
    assert seen == ["POST /v1/conversations"]
    status, data = await server.call("GET", path, me)
    assert status == 200 and len(data["items"]) == 4
    assert seen[-1] == f"GET {path}"
    # A trailing slash or a longer path is not a turn: routing answers it.
    status, _ = await server.call("POST", path + "/x", me, json={"content": "x"})
    assert status in (404, 405) and seen[-1] == f"POST {path}/x"

    # The same error bodies and headers as through the exception handlers.
    async with server.http.post(server.url + path, json={"content": "x"}) as response:
        assert response.status == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert (await response.json())["error"]["code"] == "unauthorized"
    status, data = await server.call("POST", "/v1/conversations/nope/messages", me, json={})
    assert status == 400 and data["error"]["field"] == "content"
    status, data = await server.call(
        "POST", "/v1/conversations/nope/messages", me, json={"content": "x"}
    )
    assert status == 404 and data["error"]["code"] == "not_found"

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the store fell over")

    monkeypatch.setattr(server.app_parts.service, "send", broken)
    status, data = await server.call("POST", path, me, json={"content": "x"})
    assert status == 500 and data == {
        "error": {"code": "internal_error", "message": "internal server error"}
    }
    assert "the store fell over" in caplog.text
    assert [entry for entry in seen if entry.endswith("/messages")] == [f"GET {path}"]
