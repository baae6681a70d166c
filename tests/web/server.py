"""A real daehwa server in a background thread, for driving the page from a browser.

Playwright's sync API runs in the test's thread, so the server gets its own event
loop in another thread; ``PageServer.run`` executes a coroutine there (to create
users or seed history straight into the store).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from daehwa.api.app import create_app
from daehwa.api.deps import AppParts
from daehwa.config import load_settings
from daehwa.llm.base import ChatModel
from daehwa.messages import Conversation, Role, new_id
from daehwa.messages import Message as ChatMessage
from tests.web.models import PageModel

T = TypeVar("T")

# The content filter's one banned word in page tests.
BANNED_WORD = "금칙어예시"

PERSONAS = {
    "tutor": {
        "title": "언어 선생님",
        "system_prompt": "당신은 {언어} 선생님입니다. {레벨} 수준에 맞춰 대화하세요.",
        "first_message": "안녕하세요! 오늘은 {언어}로 이야기해 볼까요?",
    }
}


class PageModels:
    """The models by name (the server's ModelSource)."""

    def __init__(self, models: dict[str, ChatModel]) -> None:
        self.models = models

    def get(self, name: str) -> ChatModel:
        return self.models[name]


class ConnectionCut(Exception):
    """Raised inside the server to break a response's connection on purpose."""


@dataclass
class SeenRequest:
    method: str
    path: str
    last_event_id: str | None


@dataclass
class ConnectionCutter:
    """ASGI wrapper that breaks event streams mid-reply, as a flaky network would.

    ``plan`` lists, for the next event-stream responses in order, how many ``delta``
    frames each may deliver before its connection is cut (0: cut before any frame).
    """

    app: ASGIApp
    plan: list[int] = field(default_factory=list)
    seen: list[SeenRequest] = field(default_factory=list)
    cuts: int = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        last_id = headers.get(b"last-event-id")
        self.seen.append(
            SeenRequest(scope["method"], scope["path"], last_id.decode() if last_id else None)
        )
        budget: int | None = None
        deltas = 0

        async def cutting_send(message: Message) -> None:
            nonlocal budget, deltas
            if message["type"] == "http.response.start":
                ctype = dict(message.get("headers", [])).get(b"content-type", b"")
                if ctype.startswith(b"text/event-stream") and self.plan:
                    budget = self.plan.pop(0)
            elif message["type"] == "http.response.body" and budget is not None:
                body = message.get("body", b"")
                if b"event:" in body:
                    # One write may carry several frames: the cut falls between two of them.
                    kept: list[bytes] = []
                    for frame in body.split(b"\n\n")[:-1]:
                        if deltas >= budget:
                            if kept:
                                await send({**message, "body": b"\n\n".join(kept) + b"\n\n"})
                            self.cuts += 1
                            raise ConnectionCut(f"cut after {deltas} deltas")
                        deltas += frame.count(b"event: delta")
                        kept.append(frame)
            await send(message)

        await self.app(scope, receive, cutting_send)


class PageServer:
    """A daehwa server on 127.0.0.1 with an ephemeral port, in its own thread."""

    def __init__(self, data_dir: Path, models: dict[str, ChatModel] | None = None) -> None:
        self.models: dict[str, ChatModel] = models or {"page": PageModel()}
        words = data_dir / "banned.txt"
        words.write_text(BANNED_WORD + "\n", encoding="utf-8")
        settings = load_settings(
            None,
            server={"data_dir": str(data_dir), "bootstrap_user": None},
            store={"url": f"sqlite+aiosqlite:///{data_dir / 'page.db'}"},
            models={name: {"provider": "scripted"} for name in self.models},
            chat={"default_model": next(iter(self.models))},
            personas=PERSONAS,
            guard={"words_files": [str(words)]},
        )
        self.app = create_app(settings, models=PageModels(self.models))
        self.cutter = ConnectionCutter(self.app)
        self.server = uvicorn.Server(
            uvicorn.Config(
                self.cutter, host="127.0.0.1", port=0, log_level="critical", lifespan="on"
            )
        )
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._serve, name="page-server", daemon=True)
        self.url = ""

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.server.serve())

    def start(self) -> PageServer:
        self.thread.start()
        ready = threading.Event()

        def check() -> None:
            if self.server.started:
                ready.set()
            else:
                self.loop.call_later(0.01, check)

        self.loop.call_soon_threadsafe(check)
        if not ready.wait(15):
            raise RuntimeError("the page server did not start within 15 s")
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(15)

    @property
    def parts(self) -> AppParts:
        return self.app.state.parts  # type: ignore[no-any-return]

    def new_user(self, name: str, password: str | None = None) -> str:
        """Create a user; returns its API key."""
        return self.run(self.parts.accounts.create_user(name, password=password)).api_key

    def login_link(self, name: str) -> str:
        async def make() -> str:
            user = await self.parts.store.get_user_by_name(name)
            assert user is not None
            return await self.parts.accounts.login_link_token(user)

        return f"{self.url}/login?token={self.run(make())}"

    def seed(self, user_name: str, title: str, turns: list[tuple[str, str]]) -> str:
        """A conversation with stored turns (user text, reply markdown); returns its id."""

        async def make() -> str:
            store = self.parts.store
            user = await store.get_user_by_name(user_name)
            assert user is not None
            conversation = await store.create_conversation(
                Conversation(id=new_id(), user_id=user.id, title=title)
            )
            for question, answer in turns:
                for role, text in ((Role.USER, question), (Role.ASSISTANT, answer)):
                    await store.append_message(
                        ChatMessage(role, text, id=new_id(), conversation_id=conversation.id)
                    )
            return conversation.id

        return self.run(make())
