"""One turn of a conversation, and the conversation operations around it.

``ChatService`` is the one orchestrator: transports call it, and it alone
calls the store, the context builder, the content filter and the models.
A turn: take a reply slot (or refuse with 503 busy before anything is stored)
→ check the owner → screen the input → store the user message → start a run
that builds the context, streams the (filtered) answer and stores the reply
with its final status, whatever happens (that run's body is
:class:`~daehwa.chat.answer.Answerer`). Around the turn: the conversations'
CRUD, ownership and search, stateless completions, and following a reply's
events (resume, stop).
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from daehwa.chat.admission import ReplySlot, ReplySlots
from daehwa.chat.answer import HISTORY_LIMIT as HISTORY_LIMIT
from daehwa.chat.answer import Answerer
from daehwa.chat.generate import ModelSource, ReplyStreamer
from daehwa.chat.personas import RenderedPersona, render_persona
from daehwa.chat.reply import stored_events
from daehwa.chat.runs import Run, RunRegistry, one_by_one
from daehwa.chat.stats import TurnStats
from daehwa.chat.tools import ToolRegistry
from daehwa.config import ModelSettings, Settings
from daehwa.context.builder import BuiltContext, ContextBuilder
from daehwa.errors import ContentBlocked, InvalidInput, NotFound
from daehwa.events import Envelope, Error
from daehwa.guard import ContentGuard
from daehwa.messages import Conversation, Message, MessageStatus, Role, User, new_id
from daehwa.store.base import Page, Store

__all__ = ["ChatService", "ModelSource", "TurnStart"]

# How long a stop request waits for a reply running on another instance to end.
STOP_WAIT_SECONDS = 10.0


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
        *,
        context: ContextBuilder | None = None,
        guard: ContentGuard | None = None,
        tools: ToolRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.models = models
        self.runs = runs
        self.context = context or ContextBuilder()
        self.guard = guard
        self.tools = tools
        self.stats = TurnStats()
        self.streamer = ReplyStreamer(settings, store, models, self.stats, guard, tools)
        self.admission = ReplySlots(
            settings.chat.max_running_replies, queue_timeout=settings.chat.reply_queue_timeout
        )
        self.answerer = Answerer(settings, store, self.context, self.streamer, self.stats, tools)
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    # -- conversations -------------------------------------------------------

    async def conversation(self, user: User, conversation_id: str) -> Conversation:
        """The conversation, if ``user`` owns it (or is an admin); otherwise NotFound."""
        conversation = await self.store.get_conversation(conversation_id)
        if conversation is None or (conversation.user_id != user.id and not user.is_admin):
            raise NotFound(f"conversation {conversation_id} not found")
        return conversation

    def persona(self, conversation: Conversation) -> RenderedPersona | None:
        return self.answerer.persona(conversation)

    async def create_conversation(
        self,
        user: User,
        *,
        title: str = "",
        persona: str | None = None,
        variables: dict[str, str] | None = None,
        model: str | None = None,
    ) -> Conversation:
        """A new conversation; with a persona that speaks first, its first message is stored."""
        if model is not None and model not in self.settings.models:
            raise InvalidInput(f"unknown model {model!r}", field="model")
        rendered = None
        if persona is not None:
            if persona not in self.settings.personas:
                raise InvalidInput(f"unknown persona {persona!r}", field="persona")
            rendered = render_persona(
                self.settings.personas[persona], variables or {}, name=persona
            )
        elif variables:
            raise InvalidInput("variables need a persona", field="variables")
        conversation = await self.store.create_conversation(
            Conversation(
                id=new_id(),
                user_id=user.id,
                title=title or (self.settings.personas[persona].title if persona else ""),
                persona=persona,
                variables=dict(variables or {}),
                model=model or (rendered.model if rendered else None),
            )
        )
        if rendered is not None and rendered.first_message:
            first = Message(
                Role.ASSISTANT,
                rendered.first_message,
                id=new_id(),
                conversation_id=conversation.id,
                model=self.model_name(conversation),
                metadata={"first_message": True},
            )
            await self.context.count_before_storing(first, self._model_settings(conversation))
            await self.store.append_message(first)
        return conversation

    async def list_conversations(
        self, user: User, *, limit: int, before: str | None
    ) -> tuple[Page[Conversation], dict[str, Message]]:
        """The user's conversations, newest first, with each one's last message (the preview)."""
        page = await self.store.list_conversations(user.id, limit=limit, before=before)
        lasts = await asyncio.gather(*(self.store.last_message(c.id) for c in page.items))
        previews = {c.id: m for c, m in zip(page.items, lasts, strict=True) if m is not None}
        return page, previews

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

    async def all_messages(self, user: User, conversation_id: str) -> list[Message]:
        """Every message of the conversation, oldest first (for export)."""
        await self.conversation(user, conversation_id)
        pages: list[list[Message]] = []
        before: int | None = None
        while True:
            page = await self.store.list_messages(conversation_id, limit=500, before=before)
            pages.append(page.items)
            if page.next is None or not page.items:
                break
            before = page.items[0].seq
        return [m for items in reversed(pages) for m in items]

    async def message(self, user: User, conversation_id: str, message_id: str) -> Message:
        await self.conversation(user, conversation_id)
        message = await self.store.get_message(message_id)
        if message is None or message.conversation_id != conversation_id:
            raise NotFound(f"message {message_id} not found")
        return message

    async def search(self, user: User, query: str, *, limit: int = 20) -> list[Message]:
        """The user's own messages containing ``query``."""
        if not query.strip():
            raise InvalidInput("q must not be empty", field="q")
        return await self.store.search_messages(user.id, query.strip(), limit=limit)

    async def next_context(self, user: User, conversation_id: str) -> BuiltContext:
        """What the model would receive next (the history as it stands)."""
        conversation = await self.conversation(user, conversation_id)
        return await self.answerer.build_context(conversation, before=None)

    # -- a turn --------------------------------------------------------------

    def model_name(self, conversation: Conversation) -> str:
        return self.answerer.model_name(conversation)

    def _model_settings(self, conversation: Conversation) -> ModelSettings:
        return self.settings.models[self.model_name(conversation)]

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

        Beyond ``[chat] max_running_replies`` it raises
        :class:`~daehwa.chat.admission.RepliesBusy` (503 ``busy``) before
        reading or storing anything. A ``request_id`` already used in this
        conversation returns the turn it started, without a second message or
        model call. A message the content filter blocks is stored with status
        ``blocked`` and raises ContentBlocked.
        """
        text = self.check_content(content)
        if request_id is not None and (not request_id or len(request_id) > 200):
            raise InvalidInput("request_id must be 1 to 200 characters", field="request_id")
        slot = await self.admission.admit()
        try:
            return await self._send(user, conversation_id, text, request_id, slot)
        finally:
            # A no-op once the reply's run holds the slot: otherwise no reply runs.
            slot.release()

    async def _send(
        self, user: User, conversation_id: str, text: str, request_id: str | None, slot: ReplySlot
    ) -> TurnStart:
        conversation = await self.conversation(user, conversation_id)
        lock = self._locks.get(conversation_id)
        if lock is None:
            lock = self._locks[conversation_id] = asyncio.Lock()
        async with lock:
            if request_id is not None:
                earlier = await self.store.find_by_request_id(conversation_id, request_id)
                if earlier is not None:
                    if earlier.status is MessageStatus.BLOCKED:
                        raise ContentBlocked(str(earlier.metadata.get("blocked", "blocked")))
                    return TurnStart(
                        conversation_id, earlier, str(earlier.metadata.get("reply_id", ""))
                    )
            if self.guard is not None:
                verdict = await self.guard.screen_input_async(text)
                if verdict.blocked:
                    self.stats.blocked_inputs += 1
                    error = verdict.error()
                    await self.store.append_message(
                        Message(
                            Role.USER,
                            text,
                            id=new_id(),
                            conversation_id=conversation_id,
                            status=MessageStatus.BLOCKED,
                            request_id=request_id,
                            metadata={"blocked": error.message},
                        )
                    )
                    raise error
                text = verdict.text
            return await self._start_turn(conversation, text, request_id, slot)

    async def _start_turn(
        self, conversation: Conversation, text: str, request_id: str | None, slot: ReplySlot
    ) -> TurnStart:
        model_name = self.model_name(conversation)
        reply_id = new_id()
        asked = Message(
            Role.USER,
            text,
            id=new_id(),
            conversation_id=conversation.id,
            request_id=request_id,
            metadata={"reply_id": reply_id},
        )
        # Counted now, so that no write after the turn is needed to keep the count.
        await self.context.count_before_storing(asked, self.settings.models[model_name])
        # The user's message and the empty reply, in one transaction: a crash
        # never leaves a question without its (then incomplete) reply.
        user_message, reply = await self.store.append_messages(
            [
                asked,
                Message(
                    Role.ASSISTANT,
                    "",
                    id=reply_id,
                    conversation_id=conversation.id,
                    status=MessageStatus.STREAMING,
                    model=model_name,
                    request_id=request_id,
                    metadata={"reply_to": asked.id},
                ),
            ]
        )

        async def body(run: Run) -> None:
            await self.answerer.answer(run, conversation, user_message, reply, model_name)

        run = await self.runs.start(reply.id, conversation.id, body)
        slot.hold_until_done(run.task)
        return TurnStart(conversation.id, user_message, reply.id)

    async def stop(self, user: User, conversation_id: str, message_id: str) -> Message:
        """Stop a running reply; it is kept with status ``stopped``."""
        message = await self.message(user, conversation_id, message_id)
        if message.role is not Role.ASSISTANT:
            raise NotFound(f"reply {message_id} not found")
        if message.status is not MessageStatus.STREAMING:
            return message
        if self.runs.stop(message_id):
            await self.runs.wait(message_id)
        else:
            # Running on another instance (shared run log): ask it, then wait for the end.
            await self.runs.log.request_stop(message_id)
            with contextlib.suppress(TimeoutError, NotFound):
                async with asyncio.timeout(STOP_WAIT_SECONDS):
                    async for _ in self.replay(message_id):
                        pass
        stopped = await self.store.get_message(message_id)
        return stopped if stopped is not None else message

    def replay(self, reply_id: str, *, after: int = 0) -> AsyncIterator[Envelope]:
        """A reply's events after ``after``: from its run log while it lives, then live.

        Past the log's lifetime the events are rebuilt from the stored message
        (meta, one delta with the whole text, then done or error).
        """
        return one_by_one(self.replay_batches(reply_id, after=after))

    def replay_batches(self, reply_id: str, *, after: int = 0) -> AsyncIterator[list[Envelope]]:
        """What :meth:`replay` yields, as lists of the events ready together."""
        if self.runs.get(reply_id) is not None:
            return self.runs.log.follow_batches(reply_id, after)
        return self._replay_batches(reply_id, after)

    async def _replay_batches(self, reply_id: str, after: int) -> AsyncIterator[list[Envelope]]:
        try:
            async for batch in self.runs.log.follow_batches(reply_id, after):
                yield batch
            return
        except NotFound:
            pass
        message = await self.store.get_message(reply_id)
        if message is None:
            yield [Envelope.of(after + 1, Error("not_found", f"reply {reply_id} not found"))]
            return
        yield [envelope for envelope in stored_events(message) if envelope.seq > after]

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
        Beyond ``[chat] max_running_replies`` it raises
        :class:`~daehwa.chat.admission.RepliesBusy`, like :meth:`send`.
        """
        if model_name not in self.settings.models:
            raise NotFound(f"model {model_name!r} does not exist")
        if not messages:
            raise InvalidInput("messages must not be empty", field="messages")
        slot = await self.admission.admit()
        try:
            return await self._complete(messages, model_name, max_new_tokens, slot)
        finally:
            slot.release()

    async def _complete(
        self,
        messages: Sequence[Message],
        model_name: str,
        max_new_tokens: int | None,
        slot: ReplySlot,
    ) -> str:
        for message in messages:
            if message.role is Role.USER:
                self.check_content(message.content)
                if self.guard is not None:
                    verdict = await self.guard.screen_input_async(message.content)
                    if verdict.blocked:
                        self.stats.blocked_inputs += 1
                        raise verdict.error()
                    message.content = verdict.text
        limit = max_new_tokens or self.settings.models[model_name].max_new_tokens
        params = self.answerer.params(None, model_name, limit, None)
        run_id = new_id()

        async def body(run: Run) -> None:
            await self.answerer.complete(run, messages, model_name, params)

        run = await self.runs.start(run_id, f"completion-{run_id}", body)
        slot.hold_until_done(run.task)
        return run_id

    async def aclose(self) -> None:
        """Wait briefly for background upkeep (summaries, embeddings) to finish."""
        await self.answerer.aclose()
