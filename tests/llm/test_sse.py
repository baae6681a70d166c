"""Byte-level tests of the incremental SSE decoder."""

from __future__ import annotations

import itertools

import pytest

from daehwa.llm.sse import SSEDecoder, SSEError, SSEEvent

# 안 is EC 95 88: every split position below cuts it somewhere.
STREAM = (
    b": keep-alive\r\n\r\n"
    b'data: {"content":"\xec\x95\x88\xeb\x85\x95"}\r\n\r\n'
    b"event: token\nid: 7\ndata:first\ndata: second\n\n"
    b": comment\n"
    b"data:  two spaces\nunknown: ignored\nretry: 1500\n\n"
    b"data: cr only\r\r"
    b"data: [DONE]\n\n"
)
EXPECTED = [
    SSEEvent('{"content":"안녕"}'),
    SSEEvent("first\nsecond", event="token", id="7"),
    SSEEvent(" two spaces", retry=1500),
    SSEEvent("cr only"),
    SSEEvent("[DONE]"),
]


def decode(pieces: list[bytes]) -> tuple[list[SSEEvent], bool]:
    decoder = SSEDecoder()
    events: list[SSEEvent] = []
    for piece in pieces:
        events.extend(decoder.feed(piece))
    events.extend(decoder.finish())
    return events, decoder.truncated


def test_whole_stream() -> None:
    assert decode([STREAM]) == (EXPECTED, False)


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_every_split_position(cut: int) -> None:
    assert decode([STREAM[:cut], STREAM[cut:]]) == (EXPECTED, False)


def test_one_byte_at_a_time() -> None:
    assert decode([STREAM[i : i + 1] for i in range(len(STREAM))]) == (EXPECTED, False)


def test_every_pair_of_cuts_around_the_multibyte_char() -> None:
    start = STREAM.index(b"\xec")
    for a, b in itertools.combinations(range(start - 3, start + 8), 2):
        pieces = [STREAM[:a], STREAM[a:b], STREAM[b:]]
        assert decode(pieces) == (EXPECTED, False), (a, b)


def test_split_multibyte_char_is_decoded_whole() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: \xec\x95") == []
    assert decoder.feed(b"\x88\n\n") == [SSEEvent("안")]


def test_crlf_split_between_cr_and_lf_does_not_end_event_early() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\ndata: b\r") == []
    assert decoder.feed(b"\n\r") == []
    assert decoder.feed(b"\n") == [SSEEvent("a\nb")]


def test_cr_cr_at_end_of_input_completes_the_event() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: x\r\r") == []  # the last \r could start a CRLF
    assert decoder.finish() == [SSEEvent("x")]
    assert decoder.truncated is False


def test_eof_inside_an_event_is_truncated_and_dropped() -> None:
    events, truncated = decode([b"data: one\n\ndata: tw"])
    assert events == [SSEEvent("one")]
    assert truncated is True


def test_eof_after_a_single_newline_is_truncated() -> None:
    assert decode([b"data: one\n"]) == ([], True)


def test_trailing_comment_is_not_truncation() -> None:
    assert decode([b"data: one\n\n: ping\n"]) == ([SSEEvent("one")], False)


def test_empty_input() -> None:
    assert decode([]) == ([], False)


def test_comment_only_events_and_blank_lines_dispatch_nothing() -> None:
    assert decode([b": a\n\n\n\n:b\r\n\r\n"]) == ([], False)


def test_field_without_colon_and_empty_data() -> None:
    events, _ = decode([b"data\n\ndata:\ndata:\n\n"])
    assert events == [SSEEvent(""), SSEEvent("\n")]


def test_event_without_data_is_dispatched_with_its_type() -> None:
    assert decode([b"event: ping\n\n"])[0] == [SSEEvent("", event="ping")]


def test_id_with_nul_is_ignored_and_bad_retry_ignored() -> None:
    events, _ = decode([b"id: a\x00b\nretry: 1x\ndata: d\n\n"])
    assert events == [SSEEvent("d")]


def test_byte_order_mark_at_start_is_skipped_even_when_split() -> None:
    assert decode([b"\xef", b"\xbb", b"\xbfdata: x\n\n"])[0] == [SSEEvent("x")]
    # Only at the very start: later it is part of the data.
    assert decode([b"data: \xef\xbb\xbfx\n\n"])[0] == [SSEEvent("\ufeffx")]


def test_invalid_utf8_is_replaced_not_raised() -> None:
    assert decode([b"data: \xff\n\n"])[0] == [SSEEvent("\ufffd")]


def test_oversized_event_raises() -> None:
    decoder = SSEDecoder(max_event_bytes=16)
    decoder.feed(b"data: 0123456")
    with pytest.raises(SSEError):
        decoder.feed(b"789abcdef")


def test_many_events_in_one_read() -> None:
    body = b"".join(b"data: %d\n\n" % i for i in range(100))
    assert [e.data for e in decode([body])[0]] == [str(i) for i in range(100)]


def data_of(pieces: list[bytes]) -> list[str]:
    decoder = SSEDecoder()
    return [data.decode("utf-8", "replace") for p in pieces for data in decoder.feed_data(p)]


# Reads of whole one-line events take the one-pass split; the others do not.
DATA_READS = [
    b'data: {"a":"\xec\x95\x88"}\n\ndata: {"b":2}\n\ndata: [DONE]\n\n',
    b"data:  two spaces\n\ndata:no space\n\n",
    b"data: a\n\n\n\ndata: b\n\n",
    b"data: first\ndata: second\n\ndata: x\n\n",
    b"event: token\ndata: x\n\ndata: y\n\n",
    b"data: crlf\r\n\r\ndata: y\n\n",
    b"data: x\n\n: comment\n\n",
    b"data: \xff broken\n\n",
]


@pytest.mark.parametrize("read", DATA_READS)
def test_feed_data_gives_the_data_feed_gives(read: bytes) -> None:
    after_first = [b"data: 0\n\n", read]
    assert data_of(after_first) == [e.data for e in decode(after_first)[0]]


@pytest.mark.parametrize("cut", range(1, len(DATA_READS[0])))
def test_feed_data_across_split_reads(cut: int) -> None:
    read = DATA_READS[0]
    assert data_of([b"data: 0\n\n", read[:cut], read[cut:], read]) == [
        "0",
        '{"a":"안"}',
        '{"b":2}',
        "[DONE]",
        '{"a":"안"}',
        '{"b":2}',
        "[DONE]",
    ]
