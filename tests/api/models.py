"""Small in-repo models that misbehave on purpose, for turn tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from daehwa.errors import ProviderError
from daehwa.llm.base import Chunk, GenerationParams
from daehwa.messages import Message, Usage


class FailingModel:
    """Streams ``before`` pieces, then fails with a ProviderError."""

    def __init__(self, before: Sequence[str] = (), name: str = "failing") -> None:
        self.name = name
        self.before = list(before)

    async def stream(
        self, messages: Sequence[Message], params: GenerationParams
    ) -> AsyncIterator[Chunk]:
        for piece in self.before:
            yield Chunk(text=piece)
        raise ProviderError("upstream exploded", code="upstream_error", retryable=False)

    async def aclose(self) -> None:
        return None


class SlowModel:
    """Waits ``first`` seconds, then streams ``pieces`` ``gap`` seconds apart."""

    def __init__(
        self, pieces: Sequence[str], *, first: float = 0.0, gap: float = 0.0, name: str = "slow"
    ) -> None:
        self.name = name
        self.pieces = list(pieces)
        self.first = first
        self.gap = gap
        self.calls = 0
        self.finished = 0

    async def stream(
        self, messages: Sequence[Message], params: GenerationParams
    ) -> AsyncIterator[Chunk]:
        self.calls += 1
        await asyncio.sleep(self.first)
        for i, piece in enumerate(self.pieces):
            if i:
                await asyncio.sleep(self.gap)
            yield Chunk(text=piece)
        self.finished += 1
        yield Chunk(finish_reason="stop", usage=Usage(3, len(self.pieces)))

    async def aclose(self) -> None:
        return None
