"""What an open WebSocket keeps: one task when idle, a shared credential sweep, shared checks."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from daehwa.api import ws as ws_module
from daehwa.api.deps import SESSION_COOKIE
from daehwa.errors import AuthError
from tests.api.conftest import ServerFactory
from tests.api.test_turns import new_conversation
from tests.api.test_ws import connect, frames_until_done


def server_tasks() -> dict[str, int]:
    """The server's live tasks by kind: uvicorn's per-socket task, and the endpoint's own."""
    kinds = {"uvicorn": 0, "endpoint": 0}
    for task in asyncio.all_tasks():
        code = getattr(task.get_coro(), "cr_code", None)
        if code is None:
            continue
        if code.co_qualname.endswith("run_asgi"):
            kinds["uvicorn"] += 1
        elif code.co_filename == ws_module.__file__:
            kinds["endpoint"] += 1
    return kinds


async def settled_tasks(expected_endpoint_tasks: int) -> dict[str, int]:
    """The task counts once the endpoint's tasks have wound down (or after 5 s)."""
    for _ in range(100):
        kinds = server_tasks()
        if kinds["endpoint"] <= expected_endpoint_tasks:
            return kinds
        await asyncio.sleep(0.05)
    return server_tasks()


async def ping(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    await ws.send_json({"type": "ping"})
    return await asyncio.wait_for(ws.receive_json(), 10)  # type: ignore[no-any-return]


async def test_an_idle_socket_keeps_one_task(make_server: ServerFactory) -> None:
    server = await make_server()
    me = await server.user("minji")
    token = me["authorization"].split()[1]
    before = server_tasks()
    sockets = [await connect(server, me) for _ in range(3)]
    by_frame = await connect(server)
    await by_frame.send_json({"type": "auth", "token": token})
    sockets.append(by_frame)
    for ws in sockets:
        assert await ping(ws) == {"type": "pong"}
    idle = await settled_tasks(0)
    assert idle["uvicorn"] - before["uvicorn"] == 4
    # No writer, no re-check timer task, no reader besides uvicorn's own.
    assert idle["endpoint"] == before["endpoint"] == 0

    # A reply starts a follower and a writer; both end with it.
    cid = await new_conversation(server, me)
    await sockets[0].send_json(
        {"type": "chat", "request_id": "r", "conversation_id": cid, "content": "안녕"}
    )
    frames = await frames_until_done(sockets[0])
    assert frames[-1]["type"] == "done"
    assert (await settled_tasks(0))["endpoint"] == 0
    for ws in sockets:
        await ws.close()


async def test_the_sweep_closes_an_idle_socket_whose_key_was_revoked(
    make_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ws_module, "RECHECK_INTERVAL", 0.05)
    server = await make_server()
    keep = await connect(server, await server.user("minji"))
    created = await server.app_parts.accounts.create_user("temp")
    gone = await connect(server, {"authorization": f"Bearer {created.api_key}"})
    assert await ping(gone) == {"type": "pong"}
    await server.app_parts.accounts.revoke(created.api_key)
    await server.app_parts.store.delete_user(created.user.id)
    # The client sends nothing: the server's sweep finds the revoked key by itself.
    message = await asyncio.wait_for(gone.receive(), 10)
    assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert gone.close_code == 4401
    # Sockets with valid keys stay open through the sweeps.
    await asyncio.sleep(0.2)
    assert await ping(keep) == {"type": "pong"}
    await keep.close()


async def test_a_session_cookie_authenticates_the_socket(make_server: ServerFactory) -> None:
    server = await make_server()
    created = await server.app_parts.accounts.create_user("minji")
    session = await server.app_parts.accounts.start_session(created.user)
    ws = await connect(server, {"cookie": f"other=1; {SESSION_COOKIE}={session}"})
    assert await ping(ws) == {"type": "pong"}
    await ws.close()
    refused = await connect(server, {"cookie": f"{SESSION_COOKIE}=s-wrong"})
    await refused.receive()
    assert refused.close_code == 4401


async def test_a_binary_frame_closes_the_socket(make_server: ServerFactory) -> None:
    server = await make_server()
    ws = await connect(server, await server.user("minji"))
    await ws.send_bytes(b'{"type": "ping"}')
    message = await asyncio.wait_for(ws.receive(), 10)
    assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert ws.close_code == 1003


class GatedAccounts:
    """Accounts whose lookups wait for a gate, and count themselves."""

    def __init__(self, revoked: set[str]) -> None:
        self.revoked = revoked
        self.lookups: list[str] = []
        self.gate = asyncio.Event()

    async def user_for(self, secret: str, *, kind: str = "api") -> object:
        self.lookups.append(secret)
        await self.gate.wait()
        if secret in self.revoked:
            raise AuthError("invalid or revoked credentials")
        return object()


async def test_checks_of_one_credential_at_once_share_one_lookup() -> None:
    accounts = GatedAccounts(revoked={"dh-old"})
    hub = ws_module._Hub(accounts)  # type: ignore[arg-type]
    checks = [
        asyncio.create_task(hub.valid((secret, "api")))
        for secret in ["dh-key"] * 5 + ["dh-old"] * 3
    ]
    await asyncio.sleep(0)
    # One socket going away while it waits does not cancel the others' answer.
    checks[0].cancel()
    await asyncio.sleep(0)
    accounts.gate.set()
    results = await asyncio.gather(*checks[1:])
    assert results == [True] * 4 + [False] * 3
    assert sorted(accounts.lookups) == ["dh-key", "dh-old"]
    assert hub.checks == {}
    # Once answered, the next check looks again (the key may have been revoked since).
    accounts.revoked.add("dh-key")
    assert await hub.valid(("dh-key", "api")) is False


def test_daehwa_serve_offers_no_per_message_deflate(tmp_path: Path) -> None:
    """Browsers offer permessage-deflate; accepting it would cost a zlib context per socket."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "DAEHWA_SERVER__DATA_DIR": str(tmp_path / "data"),
        "DAEHWA_CONTEXT__RECALL": "false",
    }
    env.pop("DAEHWA_CONFIG", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "daehwa", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        head = b""
        for _ in range(600):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
                    client.sendall(
                        b"GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                        b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                        b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
                        b"\r\n"
                    )
                    while b"\r\n\r\n" not in head:
                        chunk = client.recv(4096)
                        if not chunk:
                            break
                        head += chunk
                break
            except ConnectionRefusedError:
                assert server.poll() is None, "daehwa serve exited"
                time.sleep(0.1)
        assert head.startswith(b"HTTP/1.1 101 ")
        assert b"sec-websocket-extensions" not in head.lower()
    finally:
        server.terminate()
        server.wait(timeout=20)
