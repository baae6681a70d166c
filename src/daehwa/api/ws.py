"""``GET /v1/ws``: the same reply events over one WebSocket, several requests at once.

Client frames: ``auth``, ``chat``, ``resume``, ``stop``, ``ping``. Server frames:
every event as ``{"type", "request_id", "seq", ...data}``, ``pong``, and
``error`` frames for requests that could not start. Closing the socket never
stops a run; a client resumes with ``resume`` after reconnecting.

An idle socket costs one task (uvicorn's, which reads) and a few small objects:
the endpoint is served before the application's middleware and routing, frames are
written by a task that exists only while some are waiting, and credentials are
re-checked by one periodic sweep over every open socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import deque
from typing import Any

import orjson
from starlette.datastructures import State
from starlette.requests import cookie_parser
from starlette.types import Message, Receive, Scope, Send

from daehwa.accounts import Accounts
from daehwa.api.deps import SESSION_COOKIE, AppParts, bearer_token, route_path
from daehwa.errors import AuthError, DaehwaError, InvalidInput
from daehwa.messages import User

log = logging.getLogger(__name__)

AUTH_TIMEOUT = 10.0
# Frames waiting for a slow reader; past this the socket is dropped (its runs go on).
OUTBOX_LIMIT = 2048
# How often every open socket's credential is checked again.
RECHECK_INTERVAL = 30.0
CLOSE_UNAUTHORIZED = 4401
CLOSE_TOO_SLOW = 1013
CLOSE_UNSUPPORTED = 1003
CLOSE_INTERNAL = 1011
CLOSE_TIMEOUT = 2.0

Credential = tuple[str, str]  # (secret, kind)


PATH = "/v1/ws"


def is_socket(scope: Scope) -> bool:
    """Whether ``scope`` is a WebSocket connection to :data:`PATH`."""
    return scope["type"] == "websocket" and route_path(scope) == PATH


async def serve(state: State, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve one connection to :data:`PATH`; ``state`` is the application's state.

    Called by the application before any of its middleware or routing: a
    routed socket would keep the frames of every layer it went through alive
    for as long as it is open.
    """
    app_parts: AppParts = state.parts
    if (await receive())["type"] != "websocket.connect":
        return
    credential = _handshake_credential(scope)
    await send({"type": "websocket.accept"})
    if credential is None:
        credential = await _auth_frame(receive, send)
        if credential is None:
            return
    try:
        user = await app_parts.accounts.user_for(credential[0], kind=credential[1])
    except AuthError as exc:
        await _close(send, CLOSE_UNAUTHORIZED, exc.message)
        return
    hub = _hub(state, app_parts.accounts)
    await _Socket(hub, receive, send, user, app_parts, credential).serve()


def _handshake_credential(scope: Scope) -> Credential | None:
    authorization = cookie = ""
    for name, value in scope["headers"]:
        if name == b"authorization" and not authorization:
            authorization = value.decode("latin-1")
        elif name == b"cookie" and not cookie:
            cookie = value.decode("latin-1")
    token = bearer_token(authorization)
    if token is not None:
        return token, "api"
    session = cookie_parser(cookie).get(SESSION_COOKIE) if cookie else None
    if session:
        return session, "session"
    return None


async def _auth_frame(receive: Receive, send: Send) -> Credential | None:
    try:
        message = await asyncio.wait_for(receive(), AUTH_TIMEOUT)
        frame = orjson.loads(message["text"])
    except (TimeoutError, orjson.JSONDecodeError, KeyError):
        frame = None
    token = frame.get("token") if isinstance(frame, dict) else None
    if not isinstance(frame, dict) or frame.get("type") != "auth" or not isinstance(token, str):
        await _close(send, CLOSE_UNAUTHORIZED, "authenticate first: {type: auth, token}")
        return None
    return token, "api"


async def _close(send: Send, code: int, reason: str) -> None:
    # The client may be gone already (OSError), or the socket closed (RuntimeError).
    with contextlib.suppress(RuntimeError, OSError):
        await send({"type": "websocket.close", "code": code, "reason": reason[:120]})


