"""A real daehwa server on an ephemeral port, with real sockets, for API tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import uvicorn

from daehwa.api.app import create_app
from daehwa.api.deps import AppParts
from daehwa.config import Settings, load_settings
from daehwa.llm.base import ChatModel
from daehwa.llm.scripted import ScriptedModel
from daehwa.llm.sse import SSEDecoder


class StaticModels(dict[str, ChatModel]):
    """Models by name, given directly by a test."""


@dataclass
class Reply:
    status: int
    events: list[tuple[str, dict[str, Any], str | None]] = field(default_factory=list)
    raw: bytes = b""

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [data for event, data, _ in self.events if event == kind]

    @property
    def text(self) -> str:
        return "".join(d["text"] for d in self.of("delta"))


@dataclass
class Server:
    url: str
    app_parts: AppParts
    models: StaticModels
    http: aiohttp.ClientSession

    async def user(self, name: str, *, admin: bool = False) -> dict[str, str]:
        created = await self.app_parts.accounts.create_user(name, admin=admin)
        return {"authorization": f"Bearer {created.api_key}"}

    async def call(
        self, method: str, path: str, headers: dict[str, str] | None = None, **kw: Any
    ) -> tuple[int, Any]:
        async with self.http.request(method, self.url + path, headers=headers, **kw) as response:
            body = await response.read()
            ctype = response.headers.get("content-type", "")
            data = orjson.loads(body) if body and "json" in ctype else body
            return response.status, data

    async def stream(self, method: str, path: str, headers: dict[str, str], **kw: Any) -> Reply:
        all_headers = {**headers, "accept": "text/event-stream"}
        async with self.http.request(
            method, self.url + path, headers=all_headers, **kw
        ) as response:
            reply = Reply(response.status)
            decoder = SSEDecoder()
            async for data in response.content.iter_any():
                reply.raw += data
                for event in decoder.feed(data):
                    reply.events.append((event.event, orjson.loads(event.data), event.id))
            return reply


ServerFactory = Callable[..., Any]


@pytest.fixture
async def make_server(tmp_path: Path) -> AsyncIterator[ServerFactory]:
    servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []
    sessions: list[aiohttp.ClientSession] = []

    async def start(
        models: dict[str, ChatModel] | None = None,
        store_url: str | None = None,
        model_options: dict[str, dict[str, Any]] | None = None,
        wrap: Callable[[Any], Any] | None = None,
        **overrides: Any,
    ) -> Server:
        chosen = StaticModels(
            models or {"scripted": ScriptedModel("scripted", reply="답: {input}")}
        )
        config: dict[str, Any] = {
            "server": {"data_dir": str(tmp_path / "data"), "bootstrap_user": None},
            "store": {"url": store_url or f"sqlite+aiosqlite:///{tmp_path / 'api.db'}"},
            "models": {
                name: {"provider": "scripted", **(model_options or {}).get(name, {})}
                for name in chosen
            },
            "chat": {"default_model": next(iter(chosen))},
        }
        for section, values in overrides.items():
            config.setdefault(section, {}).update(values)
        settings: Settings = load_settings(None, **config)
        app = create_app(settings, models=chosen)
        server = uvicorn.Server(
            uvicorn.Config(
                wrap(app) if wrap else app,
                host="127.0.0.1",
                port=0,
                log_level="warning",
                lifespan="on",
                timeout_graceful_shutdown=5,
            )
        )
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        servers.append((server, task))
        port = server.servers[0].sockets[0].getsockname()[1]
        http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        sessions.append(http)
        return Server(f"http://127.0.0.1:{port}", app.state.parts, chosen, http)

    yield start
    for http in sessions:
        await http.close()
    for server, task in servers:
        server.should_exit = True
        await task
