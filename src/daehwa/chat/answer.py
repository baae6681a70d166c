"""Answering a stored user message: the reply's context, generation and final write.

Once :class:`~daehwa.chat.service.ChatService` has stored the user message and
the empty reply and started a run, an :class:`Answerer` does the rest inside
that run: build the context, stream the model's (filtered) answer through the
:class:`~daehwa.chat.generate.ReplyStreamer`, store the reply with its final
status whatever happens, send the terminal event, and schedule the context's
upkeep (summary, embeddings) off the reply's critical path. Stateless
completions run the same generation without a conversation or a stored reply.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from daehwa.chat.generate import ReplyStreamer
from daehwa.chat.personas import RenderedPersona, render_persona
from daehwa.chat.reply import Outcome, model_order
from daehwa.chat.runs import Run
from daehwa.chat.stats import TurnStats
from daehwa.chat.tools import ToolRegistry
from daehwa.config import ModelSettings, Settings
from daehwa.context.builder import BuiltContext, ContextBuilder
from daehwa.errors import InvalidInput, NotFound
from daehwa.events import Error, Meta, Step
from daehwa.llm.base import GenerationParams
from daehwa.messages import Conversation, Message, MessageStatus
from daehwa.store.base import Store

__all__ = ["HISTORY_LIMIT", "Answerer"]

log = logging.getLogger(__name__)

# How many recent messages the context builder sees; older ones live in the summary.
HISTORY_LIMIT = 400
# Replies the context leaves out, so their token counts are never needed.
UNCOUNTED = frozenset({MessageStatus.FAILED, MessageStatus.BLOCKED, MessageStatus.STREAMING})


class Answerer:
    """Generates a reply inside its run and stores it with its final status."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        context: ContextBuilder,
        streamer: ReplyStreamer,
        stats: TurnStats,
        tools: ToolRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.context = context
        self.streamer = streamer
        self.stats = stats
        self.tools = tools
        self._upkeep: set[asyncio.Task[None]] = set()

    def model_name(self, conversation: Conversation) -> str:
        return conversation.model or self.settings.chat.default_model

    def persona(self, conversation: Conversation) -> RenderedPersona | None:
        if conversation.persona is None:
            return None
        settings = self.settings.personas.get(conversation.persona)
        if settings is None:
            raise InvalidInput(f"persona {conversation.persona!r} is no longer configured")
        return render_persona(settings, conversation.variables, name=conversation.persona)

    async def build_context(
        self, conversation: Conversation, *, before: int | None
    ) -> BuiltContext:
        """What the model receives for the messages of ``conversation`` before seq ``before``."""
        page = await self.store.list_messages(conversation.id, limit=HISTORY_LIMIT, before=before)
        model = self.settings.models[self.model_name(conversation)]
        persona = self.persona(conversation)
        built = await self.context.build(
            system_prompt=persona.system_prompt if persona else self.settings.chat.system_prompt,
            conversation=conversation,
            history=page.items,
            model=model,
        )
        built.messages = model_order(built.messages)
        return built

    def params(
        self,
        conversation: Conversation | None,
        model_name: str,
        max_new_tokens: int,
        request_id: str | None,
    ) -> GenerationParams:
        """The generation parameters: the persona's over the model's, and the tools allowed."""
        model = self.settings.models[model_name]
        persona = self.persona(conversation) if conversation is not None else None
        temperature = persona.temperature if persona and persona.temperature is not None else None
        tool_names = model.tools
        if conversation is not None and conversation.persona is not None:
            chosen = self.settings.personas[conversation.persona].tools
            tool_names = chosen if chosen is not None else tool_names
        tools = self.tools.specs(tool_names) if self.tools is not None and tool_names else ()
        return GenerationParams(
            max_new_tokens=max_new_tokens,
            temperature=temperature if temperature is not None else model.temperature,
            request_id=request_id,
            cache_key=conversation.id if conversation is not None else None,
            tools=tools,
        )

    async def answer(
        self,
        run: Run,
        conversation: Conversation,
        user_message: Message,
        reply: Message,
        model_name: str,
    ) -> None:
        """The body of a turn's run: answer ``user_message`` into the stored ``reply``."""
        outcome = Outcome()
        built: BuiltContext | None = None

        def count_with() -> ModelSettings | None:
            # Once the context is built, the model's tokenizer is loaded: count the reply too.
            return self.settings.models[model_name] if built is not None else None

        try:
            await run.emit(
                Meta(
                    conversation.id, user_message.id, reply.id, model_name, user_message.request_id
                )
            )
            if run.stop_requested:
                raise asyncio.CancelledError
            built = await self.build_context(conversation, before=reply.seq)
            await run.emit(Step("context", _context_detail(built)))
            params = self.params(
                conversation, model_name, built.max_new_tokens, user_message.request_id
            )
            await self.streamer.generate(
                run,
                model_name,
                built.messages,
                params,
                outcome,
                reply_id=reply.id,
                conversation_id=conversation.id,
            )
        except asyncio.CancelledError:
            outcome.cancelled(run.stop_requested)
            await asyncio.shield(self._finish(run, reply, outcome, count_with()))
            if not run.stop_requested:
                raise
            return
        except Exception as exc:
            outcome.fail(exc, reply.id)
        await asyncio.shield(self._finish(run, reply, outcome, count_with()))
        if built is not None and built.needs_upkeep:
            self._schedule_upkeep(conversation, built)

    async def complete(
        self, run: Run, messages: Sequence[Message], model_name: str, params: GenerationParams
    ) -> None:
        """The body of a stateless completion's run: nothing is stored."""
        outcome = Outcome()
        try:
            await run.emit(Meta("", "", run.id, model_name, None))
            await self.streamer.generate(run, model_name, messages, params, outcome)
        except asyncio.CancelledError:
            outcome.cancelled(run.stop_requested)
            await asyncio.shield(self._emit_final(run, run.id, model_name, outcome))
            if not run.stop_requested:
                raise
            return
        except Exception as exc:
            outcome.fail(exc, run.id)
        await self._emit_final(run, run.id, model_name, outcome)

    def _schedule_upkeep(self, conversation: Conversation, built: BuiltContext) -> None:
        """Summary and embeddings after the reply, off its critical path."""
        task = asyncio.create_task(
            self.context.after_turn(conversation=conversation, built=built, store=self.store)
        )
        self._upkeep.add(task)
        task.add_done_callback(self._upkeep.discard)

    async def _finish(
        self, run: Run, reply: Message, outcome: Outcome, count_with: ModelSettings | None
    ) -> None:
        """Store the reply with its final status, then send the terminal event.

        With ``count_with``, the reply's token count under that model goes into
        the same write, for the next turn's context.
        """
        await self.streamer.release_held_text(run, outcome)
        metadata: dict[str, Any] = dict(reply.metadata)
        if outcome.finish:
            metadata["finish_reason"] = outcome.finish
        if outcome.failure is not None:
            metadata["error"] = outcome.failure.message
        final = replace(
            reply,
            content=outcome.text.value,
            status=outcome.status,
            tool_calls=outcome.tool_calls or None,
            metadata=metadata,
        )
        if count_with is not None and final.status not in UNCOUNTED:
            try:
                await self.context.count_before_storing(final, count_with)
            except Exception:
                log.warning("could not count the tokens of reply %s", reply.id, exc_info=True)
        try:
            await self.store.update_message(
                reply.id,
                content=final.content,
                status=final.status,
                usage=outcome.usage,
                tool_calls=final.tool_calls,
                metadata=final.metadata,
            )
        except NotFound:
            log.info("reply %s was deleted while it streamed", reply.id)
        except Exception:
            log.exception("could not store reply %s", reply.id)
            if outcome.failure is None:
                outcome.failure = Error("store_error", "the reply could not be stored", reply.id)
        await self._emit_final(run, reply.id, reply.model or "", outcome)

    async def _emit_final(self, run: Run, message_id: str, model: str, outcome: Outcome) -> None:
        await self.streamer.release_held_text(run, outcome)
        self.stats.reply_finished(
            model, outcome.status.value, outcome.usage.completion_tokens if outcome.usage else 0
        )
        await run.emit(outcome.terminal_event(message_id))

    async def aclose(self) -> None:
        """Wait briefly for background upkeep (summaries, embeddings) to finish."""
        if self._upkeep:
            await asyncio.wait(self._upkeep, timeout=5.0)


def _context_detail(built: BuiltContext) -> dict[str, Any]:
    return {
        "messages": len(built.messages),
        "input_tokens": built.input_tokens,
        "max_new_tokens": built.max_new_tokens,
        "limit": built.limit,
        **built.steps,
    }
