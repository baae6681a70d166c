"""A small asyncio HTTP/1.1 server for fake upstreams: real sockets, cheap per event.

Subclasses implement :meth:`FakeHTTPServer.handle`, answering through a
:class:`Reply` that can send a JSON body, or stream a body piece by piece with
chunked, close-delimited or Content-Length framing — and misbehave on purpose
(cut a write in two, stall, drop the connection mid-body). Every request is
recorded (method, path, headers, JSON body) for assertions.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as ssl_module
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal, Self

import orjson

Framing = Literal["chunked", "close", "length"]
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    411: "Length Required",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass
class RecordedRequest:
    """One request as the fake received it; header names are lower case."""

    method: str
    path: str
    headers: dict[str, str]
    raw_body: bytes
    json: Any = None


class DropConnection(Exception):
    """Raised by a handler to close the connection without a proper ending."""


@dataclass
class Reply:
    """The response side of one exchange."""

    writer: asyncio.StreamWriter
    framing: Framing = "chunked"
    keep_alive: bool = True
    _buffer: list[bytes] = field(default_factory=list)
    started: bool = False

    async def json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        """Send a whole JSON response with Content-Length."""
        payload = orjson.dumps(body)
        head = self._head(status, {"content-type": "application/json", **(headers or {})})
        head += b"content-length: %d\r\n\r\n" % len(payload)
        self.writer.write(head + payload)
        await self.writer.drain()

    async def start(
        self,
        status: int = 200,
        headers: dict[str, str] | None = None,
        framing: Framing = "chunked",
    ) -> None:
        """Send the status line and headers of a streamed body."""
        self.framing = framing
        self.started = True
        hdrs = {"content-type": "text/event-stream; charset=utf-8", **(headers or {})}
        head = self._head(status, hdrs)
        if framing == "chunked":
            head += b"transfer-encoding: chunked\r\n\r\n"
        elif framing == "close":
            self.keep_alive = False
            head += b"connection: close\r\n\r\n"
        else:
            self._buffer.append(head)  # sent at end(), once the length is known
            return
        self.writer.write(head)

    async def write(self, data: bytes, *, split_at: int | None = None, pause: float = 0.0) -> None:
        """Write body bytes; ``split_at`` cuts them into two writes ``pause`` s apart."""
        if split_at is not None and 0 < split_at < len(data):
            await self.write(data[:split_at])
            await self.writer.drain()
            await asyncio.sleep(pause)
            await self.write(data[split_at:])
            return
        if self.framing == "chunked":
            self.writer.write(b"%x\r\n%s\r\n" % (len(data), data))
        elif self.framing == "close":
            self.writer.write(data)
        else:
            self._buffer.append(data)
            return
        await self.writer.drain()

    async def end(self) -> None:
        """Finish the body by its framing."""
        if self.framing == "chunked":
            self.writer.write(b"0\r\n\r\n")
        elif self.framing == "length":
            head, body = self._buffer[0], b"".join(self._buffer[1:])
            self.writer.write(head + b"content-length: %d\r\n\r\n" % len(body) + body)
        await self.writer.drain()

    def _head(self, status: int, headers: dict[str, str]) -> bytes:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        return ("\r\n".join(lines) + "\r\n").encode("latin-1")


class FakeHTTPServer:
    """Listens on 127.0.0.1 (an ephemeral port by default); use ``async with``."""

    def __init__(
        self, *, port: int = 0, record: int = 1000, ssl: ssl_module.SSLContext | None = None
    ) -> None:
        self.port = port
        self.ssl = ssl
        #: The last ``record`` requests received, oldest first.
        self.requests: deque[RecordedRequest] = deque(maxlen=record)
        #: TCP connections accepted so far (asserts keep-alive reuse), and still open.
        self.connections = 0
        self.open_connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (``https`` with TLS)."""
        return f"{'https' if self.ssl else 'http'}://127.0.0.1:{self.port}"

    async def start(self) -> Self:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, backlog=2048, ssl=self.ssl
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def handle(self, request: RecordedRequest, reply: Reply) -> None:
        """Answer one request (subclasses override)."""
        await reply.json(404, {"error": {"message": "not found"}})

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        self.open_connections += 1
        try:
            while await self._exchange(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, DropConnection):
            writer.transport.abort()
        except asyncio.CancelledError:
            # Shutdown. Ending quietly: asyncio's stream callback would log a cancelled task.
            writer.transport.abort()
        finally:
            self.open_connections -= 1
            self._tasks.discard(task)
            writer.close()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return False
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, path, _ = request_line.split(" ", 2)
        headers: dict[str, str] = {}
        for line in header_lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        reply = Reply(writer)
        if "content-length" not in headers and method in ("POST", "PUT"):
            await reply.json(411, {"error": {"message": "content-length required"}})
            return False
        raw = await reader.readexactly(int(headers.get("content-length", "0")))
        body: Any = None
        if raw:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                body = None
        request = RecordedRequest(method, path, headers, raw, body)
        self.requests.append(request)
        await self.handle(request, reply)
        return reply.keep_alive and headers.get("connection", "").lower() != "close"
