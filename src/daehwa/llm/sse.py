"""An incremental Server-Sent Events decoder for upstream model streams.

Bytes go in as they arrive from the socket; whole events come out. The rules
(WHATWG event-stream format, as upstream LLM APIs use it):

- an event ends at a blank line; lines end with ``\\n``, ``\\r\\n`` or ``\\r``,
  even mixed, and a line ending may straddle two reads;
- ``field:value`` with one optional space after the colon; ``:`` lines are
  comments (keep-alives); unknown fields are ignored;
- several ``data:`` lines join with ``\\n``;
- bytes are split into events *before* UTF-8 decoding, so a multi-byte
  character cut by a TCP read is decoded whole;
- at end of input, bytes after the last blank line are a partial event: it is
  dropped and :attr:`SSEDecoder.truncated` is set.
"""

from __future__ import annotations

from dataclasses import dataclass

_BOM = b"\xef\xbb\xbf"
# One event larger than this is a broken or hostile upstream, not a model reply.
DEFAULT_MAX_EVENT_BYTES = 8 * 1024 * 1024


class SSEError(ValueError):
    """The byte stream cannot be an event stream (an event exceeds the size limit)."""


# Not frozen: a frozen dataclass costs ~1 µs more per event, on the hot path.
@dataclass(slots=True)
class SSEEvent:
    """One dispatched event: its type (``message`` when unnamed), data and id."""

    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None


def _parse_block(block: str) -> SSEEvent | None:
    """Turn the lines of one event into an :class:`SSEEvent` (None if it has no fields)."""
    # Fast path: the common OpenAI-style event is a single ``data:`` line.
    if block.startswith("data:") and "\n" not in block:
        value = block[5:]
        return SSEEvent(value[1:] if value.startswith(" ") else value)
    data: list[str] = []
    event = ""
    event_id: str | None = None
    retry: int | None = None
    for line in block.split("\n"):
        if not line or line[0] == ":":
            continue
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id":
            if "\0" not in value:
                event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            retry = int(value)
    if not data and not event:
        # Comments only, or just id/retry: nothing to dispatch.
        return None
    return SSEEvent("\n".join(data), event or "message", event_id, retry)


class SSEDecoder:
    """Feed raw bytes with :meth:`feed`, call :meth:`finish` at end of input.

    Not thread-safe; one decoder per response.
    """

    __slots__ = ("_buf", "_cr", "_started", "max_event_bytes", "truncated")

    def __init__(self, *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._buf = bytearray()
        self._cr = False  # the previous read ended in "\r": maybe half of "\r\n"
        self._started = False
        self.max_event_bytes = max_event_bytes
        #: Set by :meth:`finish` when the input ended inside an event.
        self.truncated = False

    def feed(self, data: bytes | bytearray | memoryview) -> list[SSEEvent]:
        """Add bytes; return the events they complete (possibly none)."""
        chunk = data if type(data) is bytes else bytes(data)
        if self._cr:
            chunk = b"\r" + chunk
            self._cr = False
        if not self._started and chunk:
            chunk = bytes(self._buf) + chunk
            self._buf.clear()
            if len(chunk) < len(_BOM) and _BOM.startswith(chunk):
                # Too short to know whether this is a byte-order mark; wait.
                self._buf += chunk
                return []
            self._started = True
            if chunk.startswith(_BOM):
                chunk = chunk[len(_BOM) :]
        if b"\r" in chunk:
            if chunk.endswith(b"\r"):
                # Hold it back: the next read may start with the "\n" of a CRLF.
                chunk = chunk[:-1]
                self._cr = True
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        return self._split(chunk)

    def feed_data(self, data: bytes) -> list[bytes]:
        """Like :meth:`feed`, for a stream that reads only each event's data, as UTF-8.

        A read of whole one-line ``data: …`` events, the usual shape of a
        chat-completion stream, is split in one pass, with no event object and
        no decoding (a JSON parser takes the bytes as they are); any other read
        goes through :meth:`feed`.
        """
        if (
            self._started
            and not self._buf
            and not self._cr
            and data.startswith(b"data: ")
            and data.endswith(b"\n\n")
            and b"\r" not in data
        ):
            values = data[6:-2].split(b"\n\ndata: ")
            # A line break left in a value means some other line: not this shape.
            for value in values:
                if b"\n" in value:
                    break
            else:
                return values
        return [event.data.encode() for event in self.feed(data)]

    def finish(self) -> list[SSEEvent]:
        """Mark the end of input; return any event completed by a held-back ``\\r``.

        Afterwards :attr:`truncated` says whether a partial event was dropped.
        """
        events: list[SSEEvent] = []
        if self._cr:
            self._cr = False
            events = self._split(b"\n")
        rest = bytes(self._buf).strip(b"\n")
        self._buf.clear()
        # Only comment lines left over is not a truncated event.
        self.truncated = any(line and not line.startswith(b":") for line in rest.split(b"\n"))
        return events

    def _split(self, chunk: bytes) -> list[SSEEvent]:
        buf = self._buf
        if buf:
            # A blank line may be formed by the "\n" ending buf and the one starting chunk.
            scan = len(buf) - 1
            buf += chunk
            data: bytes | bytearray = buf
        else:
            # Fast path, no copy: most reads start at an event boundary.
            scan = 0
            data = chunk
        end = data.find(b"\n\n", scan)
        if end < 0:
            if not buf:
                buf += chunk
            if len(buf) > self.max_event_bytes:
                raise SSEError(f"an event is larger than {self.max_event_bytes} bytes")
            return []
        events: list[SSEEvent] = []
        pos = 0
        while end >= 0:
            if end > pos:
                event = _parse_block(data[pos:end].decode("utf-8", "replace"))
                if event is not None:
                    events.append(event)
            pos = end + 2
            end = data.find(b"\n\n", pos)
        if data is buf:
            del buf[:pos]
        elif pos < len(data):
            buf += data[pos:]
        return events
