"""One turn of a conversation, and the conversation operations around it.

``ChatService`` is the one orchestrator: transports call it, and it alone
calls the store, the context builder, the content filter and the models.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from daehwa.chat.reply import Outcome, ReplyText, stored_events
from daehwa.chat.runs import Run, RunRegistry
from daehwa.chat.stats import TurnStats
from daehwa.config import Settings
from daehwa.context.builder import BuiltContext, ContextBuilder
from daehwa.errors import InvalidInput, NotFound, ProviderTimeout
from daehwa.events import Delta, Done, Envelope, Error, Meta, Step
from daehwa.llm.base import ChatModel, Chunk, GenerationParams
from daehwa.messages import Conversation, Message, MessageStatus, Role, Usage, User, new_id
from daehwa.store.base import Page, Store

log = logging.getLogger(__name__)

# How many recent messages the context builder sees; older ones live in the summary.
HISTORY_LIMIT = 400
# Seconds between writes of a growing reply to the store while it streams.
CHECKPOINT_INTERVAL = 2.0


class ModelSource(Protocol):
    """Where the service gets a configured model by name."""

    def get(self, name: str) -> ChatModel: ...


@dataclass(slots=True, frozen=True)
class TurnStart:
    """What a send produced: the stored user message and the run answering it."""

    conversation_id: str
    user_message: Message
    reply_id: str


class ChatService:
    """Conversations and turns for authenticated users."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        models: ModelSource,
        runs: RunRegistry,
        context: ContextBuilder | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.models = models
        self.runs = runs
        self.context = context or ContextBuilder()
        self.stats = TurnStats()
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    # -- conversations -------------------------------------------------------

    async def conversation(self, user: User, conversation_id: str) -> Conversation:
        """The conversation, if ``user`` owns it (or is an admin); otherwise NotFound."""
        conversation = await self.store.get_conversation(conversation_id)
        if conversation is None or (conversation.user_id != user.id and not user.is_admin):
            raise NotFound(f"conversation {conversation_id} not found")
        return conversation

    async def create_conversation(
        self,
        user: User,
        *,
        title: str = "",
        persona: str | None = None,
        variables: dict[str, str] | None = None,
        model: str | None = None,
    ) -> Conversation:
        if model is not None and model not in self.settings.models:
            raise InvalidInput(f"unknown model {model!r}", field="model")
        if persona is not None and persona not in self.settings.personas:
            raise InvalidInput(f"unknown persona {persona!r}", field="persona")
        conversation = Conversation(
            id=new_id(),
            user_id=user.id,
            title=title,
            persona=persona,
            variables=dict(variables or {}),
            model=model,
        )
        return await self.store.create_conversation(conversation)

    async def list_conversations(
        self, user: User, *, limit: int, before: str | None
    ) -> Page[Conversation]:
        return await self.store.list_conversations(user.id, limit=limit, before=before)

    async def rename(self, user: User, conversation_id: str, title: str) -> Conversation:
        await self.conversation(user, conversation_id)
        return await self.store.update_conversation(conversation_id, title=title)

    async def delete(self, user: User, conversation_id: str) -> None:
        await self.conversation(user, conversation_id)
        await self.store.delete_conversation(conversation_id)

    async def clear(self, user: User, conversation_id: str) -> None:
        await self.conversation(user, conversation_id)
        await self.store.clear_conversation(conversation_id)

    async def messages(self, user: User, conversation_id: str, **query: Any) -> Page[Message]:
        await self.conversation(user, conversation_id)
        return await self.store.list_messages(conversation_id, **query)

    async def message(self, user: User, conversation_id: str, message_id: str) -> Message:
        await self.conversation(user, conversation_id)
        message = await self.store.get_message(message_id)
        if message is None or message.conversation_id != conversation_id:
            raise NotFound(f"message {message_id} not found")
        return message

    async def next_context(self, user: User, conversation_id: str) -> BuiltContext:
        """What the model would receive if the user's next message were empty."""
        conversation = await self.conversation(user, conversation_id)
        return await self._build_context(conversation, before=None)

    # -- a turn --------------------------------------------------------------

    def model_name(self, conversation: Conversation) -> str:
        return conversation.model or self.settings.chat.default_model

    def check_content(self, content: object) -> str:
        """Validate a user message's content; returns it unchanged."""
        if not isinstance(content, str):
            raise InvalidInput("content must be a string", field="content")
        if not content.strip():
            raise InvalidInput("content must not be empty", field="content")
        limit = self.settings.chat.max_content_chars
        if len(content) > limit:
            raise InvalidInput(
                f"content is {len(content)} characters; the limit is {limit}", field="content"
            )
        return content

    async def send(
        self, user: User, conversation_id: str, content: object, *, request_id: str | None = None
    ) -> TurnStart:
        """Store the user's message and start the reply's run.

        A ``request_id`` already used in this conversation returns the turn it
        started, without a second message or model call.
        """
        content = self.check_content(content)
        if request_id is not None and (not request_id or len(request_id) > 200):
            raise InvalidInput("request_id must be 1 to 200 characters", field="request_id")
        conversation = await self.conversation(user, conversation_id)
        lock = self._locks.get(conversation_id)
        if lock is None:
            lock = self._locks[conversation_id] = asyncio.Lock()
        async with lock:
            if request_id is not None:
                earlier = await self.store.find_by_request_id(conversation_id, request_id)
                if earlier is not None:
                    return TurnStart(
                        conversation_id, earlier, str(earlier.metadata.get("reply_id", ""))
                    )
            model_name = self.model_name(conversation)
            reply_id = new_id()
            user_message = await self.store.append_message(
                Message(
                    Role.USER,
                    content,
                    id=new_id(),
                    conversation_id=conversation_id,
                    request_id=request_id,
                    metadata={"reply_id": reply_id},
                )
            )
            reply = await self.store.append_message(
                Message(
                    Role.ASSISTANT,
                    "",
                    id=reply_id,
                    conversation_id=conversation_id,
                    status=MessageStatus.STREAMING,
                    model=model_name,
                    request_id=request_id,
                    metadata={"reply_to": user_message.id},
                )
            )

            async def body(run: Run) -> None:
                await self._answer(run, conversation, user_message, reply, model_name)

            await self.runs.start(reply.id, conversation_id, body)
        return TurnStart(conversation_id, user_message, reply.id)

    async def stop(self, user: User, conversation_id: str, message_id: str) -> Message:
        """Stop a running reply; it is kept with status ``stopped``."""
        message = await self.message(user, conversation_id, message_id)
        if message.role is not Role.ASSISTANT:
            raise NotFound(f"reply {message_id} not found")
        if self.runs.stop(message_id):
            await self.runs.wait(message_id)
            stopped = await self.store.get_message(message_id)
            if stopped is not None:
                return stopped
        return message

    async def replay(self, reply_id: str, *, after: int = 0) -> AsyncIterator[Envelope]:
        """A reply's events after ``after``: from its run log while it lives, then live.

        Past the log's lifetime the events are rebuilt from the stored message
        (meta, one delta with the whole text, then done or error).
        """
        try:
            async for envelope in self.runs.log.follow(reply_id, after):
                yield envelope
            return
        except NotFound:
            pass
        message = await self.store.get_message(reply_id)
        if message is None:
            yield Envelope.of(after + 1, Error("not_found", f"reply {reply_id} not found"))
            return
        for envelope in stored_events(message):
            if envelope.seq > after:
                yield envelope

    async def _build_context(
        self, conversation: Conversation, *, before: int | None
    ) -> BuiltContext:
        page = await self.store.list_messages(conversation.id, limit=HISTORY_LIMIT, before=before)
        model = self.settings.models[self.model_name(conversation)]
        return await self.context.build(
            system_prompt=self.settings.chat.system_prompt,
            conversation=conversation,
            history=page.items,
            model=model,
        )

    async def _answer(
        self,
        run: Run,
        conversation: Conversation,
        user_message: Message,
        reply: Message,
        model_name: str,
    ) -> None:
        outcome = Outcome()
        try:
            await run.emit(
                Meta(
                    conversation.id, user_message.id, reply.id, model_name, user_message.request_id
                )
            )
            if run.stop_requested:
                raise asyncio.CancelledError
            built = await self._build_context(conversation, before=reply.seq)
            await run.emit(
                Step(
                    "context",
                    {
                        "messages": len(built.messages),
                        "input_tokens": built.input_tokens,
                        "max_new_tokens": built.max_new_tokens,
                        "limit": built.limit,
                        **built.steps,
                    },
                )
            )
            params = self._params(
                model_name, built.max_new_tokens, user_message.request_id, conversation.id
            )
            await self._generate(run, model_name, built.messages, params, outcome, reply.id)
        except asyncio.CancelledError:
            outcome.cancelled(run.stop_requested)
            await asyncio.shield(self._finish(run, reply, outcome))
            if not run.stop_requested:
                raise
            return
        except Exception as exc:
            outcome.fail(exc, reply.id)
        await asyncio.shield(self._finish(run, reply, outcome))

    def _params(
        self, model_name: str, max_new_tokens: int, request_id: str | None, cache_key: str | None
    ) -> GenerationParams:
        return GenerationParams(
            max_new_tokens=max_new_tokens,
            temperature=self.settings.models[model_name].temperature,
            request_id=request_id,
            cache_key=cache_key,
        )

    async def _generate(
        self,
        run: Run,
        model_name: str,
        messages: Sequence[Message],
        params: GenerationParams,
        outcome: Outcome,
        checkpoint_id: str | None,
    ) -> None:
        """Stream the model's answer as events into ``outcome``; a fallback if none starts."""
        await run.emit(Step("generate", {"model": model_name}))
        model = self.models.get(model_name)
        try:
            outcome.finish, outcome.usage = await self._stream(
                run, checkpoint_id, model, messages, params, outcome.text
            )
            outcome.status = MessageStatus.COMPLETE
        except _NoFirstToken:
            # Nothing reached the client yet, so a fallback reply is honest and visible.
            log.warning("no first token from %s within the deadline; fallback reply", model_name)
            fallback = self.settings.resilience.fallback_reply
            outcome.text.add(fallback)
            await run.emit(Delta(fallback))
            outcome.status, outcome.finish = MessageStatus.FALLBACK, "fallback"

    async def complete(
        self,
        user: User,
        messages: Sequence[Message],
        *,
        model_name: str,
        max_new_tokens: int | None = None,
    ) -> str:
        """Start a stateless completion of ``messages`` (nothing is stored); returns its run id.

        The run's events are those of a turn: meta, step, delta..., done or error.
        """
        if model_name not in self.settings.models:
            raise NotFound(f"model {model_name!r} does not exist")
        if not messages:
            raise InvalidInput("messages must not be empty", field="messages")
        for message in messages:
            if message.role is Role.USER:
                self.check_content(message.content)
        limit = max_new_tokens or self.settings.models[model_name].max_new_tokens
        params = self._params(model_name, limit, None, None)
        run_id = new_id()

        async def body(run: Run) -> None:
            outcome = Outcome()
            try:
                await run.emit(Meta("", "", run.id, model_name, None))
                await self._generate(run, model_name, messages, params, outcome, None)
            except asyncio.CancelledError:
                outcome.cancelled(run.stop_requested)
                await asyncio.shield(self._emit_final(run, run.id, model_name, outcome))
                if not run.stop_requested:
                    raise
                return
            except Exception as exc:
                outcome.fail(exc, run.id)
            await self._emit_final(run, run.id, model_name, outcome)

        await self.runs.start(run_id, f"completion-{run_id}", body)
        return run_id

    async def _stream(
        self,
        run: Run,
        checkpoint_id: str | None,
        model: ChatModel,
        messages: Sequence[Message],
        params: GenerationParams,
        reply_text: ReplyText,
    ) -> tuple[str | None, Usage | None]:
        """Relay the model's chunks as events; returns (finish_reason, usage).

        Raises :class:`_NoFirstToken` when nothing arrived within the first-token
        deadline, and :class:`ProviderTimeout` when the stream stalls after that.
        """
        resilience = self.settings.resilience
        loop = asyncio.get_running_loop()
        finish: str | None = None
        usage: Usage | None = None
        answered = False
        started = loop.time()
        next_checkpoint = loop.time() + CHECKPOINT_INTERVAL
        chunks = model.stream(messages, params)
        try:
            async with asyncio.timeout_at(loop.time() + resilience.first_token_timeout) as deadline:
                async for chunk in chunks:
                    if not answered and (chunk.text or chunk.reasoning or chunk.tool_calls):
                        answered = True
                        self.stats.first_token(loop.time() - started)
                    if answered:
                        # One timer for the whole stream, moved on each chunk: no per-token task.
                        deadline.reschedule(loop.time() + resilience.stall_timeout)
                    await self._relay(run, chunk, reply_text)
                    if chunk.finish_reason is not None:
                        finish = chunk.finish_reason
                    if chunk.usage is not None:
                        usage = chunk.usage
                    if checkpoint_id and reply_text.started and loop.time() >= next_checkpoint:
                        next_checkpoint = loop.time() + CHECKPOINT_INTERVAL
                        await self.store.update_message(checkpoint_id, content=reply_text.value)
        except TimeoutError:
            if not answered:
                raise _NoFirstToken from None
            raise ProviderTimeout(
                f"the model sent nothing for {resilience.stall_timeout:g} s", provider=model.name
            ) from None
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        return finish, usage

    async def _relay(self, run: Run, chunk: Chunk, reply_text: ReplyText) -> None:
        if chunk.reasoning:
            await run.emit(Step("reasoning", chunk.reasoning))
        if chunk.text:
            reply_text.add(chunk.text)
            await run.emit(Delta(chunk.text))

    async def _finish(self, run: Run, reply: Message, outcome: Outcome) -> None:
        """Store the reply with its final status, then send the terminal event."""
        metadata: dict[str, Any] = dict(reply.metadata)
        if outcome.finish:
            metadata["finish_reason"] = outcome.finish
        if outcome.failure is not None:
            metadata["error"] = outcome.failure.message
        try:
            await self.store.update_message(
                reply.id,
                content=outcome.text.value,
                status=outcome.status,
                usage=outcome.usage,
                metadata=metadata,
            )
        except NotFound:
            log.info("reply %s was deleted while it streamed", reply.id)
        except Exception:
            log.exception("could not store reply %s", reply.id)
            if outcome.failure is None:
                outcome.failure = Error("store_error", "the reply could not be stored", reply.id)
        await self._emit_final(run, reply.id, reply.model or "", outcome)

    async def _emit_final(self, run: Run, message_id: str, model: str, outcome: Outcome) -> None:
        usage = outcome.usage or Usage()
        self.stats.reply_finished(model, outcome.status.value, usage.completion_tokens)
        if outcome.failure is not None:
            await run.emit(outcome.failure)
        else:
            await run.emit(Done(message_id, outcome.status.value, outcome.finish, usage.to_dict()))


class _NoFirstToken(Exception):
    """No chunk arrived before the first-token deadline."""
