"""Streaming one model answer into a run: deadlines, output filter, checkpoints, tools.

The first-token deadline and the stall bound are one asyncio timer, moved at
most once every :data:`STALL_SLACK` seconds rather than on each chunk, so no
per-token task or timer is created. Text passes the output
:class:`~daehwa.guard.StreamFilter` before it becomes a ``delta`` event, so the
stored reply is exactly what the client saw.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol

from daehwa.chat.reply import Outcome
from daehwa.chat.runs import Run
from daehwa.chat.stats import TurnStats
from daehwa.chat.tools import ToolRegistry
from daehwa.config import Settings
from daehwa.errors import ProviderTimeout
from daehwa.events import Delta, Sources, Step
from daehwa.guard import ContentGuard
from daehwa.llm.base import ChatModel, Chunk, GenerationParams
from daehwa.messages import Message, MessageStatus, Role, ToolCall
from daehwa.store.base import HistoryStore

log = logging.getLogger(__name__)

# Seconds between writes of a growing reply to the store while it streams.
CHECKPOINT_INTERVAL = 2.0
# Seconds between moves of the stall deadline. Moving the timer costs a heap
# operation, so it moves at most this often and sits this much later than
# ``stall_timeout`` after the latest chunk: a stall is detected after
# ``stall_timeout`` to ``stall_timeout + STALL_SLACK`` seconds.
STALL_SLACK = 1.0


class ModelSource(Protocol):
    """Where the service gets a configured model by name."""

    def get(self, name: str) -> ChatModel: ...


class NoFirstToken(Exception):
    """No chunk arrived before the first-token deadline."""


class ReplyStreamer:
    """Runs the model for one reply and relays what it says as events."""

    def __init__(
        self,
        settings: Settings,
        store: HistoryStore,
        models: ModelSource,
        stats: TurnStats,
        guard: ContentGuard | None = None,
        tools: ToolRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.models = models
        self.stats = stats
        self.guard = guard
        self.tools = tools

    async def generate(
        self,
        run: Run,
        model_name: str,
        messages: Sequence[Message],
        params: GenerationParams,
        outcome: Outcome,
        *,
        reply_id: str | None = None,
        conversation_id: str = "",
    ) -> None:
        """Stream the answer into ``outcome`` and the run; a fallback reply if none starts.

        With tools in ``params``, tool calls are executed and fed back, for at
        most ``[tools] max_rounds`` rounds. ``reply_id`` enables checkpoints and
        storing tool results in the conversation.
        """
        await run.emit(Step("generate", {"model": model_name}))
        model = self.models.get(model_name)
        configured = self.settings.models[model_name].first_token_timeout
        first_token_timeout = configured or self.settings.resilience.first_token_timeout
        if self.guard is not None:
            outcome.filter = self.guard.output_filter()
        history = list(messages)
        try:
            last_round = self.settings.tools.max_rounds
            for round_number in range(last_round + 1):
                # The last round offers no tools, so the model must answer in text.
                offered = params if round_number < last_round else replace(params, tools=())
                calls = await self._stream(
                    run, reply_id, model, history, offered, outcome, first_token_timeout
                )
                if not calls or self.tools is None or round_number == last_round:
                    break
                history += await self._call_tools(run, calls, outcome, reply_id, conversation_id)
            outcome.status = MessageStatus.COMPLETE
        except NoFirstToken:
            # Nothing reached the client yet, so a fallback reply is honest and visible.
            log.warning("no first token from %s within the deadline; fallback reply", model_name)
            fallback = self.settings.resilience.fallback_reply
            outcome.text.add(fallback)
            await run.emit(Delta(fallback))
            outcome.status, outcome.finish = MessageStatus.FALLBACK, "fallback"

    async def _call_tools(
        self,
        run: Run,
        calls: list[ToolCall],
        outcome: Outcome,
        reply_id: str | None,
        conversation_id: str,
    ) -> list[Message]:
        assert self.tools is not None
        outcome.tool_calls.extend(calls)
        for call in calls:
            await run.emit(Step("tool", {"name": call.name, "arguments": call.arguments}))
        results = await self.tools.execute_all(calls, timeout=self.settings.tools.timeout)
        fed_back = [Message(Role.ASSISTANT, "", tool_calls=calls)]
        for result in results:
            message = result.to_message(conversation_id)
            if reply_id is not None:
                message.metadata["reply_id"] = reply_id
                message = await self.store.append_message(message)
            fed_back.append(message)
        await run.emit(Sources([result.to_dict() for result in results]))
        return fed_back

    async def _stream(
        self,
        run: Run,
        checkpoint_id: str | None,
        model: ChatModel,
        messages: Sequence[Message],
        params: GenerationParams,
        outcome: Outcome,
        first_token_timeout: float,
    ) -> list[ToolCall]:
        """Relay one model call's chunks as events; returns the tool calls it asked for.

        Raises :class:`NoFirstToken` when nothing arrived within the first-token
        deadline, and :class:`ProviderTimeout` when the stream stalls after that.
        """
        resilience = self.settings.resilience
        loop = asyncio.get_running_loop()
        started = loop.time()
        next_checkpoint = started + CHECKPOINT_INTERVAL
        calls: list[ToolCall] = []
        stall = resilience.stall_timeout + STALL_SLACK
        bound = stall if outcome.answered else first_token_timeout
        # When the deadline was last moved; it then stood at moved + stall.
        moved = started
        chunks = model.stream(messages, params)
        try:
            async with asyncio.timeout_at(started + bound) as deadline:
                async for chunk in chunks:
                    now = loop.time()
                    if not outcome.answered and (chunk.text or chunk.reasoning or chunk.tool_calls):
                        outcome.answered = True
                        self.stats.first_token(now - started)
                        moved = now - STALL_SLACK  # the first-token deadline gives way now
                    if outcome.answered and now - moved >= STALL_SLACK:
                        moved = now
                        deadline.reschedule(now + stall)
                    await self._relay(run, chunk, outcome)
                    if chunk.tool_calls:
                        calls.extend(chunk.tool_calls)
                    if chunk.finish_reason is not None:
                        outcome.finish = chunk.finish_reason
                    if chunk.usage is not None:
                        outcome.add_usage(chunk.usage)
                    if checkpoint_id and outcome.text.started and now >= next_checkpoint:
                        next_checkpoint = now + CHECKPOINT_INTERVAL
                        await self.store.update_message(checkpoint_id, content=outcome.text.value)
        except TimeoutError:
            if not outcome.answered:
                raise NoFirstToken from None
            raise ProviderTimeout(
                f"the model sent nothing for {resilience.stall_timeout:g} s", provider=model.name
            ) from None
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        return calls

    async def _relay(self, run: Run, chunk: Chunk, outcome: Outcome) -> None:
        if chunk.reasoning:
            await run.emit(Step("reasoning", chunk.reasoning))
        if chunk.text:
            text = outcome.filter.feed(chunk.text) if outcome.filter is not None else chunk.text
            if text:
                outcome.text.add(text)
                await run.emit(Delta(text))

    async def release_held_text(self, run: Run, outcome: Outcome) -> None:
        """Send what the output filter still holds back (the reply is ending)."""
        if outcome.filter is None:
            return
        tail = outcome.filter.flush()
        outcome.filter = None
        if tail:
            outcome.text.add(tail)
            await run.emit(Delta(tail))