class _Hub:
    """The open sockets of one server: the periodic credential sweep, and shared checks."""

    def __init__(self, accounts: Accounts) -> None:
        self.accounts = accounts
        self.sockets: set[_Socket] = set()
        self.checks: dict[Credential, asyncio.Task[bool]] = {}
        self.timer: asyncio.TimerHandle | None = None
        self.sweeping: asyncio.Task[None] | None = None

    def add(self, socket: _Socket) -> None:
        self.sockets.add(socket)
        self._schedule()

    def discard(self, socket: _Socket) -> None:
        self.sockets.discard(socket)
        if not self.sockets and self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _schedule(self) -> None:
        if self.timer is None and self.sweeping is None and self.sockets:
            loop = asyncio.get_running_loop()
            self.timer = loop.call_later(RECHECK_INTERVAL, self._sweep_due)

    def _sweep_due(self) -> None:
        self.timer = None
        self.sweeping = asyncio.create_task(self._sweep())

    async def _sweep(self) -> None:
        """Check each distinct credential once, one after the other, and drop what failed."""
        groups: dict[Credential, list[_Socket]] = {}
        for socket in self.sockets:
            groups.setdefault(socket.credential, []).append(socket)
        try:
            for credential, sockets in groups.items():
                try:
                    valid = await self.valid(credential)
                except Exception:
                    # A store that is down for a moment must not close every socket.
                    log.exception("could not re-check a WebSocket credential")
                    continue
                if not valid:
                    for socket in sockets:
                        socket.drop(CLOSE_UNAUTHORIZED, "credentials revoked")
        finally:
            self.sweeping = None
            self._schedule()

    async def valid(self, credential: Credential) -> bool:
        """Whether a credential still holds; checks of the same one at once share a lookup."""
        check = self.checks.get(credential)
        if check is None:
            check = asyncio.create_task(self._lookup(credential))
            self.checks[credential] = check
            check.add_done_callback(functools.partial(self._checked, credential))
        # Shielded: a socket that goes away must not cancel the others' answer.
        return await asyncio.shield(check)

    async def _lookup(self, credential: Credential) -> bool:
        try:
            await self.accounts.user_for(credential[0], kind=credential[1])
        except AuthError:
            return False
        return True

    def _checked(self, credential: Credential, check: asyncio.Task[bool]) -> None:
        if self.checks.get(credential) is check:
            del self.checks[credential]
        if not check.cancelled():
            check.exception()  # retrieved here: every socket waiting on it may be gone


def _hub(state: State, accounts: Accounts) -> _Hub:
    hub: _Hub | None = getattr(state, "websocket_hub", None)
    if hub is None or hub.accounts is not accounts:
        hub = state.websocket_hub = _Hub(accounts)
    return hub


