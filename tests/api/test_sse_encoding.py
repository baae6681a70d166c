"""The SSE encoder at the byte level: no delta can break a frame; pings never split one."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from daehwa.api.sse import KEEPALIVE, EventStreamResponse, encode_event
from daehwa.events import Delta, Done, Envelope
from daehwa.llm.sse import SSEDecoder

TRICKY = [
    "줄\n바꿈",
    "carriage\rreturn",
    "crlf\r\nend",
    "\n\ndata: fake\n\n",
    "id: 99\nevent: done",
    "안녕 😀 \u2028 \u0000",
    ": comment",
]


@pytest.mark.parametrize("text", TRICKY)
def test_one_frame_per_event(text: str) -> None:
    frame = encode_event(Envelope.of(7, Delta(text)))
    # Exactly one blank line, at the end: the frame cannot be split early.
    assert frame.endswith(b"\n\n")
    assert frame.count(b"\n\n") == 1
    assert b"\r" not in frame
    assert frame.startswith(b"id: 7\nevent: delta\ndata: ")
    events = SSEDecoder().feed(frame)
    assert len(events) == 1
    assert events[0].event == "delta"
    assert events[0].id == "7"
    assert orjson.loads(events[0].data) == {"text": text}


def test_frames_survive_every_split_point() -> None:
    stream = b"".join(
        encode_event(Envelope.of(seq, Delta(text))) for seq, text in enumerate(TRICKY, start=1)
    ) + encode_event(Envelope.of(len(TRICKY) + 1, Done("m", "complete", "stop", {})))
    for cut in range(1, len(stream)):
        decoder = SSEDecoder()
        events = decoder.feed(stream[:cut]) + decoder.feed(stream[cut:])
        texts = [orjson.loads(e.data).get("text") for e in events if e.event == "delta"]
        assert texts == TRICKY
        assert events[-1].event == "done"


class Socket:
    """An ASGI ``send`` that records what it wrote; ``hold`` keeps pings waiting on the socket."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.hold = asyncio.Event()
        self.hold.set()
        self.changed = asyncio.Condition()

    async def send(self, message: Any) -> None:
        body = message.get("body", b"")
        if body == KEEPALIVE:
            await self.note("ping")
            await self.hold.wait()
            await self.note("ping sent")
        elif body:
            await self.note(body.decode())

    async def note(self, what: str) -> None:
        async with self.changed:
            self.log.append(what)
            self.changed.notify_all()

    async def until(self, what: str) -> None:
        async with asyncio.timeout(10), self.changed:
            await self.changed.wait_for(lambda: what in self.log)


async def never_disconnects() -> Any:
    await asyncio.Event().wait()


async def gated(gate: asyncio.Event) -> AsyncIterator[list[Envelope]]:
    await gate.wait()
    yield [Envelope.of(1, Delta("안녕"))]
    yield [Envelope.of(2, Done("m", "complete", "stop", {}))]


async def test_a_quiet_stream_gets_pings_and_a_frame_never_overlaps_one() -> None:
    socket, gate = Socket(), asyncio.Event()
    socket.hold.clear()
    response = EventStreamResponse(gated(gate), ping_interval=0.001)
    task = asyncio.create_task(response({"type": "http"}, never_disconnects, socket.send))
    await socket.until("ping")
    gate.set()  # the frames are ready while the ping still waits on the socket
    for _ in range(20):
        await asyncio.sleep(0)
    assert socket.log == ["ping"]
    socket.hold.set()
    await task
    frames = [entry for entry in socket.log if not entry.startswith("ping")]
    assert socket.log.index("ping sent") < socket.log.index(frames[0])
    events = SSEDecoder().feed("".join(frames).encode())
    assert [(e.id, e.event) for e in events] == [("1", "delta"), ("2", "done")]


async def test_events_ready_together_go_out_in_one_write() -> None:
    async def behind() -> AsyncIterator[list[Envelope]]:
        yield [Envelope.of(seq, Delta(text)) for seq, text in enumerate(TRICKY, start=1)]
        yield [Envelope.of(len(TRICKY) + 1, Done("m", "complete", "stop", {}))]

    socket = Socket()
    await EventStreamResponse(behind())({"type": "http"}, never_disconnects, socket.send)
    assert len(socket.log) == 2
    events = SSEDecoder().feed("".join(socket.log).encode())
    assert [orjson.loads(e.data).get("text") for e in events[:-1]] == TRICKY
    assert [e.id for e in events] == [str(seq) for seq in range(1, len(TRICKY) + 2)]


async def record(events: AsyncIterator[list[Envelope]], closing: bytes = b"") -> list[Any]:
    """Every ASGI message the response sends (``receive`` never reports a disconnect)."""
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    await EventStreamResponse(events, closing=closing)({"type": "http"}, never_disconnects, send)
    return sent


async def test_the_terminal_event_ends_the_body_in_the_same_write() -> None:
    async def reply() -> AsyncIterator[list[Envelope]]:
        yield [Envelope.of(1, Delta("안녕"))]
        yield [Envelope.of(2, Done("m", "complete", "stop", {}))]

    sent = await record(reply(), closing=b"data: [DONE]\n\n")
    bodies = [(m["body"], m["more_body"]) for m in sent if m["type"] == "http.response.body"]
    assert [more for _, more in bodies] == [True, False]
    assert bodies[-1][0].startswith(b"id: 2\nevent: done\n")
    assert bodies[-1][0].endswith(b"\n\ndata: [DONE]\n\n")


async def test_a_stream_without_a_terminal_event_still_ends_the_body() -> None:
    async def cut_short() -> AsyncIterator[list[Envelope]]:
        yield [Envelope.of(1, Delta("안녕"))]

    for closing in (b"", b"data: [DONE]\n\n"):
        sent = await record(cut_short(), closing=closing)
        bodies = [(m["body"], m["more_body"]) for m in sent if m["type"] == "http.response.body"]
        assert bodies[-1] == (b"", False)
        assert sum(1 for _, more in bodies if not more) == 1
        assert b"".join(body for body, _ in bodies).endswith(closing or b"\n\n")
