"""One HTTP/1.1 connection (an asyncio protocol fed to httptools) and its response.

Internal to :mod:`daehwa.llm.http`; only :class:`UpstreamResponse` is public.
Per body piece the work is one parser callback, one deque append and, when the
reader waits, one future wake-up. The read timeout is one timer per response
that re-arms itself from the time of the last read, not one timer per read.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import cast

import httptools

from daehwa.errors import ProviderError, ProviderTimeout
from daehwa.llm.pacing import Pacer

# A paced response that already holds pieces resumes reading, then waits this long
# at most for what the kernel gathered meanwhile before handing over what it has.
SETTLE = 0.002
# A timer may fire up to this much before its time (the loop's clock counts whole ms).
EARLY = 0.001
# Pause the socket when this much body is buffered and unread; resume below LOW.
HIGH_WATER = 1024 * 1024
LOW_WATER = 256 * 1024


class StaleConnection(Exception):
    """A reused keep-alive connection closed before answering; safe to retry once."""


def _disconnected(label: str, detail: str) -> ProviderError:
    return ProviderError(
        f"{label}: {detail}", code="upstream_disconnected", retryable=True, provider=label
    )


class UpstreamResponse:
    """The status, headers and streamed body of one upstream response.

    Iterate it (``async for piece in response``) for body bytes as they
    arrive, or ``await read()``. Always ``await aclose()``: it returns the
    connection to the pool when the body was read to its end, else drops it.
    """

    __slots__ = (
        "_buffered",
        "_chunks",
        "_closed",
        "_conn",
        "_done",
        "_due",
        "_error",
        "_headers_done",
        "_last",
        "_loop",
        "_pacer",
        "_paused",
        "_pausing",
        "_phase",
        "_put_back",
        "_release_slot",
        "_timeout",
        "_timer",
        "_waiter",
        "got_bytes",
        "headers",
        "reason",
        "status",
    )

    def __init__(
        self,
        conn: Connection,
        timeout: float,
        release_slot: Callable[[], None],
        put_back: Callable[[Connection], None],
        pacer: Pacer | None = None,
    ) -> None:
        self._conn = conn
        self._loop = conn.loop
        self._timeout = timeout
        self._release_slot = release_slot
        self._put_back = put_back
        self._pacer = pacer
        self._pausing = False
        # Paced (set by start_pacing): the phase of the pace this response is read in
        # (see Pacer), -1 while not paced, and the tick of its next hand-over.
        self._phase = -1
        self._due = 0
        self.status = 0
        self.reason = ""
        #: Response headers, names in lower case (repeated headers joined by ", ").
        self.headers: dict[str, str] = {}
        self.got_bytes = False
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._headers_done = False
        self._done = False
        self._closed = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._last = self._loop.time()
        self._timer: asyncio.TimerHandle | None = self._loop.call_at(
            self._last + timeout, self._check_silence
        )

    @property
    def complete(self) -> bool:
        """Whether the whole body has been received (by its HTTP framing)."""
        return self._done

    # -- fed by the connection ------------------------------------------------
    def on_headers(self, status: int, reason: str, headers: dict[str, str]) -> None:
        self.status, self.reason, self.headers = status, reason, headers
        self._headers_done = True
        self._wake()

    def on_body(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > HIGH_WATER and not self._paused:
            self._paused = True
            self._conn.pause_reading()
        # _wake(), inlined: this runs once per streamed event. A paced reader
        # sleeps on through it: the piece waits for the next hand-over.
        waiter = self._waiter
        if waiter is not None and not self._pausing and not waiter.done():
            waiter.set_result(None)

    def on_complete(self) -> None:
        self._done = True
        self._stop_timer()
        self._wake()

    def on_error(self, exc: BaseException) -> None:
        if self._error is None and not self._done:
            self._error = exc
        self._stop_timer()
        self._wake()

    def on_bytes(self) -> None:
        self.got_bytes = True
        self._last = self._loop.time()

    # -- read by the caller -----------------------------------------------------
    async def wait_headers(self) -> None:
        """Wait for the status line and headers (raises the connection's error)."""
        while not self._headers_done:
            if self._error is not None:
                raise self._error
            await self._wait()

    def __aiter__(self) -> UpstreamResponse:
        return self

    async def __anext__(self) -> bytes:
        while True:
            if self._phase >= 0 and not self._done and self._error is None:
                # Paced: one hand-over per pace, on the ticks of this response's
                # phase. The socket is paused right after a hand-over, not when the
                # next piece arrives: what arrives meanwhile waits in the kernel.
                pacer = cast(Pacer, self._pacer)
                now = self._loop.time()
                due = self._due * pacer.tick
                if now < due - EARLY:
                    await self._pause(due)
                    continue
                if self._chunks:
                    self._due += pacer.phases
                    if self._due * pacer.tick < now:
                        # More than a pace late (a quiet upstream, a loop behind): start over.
                        self._due = pacer.first_tick(self._phase, now + pacer.pace / 2)
            chunks = self._chunks
            if chunks:
                # Hand over everything buffered at once: fewer wake-ups under load.
                data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self._buffered = 0
                if self._paused:
                    self._paused = False
                    self._conn.resume_reading()
                return data
            if self._error is not None:
                raise self._error
            if self._done:
                raise StopAsyncIteration
            await self._wait()

    @property
    def next_handover(self) -> float | None:
        """The loop time of the next paced hand-over (None while not paced)."""
        if self._phase < 0:
            return None
        return self._due * cast(Pacer, self._pacer).tick

    def start_pacing(self) -> None:
        """From now on, hand body pieces over once per pace of the pacer.

        A streaming reader calls this once the first text is out, so the first
        token is never held; before, and without a pacer, each piece goes at once.
        The next hand-over is on the first tick of the response's phase at least
        half a pace away.
        """
        pacer = self._pacer
        if pacer is not None and self._phase < 0 and not self._closed:
            self._phase = pacer.join()
            self._due = pacer.first_tick(self._phase, self._loop.time() + pacer.pace / 2)

    async def read(self, limit: int = 1024 * 1024) -> bytes:
        """The whole body, or its first ``limit`` bytes (error bodies are small)."""
        parts: list[bytes] = []
        size = 0
        async for piece in self:
            parts.append(piece)
            size += len(piece)
            if size >= limit:
                break
        return b"".join(parts)[:limit]

    async def aclose(self, *, drain: float = 0.0) -> None:
        """Release the connection; wait up to ``drain`` s for the body's end to reuse it."""
        if self._closed:
            return
        self._closed = True
        try:
            if drain > 0 and not self._done and self._error is None:
                # The end of a chunked body usually trails the last event by microseconds.
                try:
                    async with asyncio.timeout(drain):
                        while not self._done and self._error is None:
                            self._chunks.clear()
                            self._buffered = 0
                            await self._wait()
                except TimeoutError:
                    pass
        finally:
            self._stop_timer()
            self._stop_pacing()
            conn = self._conn
            if conn.response is self:
                conn.response = None
            if self._done and self._error is None and conn.keep_alive and conn.usable:
                self._put_back(conn)
            else:
                conn.abort()
            self._release_slot()

    def abandon(self) -> None:
        """Drop the connection without releasing the pool slot (the caller still holds it)."""
        self._closed = True
        self._stop_timer()
        self._stop_pacing()
        if self._conn.response is self:
            self._conn.response = None
        self._conn.abort()

    async def __aenter__(self) -> UpstreamResponse:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- internals ------------------------------------------------------------
    async def _wait(self) -> None:
        waiter = self._loop.create_future()
        self._waiter = waiter
        try:
            await waiter
        finally:
            self._waiter = None

    async def _pause(self, until: float) -> None:
        """Wait until loop time ``until``, the socket not read meanwhile.

        The kernel gathers what arrives. At ``until`` reading resumes, and the
        first piece read wakes the reader (``on_body``), so one read hands it
        all over; if pieces were already buffered, :data:`SETTLE` later the
        reader goes on anyway, for when nothing more was waiting. The body's
        end, or a dropped connection, is seen with that read (at most a pace
        and a half late).
        """
        stopped = not self._paused
        if stopped:
            self._conn.pause_reading()
        self._pausing = True
        timers: list[asyncio.TimerHandle] = []
        timers.append(self._loop.call_at(until, self._end_pause, stopped, timers))
        try:
            await self._wait()
        finally:
            self._pausing = False
            for timer in timers:
                timer.cancel()
            if stopped and not self._paused:  # resuming twice is harmless
                self._conn.resume_reading()

    def _end_pause(self, stopped: bool, timers: list[asyncio.TimerHandle]) -> None:
        self._pausing = False
        if stopped and not self._paused:
            self._conn.resume_reading()
        if self._chunks:
            # Pieces came in as the pause began (or the buffer is full and the socket
            # stays paused): hand them over soon even if nothing more arrives. From
            # now, not from ``until``: a late loop must still poll the socket first.
            timers.append(self._loop.call_later(SETTLE, self._wake))

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _stop_pacing(self) -> None:
        if self._phase >= 0:
            cast(Pacer, self._pacer).leave(self._phase)
            self._phase = -1

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check_silence(self) -> None:
        self._timer = None
        if self._done or self._error is not None:
            return
        deadline = self._last + self._timeout
        if self._waiter is None or self._loop.time() < deadline:
            # Data arrived meanwhile, or the reader is busy elsewhere: not the upstream's fault.
            self._timer = self._loop.call_at(
                max(deadline, self._loop.time() + 0.01), self._check_silence
            )
            return
        label = self._conn.label
        self.on_error(ProviderTimeout(f"{label}: no data for {self._timeout:g} s", provider=label))
        self._conn.abort()


class Connection(asyncio.Protocol):
    """One keep-alive connection; carries at most one response at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, label: str) -> None:
        self.loop = loop
        self.label = label
        self.transport: asyncio.Transport | None = None
        self.response: UpstreamResponse | None = None
        self.keep_alive = True
        self.idle_since = 0.0
        self.requests = 0
        self._lost = False
        self._parser = httptools.HttpResponseParser(self)
        self._status_reason = ""
        self._header_list: list[tuple[bytes, bytes]] = []
        self._informational = False
        self._close_delimited = False

    @property
    def usable(self) -> bool:
        """Still open and ready for another request."""
        return not self._lost and self.transport is not None and not self.transport.is_closing()

    def send(
        self,
        data: bytes,
        timeout: float,
        release_slot: Callable[[], None],
        put_back: Callable[[Connection], None],
        pacer: Pacer | None = None,
    ) -> UpstreamResponse:
        """Write one request; its response streams into the returned object."""
        if not self.usable or self.transport is None:
            if self.requests:
                raise StaleConnection
            raise _disconnected(self.label, "the connection closed before the request was sent")
        response = UpstreamResponse(self, timeout, release_slot, put_back, pacer)
        self.response = response
        self.requests += 1
        self.keep_alive = True
        self.transport.write(data)
        return response

    def pause_reading(self) -> None:
        if self.transport is not None and not self._lost:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self._lost:
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.keep_alive = False
        if self.transport is not None:
            self.transport.abort()

    # -- asyncio.Protocol -----------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only look-alikes.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:
            # Bytes nobody asked for: the connection cannot be trusted for reuse.
            self.abort()
            return
        response.on_bytes()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            response.on_error(
                ProviderError(
                    f"{self.label}: malformed HTTP response ({exc})",
                    code="upstream_protocol_error",
                    retryable=True,
                    provider=self.label,
                )
            )
            self.abort()

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost settles the response

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        response = self.response
        if response is None or response.complete:
            return
        if not response.got_bytes and self.requests > 1:
            response.on_error(StaleConnection())
        elif self._close_delimited and response.status:
            response.on_complete()  # a body without length ends when the connection does
        else:
            detail = f" ({exc})" if exc else ""
            response.on_error(
                _disconnected(self.label, f"connection closed before the response ended{detail}")
            )

    # -- httptools callbacks ----------------------------------------------------
    def on_status(self, status: bytes) -> None:
        self._status_reason = status.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_list.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        headers: dict[str, str] = {}
        for raw_name, raw_value in self._header_list:
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        self._header_list = []
        self._informational = 100 <= status < 200
        if self._informational or self.response is None:
            return  # 100 Continue, 103 Early Hints: the real answer follows
        self._close_delimited = (
            "content-length" not in headers
            and "chunked" not in headers.get("transfer-encoding", "").lower()
            and status not in (204, 304)
        )
        self.response.on_headers(status, self._status_reason, headers)

    def on_body(self, body: bytes) -> None:
        if self.response is not None:
            self.response.on_body(body)

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        self.keep_alive = self._parser.should_keep_alive()
        response, self.response = self.response, None
        if response is not None:
            response.on_complete()