class _Socket:
    """One authenticated connection, read by the task uvicorn started for it.

    A writer task exists only while frames are waiting, and one follower task per
    request being relayed.
    """

    __slots__ = (
        "closing",
        "credential",
        "followers",
        "hub",
        "parts",
        "pending",
        "reader",
        "receive",
        "transmit",
        "user",
        "waiting",
        "writer",
    )

    def __init__(
        self,
        hub: _Hub,
        receive: Receive,
        transmit: Send,
        user: User,
        parts: AppParts,
        credential: Credential,
    ) -> None:
        self.hub = hub
        self.receive = receive
        self.transmit = transmit
        self.user = user
        self.parts = parts
        self.credential = credential
        self.pending: deque[str] | None = None
        self.writer: asyncio.Task[None] | None = None
        self.followers: set[asyncio.Task[None]] | None = None
        self.closing: tuple[int, str] | None = None
        self.reader: asyncio.Task[Any] | None = None
        self.waiting = False  # the reader is waiting for a frame

    async def serve(self) -> None:
        """Read frames until the client leaves or the socket is dropped; then clean up."""
        self.reader = asyncio.current_task()
        self.hub.add(self)
        try:
            while self.closing is None:
                self.waiting = True
                try:
                    message = await self.receive()
                except asyncio.CancelledError:
                    # drop() cancels a waiting reader; anyone else's cancellation goes on up.
                    if self.closing is None or self.reader is None or self.reader.uncancel():
                        raise
                    return
                finally:
                    self.waiting = False
                if message["type"] == "websocket.disconnect":
                    return
                frame = self._frame(message)
                if frame is not None and await self._still_valid():
                    await self._dispatch(frame)
        finally:
            self.hub.discard(self)
            tasks = [*(self.followers or ()), *([self.writer] if self.writer else [])]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.closing is not None:
                # A reader that stopped reading cannot take a close frame either: don't wait on it.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(_close(self.transmit, *self.closing), CLOSE_TIMEOUT)

    def drop(self, code: int, reason: str) -> None:
        """End the socket from outside the reader: it stops at once if it was waiting."""
        if self.closing is not None:
            return  # the reader was told already: a second cancel would not be undone
        self.closing = (code, reason)
        if self.waiting and self.reader is not None:
            self.reader.cancel()

    def send(self, frame: dict[str, Any]) -> None:
        """Queue a frame; a reader too slow to keep up gets disconnected."""
        if self.closing is not None:
            return
        if self.pending is None:
            self.pending = deque()
        elif len(self.pending) >= OUTBOX_LIMIT:
            log.warning("closing a WebSocket of user %s: reader too slow", self.user.id)
            self.drop(CLOSE_TOO_SLOW, "reader too slow; reconnect and resume")
            return
        self.pending.append(orjson.dumps(frame).decode())
        if self.writer is None:
            self.writer = asyncio.create_task(self._write())

    async def _write(self) -> None:
        try:
            while self.pending:
                text = self.pending.popleft()
                await self.transmit({"type": "websocket.send", "text": text})
        except (OSError, RuntimeError):
            # The client is gone, or the socket is closing: the reader hears of it.
            self.pending = None
        finally:
            self.writer = None
            if not self.pending:
                self.pending = None

    async def _still_valid(self) -> bool:
        try:
            valid = await self.hub.valid(self.credential)
        except Exception:
            log.exception("could not check the credential of a WebSocket of user %s", self.user.id)
            self.closing = (CLOSE_INTERNAL, "internal error")
            return False
        if not valid:
            self.closing = (CLOSE_UNAUTHORIZED, "credentials revoked")
        return valid

    def _frame(self, message: Message) -> dict[str, Any] | None:
        """The client's frame as a JSON object, or None (after answering an error frame)."""
        raw = message.get("text")
        if raw is None:
            self.closing = (CLOSE_UNSUPPORTED, "text frames only")
            return None
        try:
            frame = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.send({"type": "error", "code": "invalid_json", "message": "malformed JSON"})
            return None
        if not isinstance(frame, dict):
            self.send(
                {"type": "error", "code": "invalid_json", "message": "a frame is a JSON object"}
            )
            return None
        return frame

    async def _dispatch(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        request_id = frame.get("request_id")
        service = self.parts.service
        try:
            if kind == "ping":
                self.send({"type": "pong"})
            elif kind == "chat":
                conversation_id = _text(frame, "conversation_id")
                if not isinstance(request_id, str) or not request_id:
                    raise InvalidInput("request_id is required on chat frames", field="request_id")
                turn = await service.send(
                    self.user, conversation_id, frame.get("content"), request_id=request_id
                )
                self._follow(turn.reply_id, 0, request_id)
            elif kind == "resume":
                message_id = _text(frame, "message_id")
                after = frame.get("after", 0)
                if not isinstance(after, int) or after < 0:
                    raise InvalidInput("after must be a non-negative integer", field="after")
                message = await service.store.get_message(message_id)
                if message is None:
                    raise InvalidInput(f"message {message_id} not found", field="message_id")
                await service.message(self.user, message.conversation_id, message_id)
                self._follow(message_id, after, request_id if isinstance(request_id, str) else None)
            elif kind == "stop":
                message_id = _text(frame, "message_id")
                message = await service.store.get_message(message_id)
                if message is None:
                    raise InvalidInput(f"message {message_id} not found", field="message_id")
                await service.stop(self.user, message.conversation_id, message_id)
            else:
                raise InvalidInput(f"unknown frame type {kind!r}", field="type")
        except DaehwaError as exc:
            error: dict[str, Any] = {"type": "error", "code": exc.code, "message": exc.message}
            if request_id is not None:
                error["request_id"] = request_id
            if isinstance(exc, InvalidInput) and exc.field:
                error["field"] = exc.field
            self.send(error)

    def _follow(self, message_id: str, after: int, request_id: str | None) -> None:
        if self.followers is None:
            self.followers = set()
        task = asyncio.create_task(self._relay(message_id, after, request_id))
        self.followers.add(task)
        task.add_done_callback(self.followers.discard)

    async def _relay(self, message_id: str, after: int, request_id: str | None) -> None:
        async for batch in self.parts.service.replay_batches(message_id, after=after):
            for envelope in batch:
                self.send(
                    {
                        "type": envelope.type,
                        "request_id": request_id,
                        "message_id": message_id,
                        "seq": envelope.seq,
                        **envelope.data,
                    }
                )
            if self.closing is not None:
                return


def _text(frame: dict[str, Any], name: str) -> str:
    value = frame.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{name} is required", field=name)
    return value
