"""The protocol every model provider implements, and the pieces it streams."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any, Protocol, TypeVar, runtime_checkable

from daehwa.errors import ProviderError
from daehwa.messages import Message, ToolCall, Usage


@dataclass(slots=True, frozen=True)
class ToolSpec:
    """A tool the model may call: a name, a description and a JSON schema."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(slots=True, frozen=True)
class GenerationParams:
    """What a caller asks of one generation."""

    max_new_tokens: int = 512
    temperature: float | None = None
    stop: tuple[str, ...] = ()
    tools: tuple[ToolSpec, ...] = ()
    # Per-request identifier forwarded to upstreams that accept one.
    request_id: str | None = None
    # A stable key (e.g. the conversation id) that lets a model reuse a cached prompt prefix.
    cache_key: str | None = None


@dataclass(slots=True)
class Chunk:
    """One piece of a streamed answer.

    ``text`` is reply text; ``reasoning`` is the model's thinking, which is
    never part of the reply. ``tool_calls`` are complete calls (providers join
    argument pieces before yielding). The last chunk carries ``finish_reason``
    and, where the upstream reports it, ``usage``.
    """

    text: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage | None = None


_OTHER, _TEXT, _REASONING = 0, 1, 2


def _kind(chunk: Chunk) -> int:
    if chunk.tool_calls or chunk.finish_reason is not None or chunk.usage is not None:
        return _OTHER
    if chunk.reasoning:
        return _OTHER if chunk.text else _REASONING
    return _TEXT


def joined_chunks(chunks: Iterable[Chunk | None]) -> list[Chunk]:
    """The chunks of one network read, neighbours with only text (or only reasoning) joined.

    A paced upstream response (``[chat] delta_interval``) hands over several
    events at once; joined, they cost one filter pass, one run-log event and one
    frame to the client instead of one each. ``None`` items are skipped; order
    is kept, and so is every chunk that carries more than text or reasoning.
    """
    joined: list[Chunk] = []
    for kind, group in groupby((c for c in chunks if c is not None), key=_kind):
        if kind == _OTHER:
            joined.extend(group)
            continue
        run = list(group)
        if len(run) == 1:
            joined.append(run[0])
        elif kind == _TEXT:
            joined.append(Chunk(text="".join([c.text for c in run])))
        else:
            joined.append(Chunk(reasoning="".join([c.reasoning for c in run])))
    return joined


Event = TypeVar("Event")


def read_piece(
    read: Callable[[Event], Chunk | None], events: Iterable[Event], started: Callable[[], None]
) -> tuple[list[Chunk], Exception | None]:
    """The chunks of the events of one network read, joined (:func:`joined_chunks`).

    An error from ``read`` stops the reading and is returned rather than raised,
    so the caller yields the chunks read before it, then raises it: joining
    never holds back text that came before an error. ``started`` is called when
    there is a chunk (the upstream response starts pacing then).
    """
    chunks: list[Chunk | None] = []
    error: Exception | None = None
    try:
        for event in events:
            chunks.append(read(event))
    except Exception as exc:
        error = exc
    joined = joined_chunks(chunks)
    if joined:
        started()
    return joined, error


def piece_chunks(
    read: Callable[[Event], Chunk | None], events: Iterable[Event], started: Callable[[], None]
) -> Iterator[Chunk]:
    """:func:`read_piece`'s chunks, then its error raised.

    A provider's stream loop relays one network read with
    ``for chunk in piece_chunks(...): yield chunk``.
    """
    yield from relay_piece(read_piece(read, events, _nothing), started)


def relay_piece(
    piece: tuple[list[Chunk], Exception | None], started: Callable[[], None]
) -> Iterator[Chunk]:
    """A network read's chunks and error (as :func:`read_piece` returns them) relayed:
    ``started`` called if there are chunks, the chunks, then the error raised."""
    chunks, error = piece
    if chunks:
        started()
    yield from chunks
    if error is not None:
        raise error


def _nothing() -> None:
    return None


@runtime_checkable
class ChatModel(Protocol):
    """A model that streams an answer to a list of messages.

    Implementations translate their own errors into
    :class:`daehwa.errors.ProviderError` subclasses, close what they open when
    the iterator is closed, and never retry on their own (the resilience
    wrapper owns the one retry loop).
    """

    name: str

    def stream(self, messages: Sequence[Message], params: GenerationParams) -> AsyncIterator[Chunk]:
        """Stream the answer; cancelling or closing the iterator stops generation."""
        ...

    async def aclose(self) -> None:
        """Release connections, threads or model memory."""
        ...


def malformed_stream(provider: str, detail: object) -> ProviderError:
    """The upstream broke its own stream format mid-answer (worth another try)."""
    return ProviderError(
        f"{provider}: malformed stream: {detail}",
        code="upstream_protocol_error",
        retryable=True,
        provider=provider,
    )


def truncated_stream(provider: str, missing: str) -> ProviderError:
    """The upstream's stream ended before ``missing``, its own end marker."""
    return ProviderError(
        f"{provider}: the stream ended before {missing}",
        code="upstream_truncated",
        retryable=True,
        provider=provider,
    )
