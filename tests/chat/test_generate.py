"""The relay of one model answer: the stall deadline moves lazily but never cuts early."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest

from daehwa.chat.generate import STALL_SLACK, ReplyStreamer
from daehwa.chat.reply import Outcome
from daehwa.chat.runs import MemoryRunLog, Run
from daehwa.chat.stats import TurnStats
from daehwa.config import Settings
from daehwa.errors import ProviderTimeout
from daehwa.llm.base import ChatModel, Chunk, GenerationParams
from daehwa.messages import Message, MessageStatus, Role, Usage
from daehwa.store import MemoryStore


class SteadyModel:
    """``count`` pieces ``gap`` seconds apart; with ``hang``, silence after the first."""

    name = "steady"

    def __init__(self, count: int, gap: float, *, hang: bool = False) -> None:
        self.count = count
        self.gap = gap
        self.hang = hang

    async def stream(
        self, messages: Sequence[Message], params: GenerationParams
    ) -> AsyncIterator[Chunk]:
        for i in range(self.count):
            if i:
                await (asyncio.Event().wait() if self.hang else asyncio.sleep(self.gap))
            yield Chunk(text=f"{i} ")
        yield Chunk(finish_reason="stop", usage=Usage(1, self.count))

    async def aclose(self) -> None:
        return None


class Models(dict[str, ChatModel]):
    pass


async def relay(model: SteadyModel, stall_timeout: float) -> Outcome:
    settings = Settings(
        models={"steady": {"provider": "scripted"}},
        chat={"default_model": "steady"},
        resilience={"stall_timeout": stall_timeout},
    )
    streamer = ReplyStreamer(settings, MemoryStore(), Models(steady=model), TurnStats())
    outcome = Outcome()
    run = Run("r1", "c1", MemoryRunLog())
    await streamer.generate(
        run, "steady", [Message(Role.USER, "안녕")], GenerationParams(), outcome
    )
    return outcome


async def test_chunks_closer_than_the_stall_bound_never_trip_it() -> None:
    # Runs for three times the slack, so the deadline is moved lazily several times.
    count = int(3 * STALL_SLACK / 0.05)
    outcome = await relay(SteadyModel(count, gap=0.05), stall_timeout=0.5)
    assert outcome.status is MessageStatus.COMPLETE
    assert outcome.text.value == "".join(f"{i} " for i in range(count))


async def test_a_stream_that_goes_silent_is_cut() -> None:
    with pytest.raises(ProviderTimeout):
        await relay(SteadyModel(3, gap=0, hang=True), stall_timeout=0.1)
