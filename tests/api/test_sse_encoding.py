"""The SSE encoder at the byte level: no delta can break a frame."""

import orjson
import pytest

from daehwa.api.sse import encode_event
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
