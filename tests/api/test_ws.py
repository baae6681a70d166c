"""The WebSocket transport: auth, frames with request ids, several requests, resume, stop."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from tests.api.conftest import Server, ServerFactory
from tests.api.models import SlowModel
from tests.api.test_turns import history, new_conversation


async def frames_until_done(
    ws: aiohttp.ClientWebSocketResponse, count: int = 1
) -> list[dict[str, Any]]:
    """Frames until ``count`` terminal frames (done/error) arrived."""
    seen: list[dict[str, Any]] = []
    finished = 0
    while finished < count:
        frame = await asyncio.wait_for(ws.receive_json(), 10)
        seen.append(frame)
        if frame["type"] in ("done", "error") and "seq" in frame:
            finished += 1
    return seen


async def connect(
    server: Server, headers: dict[str, str] | None = None
) -> aiohttp.ClientWebSocketResponse:
    return await server.http.ws_connect(
        server.url.replace("http", "ws") + "/v1/ws", headers=headers
    )


async def test_chat_over_the_socket_with_request_ids(make_server: ServerFactory) -> None:
    server = await make_server()
    me = await server.user("minji")
    cid = await new_conversation(server, me)
    ws = await connect(server, me)
    await ws.send_json(
        {"type": "chat", "request_id": "r1", "conversation_id": cid, "content": "안녕"}
    )
    frames = await frames_until_done(ws)
    assert all(f["request_id"] == "r1" for f in frames)
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
    assert frames[0]["type"] == "meta" and frames[-1]["type"] == "done"
    assert "".join(f["text"] for f in frames if f["type"] == "delta") == "답: 안녕"
    await ws.send_json({"type": "ping"})
    assert (await ws.receive_json()) == {"type": "pong"}
    await ws.close()


async def test_several_requests_at_once_on_one_socket(make_server: ServerFactory) -> None:
    server = await make_server({"slow": SlowModel(["가 ", "나 ", "다"], gap=0.02)})
    me = await server.user("minji")
    first, second = await new_conversation(server, me), await new_conversation(server, me)
    ws = await connect(server, me)
    for rid, cid in (("a", first), ("b", second)):
        await ws.send_json(
            {"type": "chat", "request_id": rid, "conversation_id": cid, "content": rid}
        )
    frames = await frames_until_done(ws, count=2)
    for rid in ("a", "b"):
        mine = [f for f in frames if f.get("request_id") == rid]
        assert [f["seq"] for f in mine] == list(range(1, len(mine) + 1))
        assert "".join(f["text"] for f in mine if f["type"] == "delta") == "가 나 다"
    await ws.close()


async def test_auth_by_first_frame_and_refusals(make_server: ServerFactory) -> None:
    server = await make_server()
    me = await server.user("minji")
    token = me["authorization"].split()[1]
    ws = await connect(server)
    await ws.send_json({"type": "auth", "token": token})
    await ws.send_json({"type": "ping"})
    assert (await ws.receive_json()) == {"type": "pong"}
    await ws.close()
    for first in ({"type": "auth", "token": "dh-wrong"}, {"type": "ping"}):
        bad = await connect(server)
        await bad.send_json(first)
        message = await bad.receive()
        assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert bad.close_code == 4401
    refused = await connect(server, {"authorization": "Bearer dh-wrong"})
    await refused.receive()
    assert refused.close_code == 4401


async def test_revoked_key_closes_the_socket(make_server: ServerFactory) -> None:
    server = await make_server()
    created = await server.app_parts.accounts.create_user("temp")
    ws = await connect(server, {"authorization": f"Bearer {created.api_key}"})
    await ws.send_json({"type": "ping"})
    assert (await ws.receive_json())["type"] == "pong"
    await server.app_parts.accounts.revoke(created.api_key)
    await server.app_parts.store.delete_user(created.user.id)
    await ws.send_json({"type": "ping"})
    await ws.receive()
    assert ws.close_code == 4401


async def test_bad_frames_get_error_frames_not_a_closed_socket(make_server: ServerFactory) -> None:
    server = await make_server()
    me = await server.user("minji")
    ws = await connect(server, me)
    await ws.send_str("{nope")
    assert (await ws.receive_json())["code"] == "invalid_json"
    await ws.send_json(
        {"type": "chat", "request_id": "x", "conversation_id": "missing", "content": "a"}
    )
    error = await ws.receive_json()
    assert (error["type"], error["code"], error["request_id"]) == ("error", "not_found", "x")
    await ws.send_json({"type": "fly"})
    assert (await ws.receive_json())["field"] == "type"
    await ws.close()


async def test_closing_the_socket_never_stops_the_run_and_resume_continues(
    make_server: ServerFactory,
) -> None:
    pieces = [f"{i} " for i in range(20)]
    server = await make_server({"slow": SlowModel(pieces, gap=0.02)})
    me = await server.user("minji")
    cid = await new_conversation(server, me)
    ws = await connect(server, me)
    await ws.send_json(
        {"type": "chat", "request_id": "r", "conversation_id": cid, "content": "세어"}
    )
    seen = [await ws.receive_json() for _ in range(5)]
    await ws.close()
    message_id = seen[0]["message_id"]
    again = await connect(server, me)
    await again.send_json(
        {"type": "resume", "request_id": "r", "message_id": message_id, "after": seen[-1]["seq"]}
    )
    rest = await frames_until_done(again)
    seqs = [f["seq"] for f in seen + rest]
    assert seqs == list(range(1, len(seqs) + 1))
    text = "".join(f["text"] for f in seen + rest if f["type"] == "delta")
    assert text == "".join(pieces)
    stored = await history(server, me, cid)
    assert stored[1]["status"] == "complete"


async def test_stop_over_the_socket(make_server: ServerFactory) -> None:
    server = await make_server({"slow": SlowModel([f"{i} " for i in range(200)], gap=0.01)})
    me = await server.user("minji")
    cid = await new_conversation(server, me)
    ws = await connect(server, me)
    await ws.send_json(
        {"type": "chat", "request_id": "r", "conversation_id": cid, "content": "길게"}
    )
    meta = await ws.receive_json()
    await ws.send_json({"type": "stop", "message_id": meta["message_id"]})
    frames = await frames_until_done(ws)
    assert frames[-1]["type"] == "done" and frames[-1]["status"] == "stopped"
    stored = await history(server, me, cid)
    assert stored[1]["status"] == "stopped"


async def raw_socket_that_never_reads(server: Server, headers: dict[str, str], frame: bytes) -> Any:
    """A WebSocket client with a tiny receive buffer that sends one frame and never reads."""
    import base64
    import os
    import socket

    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    reader, writer = await asyncio.open_connection(sock=sock)
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /v1/ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Authorization: {headers['authorization']}\r\n\r\n"
    )
    writer.write(request.encode())
    await reader.readuntil(b"\r\n\r\n")
    mask = os.urandom(4)
    length = len(frame)
    head = (
        bytes([0x81, 0x80 | 126]) + length.to_bytes(2, "big")
        if length >= 126
        else bytes([0x81, 0x80 | length])
    )
    writer.write(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(frame)))
    await writer.drain()
    return writer


async def test_a_reader_too_slow_is_dropped_and_the_run_goes_on(
    make_server: ServerFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import orjson

    from daehwa.api import ws as ws_module

    monkeypatch.setattr(ws_module, "OUTBOX_LIMIT", 8)
    pieces = ["가" * 1000 for _ in range(3000)]
    server = await make_server({"fast": SlowModel(pieces)})
    me = await server.user("minji")
    cid = await new_conversation(server, me)
    frame = orjson.dumps(
        {"type": "chat", "request_id": "r", "conversation_id": cid, "content": "많이"}
    )
    writer = await raw_socket_that_never_reads(server, me, frame)
    stored: list[dict[str, Any]] = []
    for _ in range(200):
        stored = await history(server, me, cid)
        if len(stored) == 2 and stored[1]["status"] == "complete":
            break
        await asyncio.sleep(0.05)
    # The run finished and was stored whole although nobody read its frames.
    assert stored[1]["status"] == "complete"
    assert len(stored[1]["content"]) == 3000 * 1000
    # The server gave up on the socket instead of buffering without bound.
    assert any("reader too slow" in r.getMessage() for r in caplog.records)
    writer.close()


async def test_the_socket_is_served_ahead_of_the_applications_layers(
    make_server: ServerFactory,
) -> None:
    """An open socket keeps no frame of the middleware or routing alive: it never enters them."""
    seen: list[str] = []

    class Recorder:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            seen.append(scope["type"])
            await self.app(scope, receive, send)

    def wrap(app: Any) -> Any:
        app.add_middleware(Recorder)
        return app

    server = await make_server(wrap=wrap)
    me = await server.user("minji")
    ws = await connect(server, me)
    await ws.send_json({"type": "ping"})
    assert (await ws.receive_json()) == {"type": "pong"}
    await ws.close()
    assert (await server.call("GET", "/healthz"))[0] == 200
    assert "http" in seen, "the middleware is in place"
    assert "websocket" not in seen
