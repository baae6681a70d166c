"""The event-stream decoder, byte by byte, and the fake's frames against botocore's parser."""

from __future__ import annotations

import struct
import uuid
import zlib

import pytest
from botocore.eventstream import EventStreamBuffer  # type: ignore[import-untyped]

from daehwa.llm.eventstream import EventStreamDecoder, EventStreamError
from tests.fakes.bedrock_upstream import chunk_frame, exception_frame

EVENTS = [
    {"type": "message_start", "message": {"usage": {"input_tokens": 3}}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "안녕"}},
    {"type": "message_stop"},
]


def frames() -> bytes:
    return b"".join(chunk_frame(e, i) for i, e in enumerate(EVENTS)) + exception_frame(
        "throttlingException", "slow down"
    )


def test_fake_frames_parse_in_botocore() -> None:
    """botocore's parser is the reference: it checks both CRCs and the header encoding."""
    buffer = EventStreamBuffer()
    buffer.add_data(frames())
    parsed = list(buffer)
    assert [m.headers.get(":event-type") for m in parsed] == ["chunk", "chunk", "chunk", None]
    assert parsed[-1].headers[":exception-type"] == "throttlingException"
    ours = EventStreamDecoder().feed(frames())
    assert [(m.headers, m.payload) for m in ours] == [(m.headers, m.payload) for m in parsed]


@pytest.mark.parametrize("step", [1, 5, 7, 13])
def test_any_split_decodes_the_same(step: int) -> None:
    data = frames()
    decoder = EventStreamDecoder()
    out = []
    for i in range(0, len(data), step):
        out += decoder.feed(data[i : i + step])
    assert [m.event_type or m.exception_type for m in out] == [
        "chunk",
        "chunk",
        "chunk",
        "throttlingException",
    ]
    assert decoder.pending == 0
    assert out[-1].message_type == "exception"


def test_a_flipped_payload_bit_fails_the_message_crc() -> None:
    data = bytearray(chunk_frame(EVENTS[1], 0))
    data[-10] ^= 0x01
    with pytest.raises(EventStreamError, match="message checksum"):
        EventStreamDecoder().feed(bytes(data))


def test_a_flipped_length_bit_fails_the_prelude_crc() -> None:
    data = bytearray(chunk_frame(EVENTS[1], 0))
    data[3] ^= 0x01
    with pytest.raises(EventStreamError, match="prelude checksum"):
        EventStreamDecoder().feed(bytes(data))


def test_an_absurd_length_is_refused_before_buffering() -> None:
    prelude = struct.pack(">II", 1 << 30, 0)
    prelude += struct.pack(">I", zlib.crc32(prelude))
    with pytest.raises(EventStreamError, match="exceeds"):
        EventStreamDecoder().feed(prelude)


def test_every_header_type() -> None:
    raw = b""
    values: list[tuple[str, int, bytes]] = [
        ("t", 0, b""),
        ("f", 1, b""),
        ("b", 2, struct.pack(">b", -3)),
        ("h", 3, struct.pack(">h", 300)),
        ("i", 4, struct.pack(">i", -70000)),
        ("l", 5, struct.pack(">q", 1 << 40)),
        ("y", 6, struct.pack(">H", 3) + b"\x00\x01\x02"),
        ("s", 7, struct.pack(">H", 6) + "날씨".encode()),
        ("ts", 8, struct.pack(">q", 1_700_000_000_000)),
        ("u", 9, uuid.UUID(int=42).bytes),
    ]
    for name, kind, value in values:
        raw += bytes([len(name)]) + name.encode() + bytes([kind]) + value
    total = 12 + len(raw) + 2 + 4
    prelude = struct.pack(">II", total, len(raw))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + raw + b"{}"
    message += struct.pack(">I", zlib.crc32(message))
    (decoded,) = EventStreamDecoder().feed(message)
    assert decoded.headers == {
        "t": True,
        "f": False,
        "b": -3,
        "h": 300,
        "i": -70000,
        "l": 1 << 40,
        "y": b"\x00\x01\x02",
        "s": "날씨",
        "ts": 1_700_000_000_000,
        "u": uuid.UUID(int=42),
    }
    assert decoded.payload == b"{}"
    assert decoded.header("i") == ""  # not a string


def test_an_unknown_header_type_is_an_error() -> None:
    raw = b"\x01x\x0b"
    with pytest.raises(EventStreamError, match="header value type 11"):
        EventStreamDecoder().feed(_frame_with_headers(raw))


def _frame_with_headers(raw: bytes) -> bytes:
    total = 12 + len(raw) + 4
    prelude = struct.pack(">II", total, len(raw))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + raw
    return message + struct.pack(">I", zlib.crc32(message))
