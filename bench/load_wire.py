"""The client side of :mod:`bench.load`: raw asyncio protocols, cheap per event.

- :class:`HttpConnection`: one keep-alive HTTP/1.1 connection parsed by httptools;
  a streamed body goes to an :class:`SseSink`, which splits SSE frames with
  ``bytes.find`` and reads only the fields each target needs;
- :class:`WsConnection`: a WebSocket client (the upgrade, unmasked server
  frames in, masked frames out), routing frames to replies by ``request_id``;
- :class:`Reply`: what the client saw of one reply, with its times.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import httptools
import orjson


class Reply:
    """What the client saw of one reply (times from ``loop.time()``)."""

    __slots__ = ("chars", "cut", "end", "error", "finished", "first", "gaps", "last", "sent")

    def __init__(self) -> None:
        self.sent = 0.0
        self.first = 0.0  # first text
        self.last = 0.0  # latest text
        self.gaps: list[float] = []  # seconds between two text events in a row
        self.end = 0.0
        self.chars = 0
        self.finished = False
        self.cut = False  # text arrived, then the stream ended without a terminal event
        self.error = ""

    def text(self, chars: int, now: float) -> None:
        if chars:
            if not self.chars:
                self.first = now
            else:
                self.gaps.append(now - self.last)
            self.last = now
            self.chars += chars

    def close(self, now: float, *, error: str = "") -> None:
        if self.end:
            return
        self.end = now
        if error and not self.error:
            self.error = error
        if not self.finished:
            # Text, then an end without a terminal event: a cut stream.
            self.cut = self.chars > 0 and not self.error
            if not self.error:
                self.error = "cut" if self.cut else "empty"


class SseSink:
    """Splits an SSE body into frames and reads the few fields each target needs."""

    __slots__ = ("buf", "kind", "loop", "reply")

    def __init__(self, reply: Reply, kind: str, loop: asyncio.AbstractEventLoop) -> None:
        self.reply = reply
        self.kind = kind
        self.loop = loop
        self.buf = b""

    def feed(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        start = 0
        end = buf.find(b"\n\n")
        while end >= 0:
            self.frame(buf[start:end])
            start = end + 2
            end = buf.find(b"\n\n", start)
        self.buf = buf[start:]

    def frame(self, frame: bytes) -> None:
        at = frame.find(b"data: ")
        if at < 0:
            return  # a comment (": ping")
        data = frame[at + 6 :]
        reply = self.reply
        if self.kind == "sse":
            kind = frame[frame.find(b"event: ") + 7 : at - 1]
            if kind == b"delta":
                reply.text(len(orjson.loads(data)["text"]), self.loop.time())
            elif kind == b"done":
                reply.finished = True
            elif kind == b"error":
                reply.error = str(orjson.loads(data).get("code", "error"))
        elif data == b"[DONE]":
            reply.finished = True
        elif self.kind == "direct":
            choices = orjson.loads(data).get("choices")
            if choices:
                reply.text(len(choices[0]["delta"].get("content") or ""), self.loop.time())
        else:  # naive
            event = orjson.loads(data)
            if "content" in event:
                reply.text(len(event["content"]), self.loop.time())
            elif "error" in event:
                reply.error = "error_event"


class HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 client connection, one request at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.status = 0
        self.sink: SseSink | None = None
        self.body: list[bytes] = []
        self.done: asyncio.Future[None] | None = None
        self.answered = False  # any byte of the current response arrived

    async def request(self, data: bytes, sink: SseSink | None = None) -> tuple[int, bytes]:
        """Send one request; (status, body) once the response ended (body empty with a sink)."""
        if self.closed or self.transport is None:
            raise ConnectionResetError("connection closed")
        self.sink, self.body, self.status, self.answered = sink, [], 0, False
        self.done = self.loop.create_future()
        self.transport.write(data)
        await self.done
        return self.status, b"".join(self.body)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.answered = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._settle(exc)
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._settle(ConnectionResetError("connection closed mid-response"))

    def _settle(self, exc: BaseException | None) -> None:
        done = self.done
        if done is not None and not done.done():
            if exc is None:
                done.set_result(None)
            else:
                done.set_exception(exc)

    # httptools callbacks
    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        if self.sink is not None and self.status == 200:
            self.sink.feed(body)
        else:
            self.body.append(body)

    def on_message_complete(self) -> None:
        if not self.parser.should_keep_alive():
            self.closed = True
        self._settle(None)


class WsConnection(asyncio.Protocol):
    """A WebSocket client: the upgrade, then unmasked server frames in, masked frames out."""

    def __init__(self, loop: asyncio.AbstractEventLoop, head: bytes) -> None:
        self.loop = loop
        self.head = head
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed = False
        self.buf = b""
        self.upgraded = False
        self.pongs = 0
        self.on_pong: Callable[[], None] | None = None
        # request_id → (reply, future settled at its terminal event)
        self.requests: dict[str, tuple[Reply, asyncio.Future[None]]] = {}

    def follow(self, request_id: str, reply: Reply, ended: asyncio.Future[None]) -> None:
        self.requests[request_id] = (reply, ended)

    def send_text(self, payload: bytes) -> None:
        if self.closed or self.transport is None:
            raise ConnectionResetError("websocket closed")
        mask = os.urandom(4)
        size = len(payload)
        if size < 126:
            head = bytes((0x81, 0x80 | size))
        elif size < 65536:
            head = bytes((0x81, 0xFE)) + size.to_bytes(2, "big")
        else:
            head = bytes((0x81, 0xFF)) + size.to_bytes(8, "big")
        key = int.from_bytes((mask * (size // 4 + 1))[:size], "big")
        masked = (int.from_bytes(payload, "big") ^ key).to_bytes(size, "big")
        self.transport.write(head + mask + masked)

    def send_control(self, opcode: int, payload: bytes = b"") -> None:
        if self.transport is not None and not self.closed:
            # A zero mask is a valid mask; control payloads here are tiny.
            self.transport.write(
                bytes((0x80 | opcode, 0x80 | len(payload))) + b"\0\0\0\0" + payload
            )

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.send_control(0x8, (1000).to_bytes(2, "big"))
            self.transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.head)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.opened.done():
            self.opened.set_exception(ConnectionResetError("closed during the upgrade"))
        now = self.loop.time()
        for reply, ended in self.requests.values():
            reply.close(now, error="" if reply.finished else "ws_closed")
            if not ended.done():
                ended.set_result(None)
        self.requests.clear()

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.opened.set_exception(ConnectionRefusedError(buf[:200].decode("latin-1")))
                self.buf = b""
                self.close()
                return
            self.upgraded = True
            self.opened.set_result(None)
            buf = buf[end + 4 :]
        pos, size = 0, len(buf)
        while size - pos >= 2:
            first, length = buf[pos], buf[pos + 1] & 0x7F
            at = pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length, at = int.from_bytes(buf[at : at + 2], "big"), at + 2
            elif length == 127:
                if size - pos < 10:
                    break
                length, at = int.from_bytes(buf[at : at + 8], "big"), at + 8
            if size - at < length:
                break
            self.frame(first & 0x0F, buf[at : at + length])
            pos = at + length
        self.buf = buf[pos:]

    def frame(self, opcode: int, payload: bytes) -> None:
        if opcode == 0x1:
            message = orjson.loads(payload)
            kind = message["type"]
            if kind == "pong":
                self.pongs += 1
                if self.on_pong is not None:
                    self.on_pong()
                return
            entry = self.requests.get(message.get("request_id") or "")
            if entry is None:
                return
            reply, ended = entry
            if kind == "delta":
                reply.text(len(message["text"]), self.loop.time())
            elif kind in ("done", "error"):
                reply.finished = kind == "done"
                reply.close(self.loop.time(), error="" if kind == "done" else message["code"])
                del self.requests[message["request_id"]]
                ended.set_result(None)
        elif opcode == 0x9:
            self.send_control(0xA, payload)
        elif opcode == 0x8:
            self.closed = True
            if self.transport is not None:
                self.transport.close()
