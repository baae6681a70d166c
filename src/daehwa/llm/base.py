"""The protocol every model provider implements, and the pieces it streams."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

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
