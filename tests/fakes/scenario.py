"""What a scripted fake upstream (CLOVA, Anthropic, Bedrock) does for one request.

A scenario is written as a spec string — a kind, then ``key=value`` pairs —
e.g. ``"text tokens=200 delay=0.01 split=1"``. Each fake takes one, in order,
from its queue (:meth:`ScriptedUpstream.enqueue`), the ``x-fake-scenario``
request header, then its default.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections import deque
from dataclasses import dataclass
from typing import Any

from tests.fakes.http_server import FakeHTTPServer, RecordedRequest, Reply

DEFAULT_TEXT = "안녕하세요! 무엇을 도와드릴까요? 오늘 서울은 맑습니다."


@dataclass
class Scenario:
    """One request's behaviour; which kinds exist is up to each fake."""

    kind: str = "text"
    tokens: int | None = None  # text pieces; None: DEFAULT_TEXT in two-character pieces
    delay: float = 0.0  # seconds between two pieces
    ttft: float = 0.0  # seconds of silence between the headers and the first event
    text: str = DEFAULT_TEXT
    crlf: bool = False  # SSE with CRLF line endings
    keepalive: bool = False  # a keep-alive (comment or ping) before every event
    split: bool = False  # cut every event (frame) in two writes: inside 안, or mid-prelude
    retry_after: str | None = "1"
    stall: float = 3600.0  # how long "stall" waits (unless the client leaves first)
    thinking: bool = False  # reasoning before the answer
    variant: str = ""  # a fake-specific twist (each fake documents its own)

    @classmethod
    def parse(cls, spec: str, kinds: tuple[str, ...]) -> Scenario:
        """``"kind key=value ..."`` → Scenario; unknown kinds and keys raise ValueError."""
        kind, *pairs = spec.split()
        if kind not in kinds:
            raise ValueError(f"unknown scenario kind {kind!r} (known: {', '.join(kinds)})")
        types = {f.name: str(f.type) for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {"kind": kind}
        for pair in pairs:
            key, _, raw = pair.partition("=")
            if key not in types:
                raise ValueError(f"unknown scenario key {key!r}")
            if "bool" in types[key]:
                values[key] = raw.lower() in ("1", "true", "yes")
            elif "float" in types[key]:
                values[key] = float(raw)
            elif "int" in types[key]:
                values[key] = int(raw)
            else:
                values[key] = raw
        return cls(**values)


def pieces(text: str, count: int | None) -> list[str]:
    """Two-character pieces of ``text``; ``count`` of them, cycling, when given."""
    base = [text[i : i + 2] for i in range(0, len(text), 2)] or ["."]
    if count is None:
        return base
    return list(itertools.islice(itertools.cycle(base), count))


class ScriptedUpstream(FakeHTTPServer):
    """A fake whose requests each play a :class:`Scenario`."""

    KINDS: tuple[str, ...] = ("text",)

    def __init__(self, *, default: Scenario | str = "text", port: int = 0) -> None:
        super().__init__(port=port)
        self.default = self.scenario(default)
        self._queue: deque[Scenario] = deque()
        #: Responses the client abandoned while the fake was still sending.
        self.disconnects = 0
        self.disconnected = asyncio.Event()

    def scenario(self, spec: Scenario | str) -> Scenario:
        return Scenario.parse(spec, self.KINDS) if isinstance(spec, str) else spec

    def enqueue(self, *specs: Scenario | str) -> None:
        """Use these scenarios, in order, for the next requests."""
        self._queue.extend(self.scenario(s) for s in specs)

    def scenario_for(self, request: RecordedRequest) -> Scenario:
        if self._queue:
            return self._queue.popleft()
        if "x-fake-scenario" in request.headers:
            return self.scenario(request.headers["x-fake-scenario"])
        return self.default

    async def hold(self, reply: Reply, seconds: float) -> None:
        """Send nothing for ``seconds``, noticing (and counting) a client that leaves."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while loop.time() < deadline:
            if _client_left(reply):
                self.disconnects += 1
                self.disconnected.set()
                return
            await asyncio.sleep(0.005)


def _client_left(reply: Reply) -> bool:
    transport = reply.writer.transport
    if transport.is_closing():
        return True
    # A client that closes sends FIN; asyncio keeps the half-closed transport open and
    # only its stream reader knows (there is no public way to ask).
    reader = getattr(transport.get_protocol(), "_stream_reader", None)
    return bool(reader is not None and reader.at_eof())
