"""The one Server-Sent Events encoder, and a response that streams a reply's events.

Event data is JSON (orjson): newlines and carriage returns inside a delta are
escaped, so they can never end a frame early. A frame costs one bytes format,
one ``orjson.dumps`` and one ``send``; no lock or timer is touched per frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from daehwa.events import Envelope

log = logging.getLogger(__name__)

PING_INTERVAL = 15.0
KEEPALIVE = b": ping\n\n"

# The middle of a frame, per event type: built once, not per frame.
_HEADS: dict[str, bytes] = {}


def encode_event(envelope: Envelope) -> bytes:
    """One SSE frame: ``id``, ``event`` and one ``data`` line of JSON."""
    head = _HEADS.get(envelope.type)
    if head is None:
        head = _HEADS[envelope.type] = b"\nevent: %s\ndata: " % envelope.type.encode()
    return b"id: %d%b%b\n\n" % (envelope.seq, head, orjson.dumps(envelope.data))


class EventStreamResponse(Response):
    """Streams envelopes as SSE until the terminal event or the client leaves.

    ``events`` yields lists of the envelopes that are ready together: a list
    goes out in one ``send``, so a reader that fell behind catches up with one
    write instead of one per event. The terminal event's ``send`` also ends
    the body (and carries ``closing``): a reply's last frame costs one write.

    Sending, keep-alive pings and watching for disconnect run as concurrent
    tasks; the first to finish ends the others. Leaving never stops the run
    that produces the events: it only stops this reader. A ping goes out only
    on a stream that sent nothing for a whole interval, so the two writers
    never overlap and frames need no lock.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        events: AsyncIterator[Sequence[Envelope]],
        *,
        encode: Callable[[Envelope], bytes | None] = encode_event,
        closing: bytes = b"",
        ping_interval: float = PING_INTERVAL,
        headers: dict[str, str] | None = None,
    ) -> None:
        # Like StreamingResponse: no body, so no Content-Length header.
        self.status_code = 200
        self.background = None
        self.init_headers(
            {"cache-control": "no-cache", "x-accel-buffering": "no", **(headers or {})}
        )
        self.events = events
        self.encode = encode
        self.closing = closing
        self.ping_interval = ping_interval
        # Frames sent so far, and whether one is being sent (its send may wait on the socket).
        self._sent = 0
        self._sending = False
        # Whether the body's end went out with the terminal event.
        self._ended = False
        # Set while a ping is being sent; the next frame waits for it.
        self._pinging: asyncio.Future[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        tasks = [
            asyncio.create_task(self._stream(send)),
            asyncio.create_task(self._ping(send)),
            asyncio.create_task(_wait_disconnect(receive)),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            aclose = getattr(self.events, "aclose", None)
            if aclose is not None:
                await aclose()
        stream_task = tasks[0]
        if stream_task in done and stream_task.exception() is not None:
            log.error("event stream failed", exc_info=stream_task.exception())
        elif stream_task in done and not self._ended:
            with contextlib.suppress(OSError):
                await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _write(self, send: Send, body: bytes, *, last: bool = False) -> None:
        if self._pinging is not None:
            await asyncio.shield(self._pinging)
        self._sending = True
        try:
            await send({"type": "http.response.body", "body": body, "more_body": not last})
        finally:
            self._sending = False
        self._sent += 1
        self._ended = last

    async def _stream(self, send: Send) -> None:
        encode = self.encode
        async for batch in self.events:
            if len(batch) == 1:
                body = encode(batch[0])
            else:
                body = b"".join([frame for e in batch if (frame := encode(e))])
            if batch[-1].terminal:
                # The terminal event, the closing line and the body's end in one write.
                await self._write(send, (body or b"") + self.closing, last=True)
                return
            if body:
                await self._write(send, body)
        if self.closing:
            await self._write(send, self.closing)

    async def _ping(self, send: Send) -> None:
        seen = 0
        while True:
            await asyncio.sleep(self.ping_interval)
            if self._sent != seen or self._sending:
                seen = self._sent  # frames went out meanwhile: the stream is not quiet
                continue
            self._pinging = asyncio.get_running_loop().create_future()
            try:
                await send({"type": "http.response.body", "body": KEEPALIVE, "more_body": True})
            finally:
                self._pinging.set_result(None)
                self._pinging = None


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message: dict[str, Any] = dict(await receive())
        if message["type"] == "http.disconnect":
            return
