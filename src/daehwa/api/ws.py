"""``GET /v1/ws``: the same reply events over one WebSocket, several requests at once.

Client frames: ``auth``, ``chat``, ``resume``, ``stop``, ``ping``. Server frames:
every event as ``{"type", "request_id", "seq", ...data}``, ``pong``, and
``error`` frames for requests that could not start. Closing the socket never
stops a run; a client resumes with ``resume`` after reconnecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from daehwa.api.deps import SESSION_COOKIE, AppParts
from daehwa.errors import AuthError, DaehwaError, InvalidInput
from daehwa.messages import User

log = logging.getLogger(__name__)
router = APIRouter()

AUTH_TIMEOUT = 10.0
# Frames waiting for a slow reader; past this the socket is dropped (its runs go on).
OUTBOX_LIMIT = 2048
# How often a quiet socket re-checks that its credential is still valid.
RECHECK_INTERVAL = 30.0
CLOSE_UNAUTHORIZED = 4401
CLOSE_TOO_SLOW = 1013
CLOSE_TIMEOUT = 2.0


@router.websocket("/v1/ws")
async def websocket_endpoint(websocket: WebSocket) -> None:
    app_parts: AppParts = websocket.app.state.parts
    credential = _handshake_credential(websocket)
    await websocket.accept()
    if credential is None:
        credential = await _auth_frame(websocket)
        if credential is None:
            return
    try:
        user = await app_parts.accounts.user_for(credential[0], kind=credential[1])
    except AuthError as exc:
        await _close(websocket, CLOSE_UNAUTHORIZED, exc.message)
        return
    await _Socket(websocket, app_parts, user, credential).serve()


def _handshake_credential(websocket: WebSocket) -> tuple[str, str] | None:
    header = websocket.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip(), "api"
    cookie = websocket.cookies.get(SESSION_COOKIE)
    if cookie:
        return cookie, "session"
    return None


async def _auth_frame(websocket: WebSocket) -> tuple[str, str] | None:
    try:
        raw = await asyncio.wait_for(websocket.receive_text(), AUTH_TIMEOUT)
        frame = orjson.loads(raw)
    except (TimeoutError, orjson.JSONDecodeError, WebSocketDisconnect, KeyError):
        await _close(websocket, CLOSE_UNAUTHORIZED, "authenticate first: {type: auth, token}")
        return None
    token = frame.get("token") if isinstance(frame, dict) else None
    if not isinstance(frame, dict) or frame.get("type") != "auth" or not isinstance(token, str):
        await _close(websocket, CLOSE_UNAUTHORIZED, "authenticate first: {type: auth, token}")
        return None
    return token, "api"


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(RuntimeError, WebSocketDisconnect):
        await websocket.close(code=code, reason=reason[:120])


class _Socket:
    """One authenticated connection: a reader, a writer, and a follower per request."""

    def __init__(
        self, websocket: WebSocket, parts: AppParts, user: User, credential: tuple[str, str]
    ) -> None:
        self.websocket = websocket
        self.parts = parts
        self.user = user
        self.credential = credential
        self.outbox: asyncio.Queue[bytes] = asyncio.Queue(OUTBOX_LIMIT)
        self.followers: set[asyncio.Task[None]] = set()
        self.closing: tuple[int, str] | None = None

    async def serve(self) -> None:
        tasks = [
            asyncio.create_task(self._read()),
            asyncio.create_task(self._write()),
            asyncio.create_task(self._recheck()),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in [*tasks, *self.followers]:
                task.cancel()
            await asyncio.gather(*tasks, *self.followers, return_exceptions=True)
            if self.closing is not None:
                # A reader that stopped reading cannot take a close frame either: don't wait on it.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(_close(self.websocket, *self.closing), CLOSE_TIMEOUT)

    def send(self, frame: dict[str, Any]) -> None:
        """Queue a frame; a reader too slow to keep up gets disconnected."""
        try:
            self.outbox.put_nowait(orjson.dumps(frame))
        except asyncio.QueueFull:
            if self.closing is None:
                log.warning("closing a WebSocket of user %s: reader too slow", self.user.id)
                self.closing = (CLOSE_TOO_SLOW, "reader too slow; reconnect and resume")
            # Wake the writer so it notices and ends the socket.
            with contextlib.suppress(asyncio.QueueEmpty):
                self.outbox.get_nowait()
            self.outbox.put_nowait(b"")

    async def _write(self) -> None:
        while True:
            frame = await self.outbox.get()
            if self.closing is not None:
                return
            await self.websocket.send_text(frame.decode())

    async def _recheck(self) -> None:
        while True:
            await asyncio.sleep(RECHECK_INTERVAL)
            if not await self._still_valid():
                return

    async def _still_valid(self) -> bool:
        try:
            await self.parts.accounts.user_for(self.credential[0], kind=self.credential[1])
        except AuthError:
            self.closing = (CLOSE_UNAUTHORIZED, "credentials revoked")
            return False
        return True

    async def _read(self) -> None:
        while True:
            try:
                raw = await self.websocket.receive_text()
            except WebSocketDisconnect:
                return
            try:
                frame = orjson.loads(raw)
                if not isinstance(frame, dict):
                    raise InvalidInput("a frame is a JSON object", code="invalid_json")
            except orjson.JSONDecodeError:
                self.send({"type": "error", "code": "invalid_json", "message": "malformed JSON"})
                continue
            except InvalidInput as exc:
                self.send({"type": "error", "code": exc.code, "message": exc.message})
                continue
            if not await self._still_valid():
                return
            await self._dispatch(frame)

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
        task = asyncio.create_task(self._relay(message_id, after, request_id))
        self.followers.add(task)
        task.add_done_callback(self.followers.discard)

    async def _relay(self, message_id: str, after: int, request_id: str | None) -> None:
        async for envelope in self.parts.service.replay(message_id, after=after):
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
