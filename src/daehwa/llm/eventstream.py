"""AWS event-stream framing (``application/vnd.amazon.eventstream``), decoded incrementally.

Amazon Bedrock streams a reply as binary frames, all integers big-endian::

    u32 total_length | u32 headers_length | u32 crc32(first 8 bytes)
    headers | payload | u32 crc32(every byte before it)

and each header is ``u8 name_length, name, u8 type, value`` (type 7, a string,
is ``u16 length, utf-8``). Frames are cut anywhere by TCP reads, even inside
the 12-byte prelude, so the decoder buffers until a whole frame is in and
checks both checksums before it trusts a byte of it.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass

__all__ = ["EventStreamDecoder", "EventStreamError", "EventStreamMessage", "HeaderValue"]

HeaderValue = bool | int | bytes | str | uuid.UUID

_PRELUDE = struct.Struct(">III")
_PRELUDE_LENGTH = 12
_CRC_LENGTH = 4
# The service limits (a frame of 16 MiB + headers of 128 KiB); bigger means a broken stream.
MAX_FRAME_BYTES = 16 * 1024 * 1024 + 128 * 1024 + _PRELUDE_LENGTH + _CRC_LENGTH
MAX_HEADERS_BYTES = 128 * 1024
# Fixed-size header values by type: byte, short, int, long, timestamp (ms), uuid.
_FIXED = {
    2: struct.Struct(">b"),
    3: struct.Struct(">h"),
    4: struct.Struct(">i"),
    5: struct.Struct(">q"),
    8: struct.Struct(">q"),
}
_U16 = struct.Struct(">H")


class EventStreamError(ValueError):
    """The bytes are not a valid event stream (bad checksum, bad length, bad header)."""


@dataclass(slots=True)
class EventStreamMessage:
    """One decoded frame: its headers and its raw payload."""

    headers: dict[str, HeaderValue]
    payload: bytes

    def header(self, name: str) -> str:
        """A string header's value, or ``""`` when it is absent or not a string."""
        value = self.headers.get(name)
        return value if isinstance(value, str) else ""

    @property
    def message_type(self) -> str:
        """``event``, ``exception`` or ``error``."""
        return self.header(":message-type")

    @property
    def event_type(self) -> str:
        """For events, their name (``chunk`` for InvokeModelWithResponseStream)."""
        return self.header(":event-type")

    @property
    def exception_type(self) -> str:
        """For exceptions, their name (e.g. ``throttlingException``)."""
        return self.header(":exception-type")


class EventStreamDecoder:
    """Feed raw bytes with :meth:`feed`; whole, checksum-verified frames come out.

    Not thread-safe; one decoder per response.
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held that do not yet make a whole frame (non-zero at EOF: truncated)."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[EventStreamMessage]:
        """Add bytes; return the frames they complete (possibly none)."""
        buf = self._buf
        buf += data
        messages: list[EventStreamMessage] = []
        pos = 0
        size = len(buf)
        while size - pos >= _PRELUDE_LENGTH:
            total, headers_length, prelude_crc = _PRELUDE.unpack_from(buf, pos)
            if zlib.crc32(buf[pos : pos + 8]) != prelude_crc:
                raise EventStreamError("prelude checksum mismatch")
            if total > MAX_FRAME_BYTES or headers_length > MAX_HEADERS_BYTES:
                raise EventStreamError(f"frame of {total} bytes exceeds the limit")
            if total < _PRELUDE_LENGTH + headers_length + _CRC_LENGTH:
                raise EventStreamError(f"frame length {total} is shorter than its parts")
            if size - pos < total:
                break
            end = pos + total
            (message_crc,) = struct.unpack_from(">I", buf, end - _CRC_LENGTH)
            if zlib.crc32(buf[pos : end - _CRC_LENGTH]) != message_crc:
                raise EventStreamError("message checksum mismatch")
            start = pos + _PRELUDE_LENGTH
            headers = _parse_headers(bytes(buf[start : start + headers_length]))
            payload = bytes(buf[start + headers_length : end - _CRC_LENGTH])
            messages.append(EventStreamMessage(headers, payload))
            pos = end
        if pos:
            del buf[:pos]
        return messages


def _parse_headers(data: bytes) -> dict[str, HeaderValue]:
    headers: dict[str, HeaderValue] = {}
    pos, end = 0, len(data)
    try:
        while pos < end:
            name_length = data[pos]
            name = data[pos + 1 : pos + 1 + name_length].decode("utf-8")
            pos += 1 + name_length
            kind = data[pos]
            pos += 1
            value: HeaderValue
            if kind == 0 or kind == 1:
                value = kind == 0
            elif kind in _FIXED:
                fixed = _FIXED[kind]
                (value,) = fixed.unpack_from(data, pos)
                pos += fixed.size
            elif kind == 6 or kind == 7:
                (length,) = _U16.unpack_from(data, pos)
                raw = data[pos + 2 : pos + 2 + length]
                if len(raw) != length:
                    raise EventStreamError("a header value runs past the headers")
                value = raw.decode("utf-8") if kind == 7 else raw
                pos += 2 + length
            elif kind == 9:
                raw = data[pos : pos + 16]
                if len(raw) != 16:
                    raise EventStreamError("a uuid header runs past the headers")
                value = uuid.UUID(bytes=raw)
                pos += 16
            else:
                raise EventStreamError(f"unknown header value type {kind}")
            headers[name] = value
    except (IndexError, struct.error, UnicodeDecodeError) as exc:
        raise EventStreamError(f"malformed headers ({exc})") from exc
    return headers
