"""``CachedStore``: an LRU of hot conversations' newest messages, in front of any store.

Loading the newest page of a conversation (every turn does) is served from
memory when that conversation is hot. Writes go straight to the inner store
and then fix the cache, so the cache never shows less than the store.

Only writes made through *this* object are seen. With several processes
sharing one database, each would keep its own cache and miss the others'
writes: turn the cache off there (``[store] cache_size = 0``).

Correctness under concurrent writes rests on three rules:

- An append, once the inner store has answered (or failed), extends the cached
  tail only when the new message is exactly the next ``seq``; any other append
  drops the conversation's entry.
- An update puts the stored message the inner store answered in place of the
  cached one, unless another update of the same message was in flight at the
  same time (their answers may come back in either order): then the
  conversation's entry is dropped. A streaming reply is updated at its
  checkpoints and at its end, so a conversation stays cached from turn to turn.
- A read that fills the cache registers itself first; every write to that
  conversation meanwhile marks it stale, and a stale read does not fill.

A hit returns copies, so a caller may change what it got: each message is
rebuilt from its fields, its metadata (JSON: dicts, lists, scalars) copied
container by container, which is cheaper than ``copy.deepcopy``.
"""

from __future__ import annotations

import dataclasses
import operator
from collections import OrderedDict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from daehwa.messages import Conversation, Message, MessageStatus, ToolCall, Usage, User
from daehwa.store.base import Page, Store
from daehwa.store.paging import check_limit


@dataclass(slots=True)
class _Tail:
    """The newest messages of one conversation, contiguous by seq, oldest first."""

    messages: list[Message]
    # True when no older message exists outside ``messages``.
    complete: bool


class _Fill:
    """A read in flight that may fill the cache when it ends."""

    __slots__ = ("stale",)

    def __init__(self) -> None:
        self.stale = False


class CachedStore:
    """A :class:`~daehwa.store.base.Store` that caches recent messages of ``size`` conversations.

    ``max_messages`` bounds each conversation's cached tail.
    """

    def __init__(self, inner: Store, size: int, *, max_messages: int = 400) -> None:
        # 400: what a turn reads of its conversation's history (chat.answer.HISTORY_LIMIT).
        if size < 1:
            raise ValueError("size must be at least 1 (use the inner store to turn caching off)")
        self.inner = inner
        self.size = size
        self.max_messages = max_messages
        self._tails: OrderedDict[str, _Tail] = OrderedDict()
        self._fills: dict[str, set[_Fill]] = {}
        # Updates in flight per message id, and the ids updated twice at once meanwhile.
        self._updating: dict[str, int] = {}
        self._overlapped: set[str] = set()
        self.hits = 0
        self.misses = 0

    # -- cached reads ------------------------------------------------------------

    async def list_messages(
        self,
        conversation_id: str,
        *,
        limit: int = 50,
        before: int | None = None,
        since: datetime | None = None,
    ) -> Page[Message]:
        """A page of messages; the newest pages of hot conversations come from memory."""
        check_limit(limit)
        if since is None:
            page = self._serve(conversation_id, limit, before)
            if page is not None:
                self.hits += 1
                return page
        self.misses += 1
        if since is not None or (before is not None and conversation_id in self._tails):
            return await self.inner.list_messages(
                conversation_id, limit=limit, before=before, since=since
            )
        # Not cached: read the newest messages and keep them. A page before a seq
        # (a turn reads the history before its reply) is answered from them when
        # they reach back far enough.
        fill = _Fill()
        self._fills.setdefault(conversation_id, set()).add(fill)
        try:
            newest = await self.inner.list_messages(
                conversation_id, limit=limit if before is None else max(limit, self.max_messages)
            )
        finally:
            waiting = self._fills[conversation_id]
            waiting.discard(fill)
            if not waiting:
                del self._fills[conversation_id]
        complete = newest.next is None
        if not fill.stale:
            self._store(conversation_id, _Tail([_copy(m) for m in newest.items], complete))
        if before is None:
            return newest
        page = _page(newest.items, complete, limit, before, copy=False)
        if page is None:
            return await self.inner.list_messages(conversation_id, limit=limit, before=before)
        return page

    async def last_message(self, conversation_id: str) -> Message | None:
        """The newest message, from memory when the conversation is cached."""
        tail = self._tails.get(conversation_id)
        if tail is not None and (tail.messages or tail.complete):
            self._tails.move_to_end(conversation_id)
            return _copy(tail.messages[-1]) if tail.messages else None
        return await self.inner.last_message(conversation_id)

    # -- writes that keep the cache right ----------------------------------------

    async def append_message(self, message: Message) -> Message:
        """Append through the inner store, then extend or drop the cached tail."""
        try:
            stored = await self.inner.append_message(message)
        except BaseException:
            self._forget(message.conversation_id)
            raise
        self._extend(stored)
        return stored

    async def append_messages(self, messages: Sequence[Message]) -> list[Message]:
        """Append through the inner store, then extend or drop each cached tail."""
        try:
            stored = await self.inner.append_messages(messages)
        except BaseException:
            for message in messages:
                self._forget(message.conversation_id)
            raise
        for message in stored:
            self._extend(message)
        return stored

    async def update_message(
        self,
        message_id: str,
        *,
        content: str | None = None,
        status: MessageStatus | None = None,
        usage: Usage | None = None,
        tool_calls: Sequence[ToolCall] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Message:
        """Update through the inner store, then put the stored message in the cached tail."""
        updating = self._updating
        if updating.get(message_id):
            self._overlapped.add(message_id)
        updating[message_id] = updating.get(message_id, 0) + 1
        try:
            updated = await self.inner.update_message(
                message_id,
                content=content,
                status=status,
                usage=usage,
                tool_calls=tool_calls,
                metadata=metadata,
            )
        except BaseException:
            self._updated(message_id)
            # Which conversation it was is unknown here; forget them all.
            self._forget_all()
            raise
        if self._updated(message_id):
            self._forget(updated.conversation_id)
        else:
            self._replace(updated)
        return updated

    async def update_conversation(self, conversation_id: str, **fields: Any) -> Conversation:
        """Passed through (conversations are not cached)."""
        return await self.inner.update_conversation(conversation_id, **fields)

    async def clear_conversation(self, conversation_id: str) -> None:
        """Clear through the inner store and drop the cached tail."""
        try:
            await self.inner.clear_conversation(conversation_id)
        finally:
            self._forget(conversation_id)

    async def delete_conversation(self, conversation_id: str) -> None:
        """Delete through the inner store and drop the cached tail."""
        try:
            await self.inner.delete_conversation(conversation_id)
        finally:
            self._forget(conversation_id)

    async def streaming_replies(self, *, created_before: datetime) -> list[str]:
        """Passed through."""
        return await self.inner.streaming_replies(created_before=created_before)

    async def mark_interrupted(self, message_ids: Collection[str] | None = None) -> int:
        """Mark through the inner store and empty the cache."""
        try:
            return await self.inner.mark_interrupted(message_ids)
        finally:
            self._forget_all()

    async def delete_user(self, user_id: str) -> None:
        """Delete through the inner store and empty the cache."""
        try:
            await self.inner.delete_user(user_id)
        finally:
            self._forget_all()

    # -- passed through ----------------------------------------------------------

    async def create_conversation(self, conversation: Conversation) -> Conversation:
        """Passed through."""
        return await self.inner.create_conversation(conversation)

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        """Passed through."""
        return await self.inner.get_conversation(conversation_id)

    async def list_conversations(
        self, user_id: str, *, limit: int = 20, before: str | None = None
    ) -> Page[Conversation]:
        """Passed through."""
        return await self.inner.list_conversations(user_id, limit=limit, before=before)

    async def get_message(self, message_id: str) -> Message | None:
        """Passed through."""
        return await self.inner.get_message(message_id)

    async def find_by_request_id(self, conversation_id: str, request_id: str) -> Message | None:
        """Passed through."""
        return await self.inner.find_by_request_id(conversation_id, request_id)

    async def search_messages(self, user_id: str, query: str, *, limit: int = 20) -> list[Message]:
        """Passed through."""
        return await self.inner.search_messages(user_id, query, limit=limit)

    async def create_user(self, user: User) -> User:
        """Passed through."""
        return await self.inner.create_user(user)

    async def get_user(self, user_id: str) -> User | None:
        """Passed through."""
        return await self.inner.get_user(user_id)

    async def get_user_by_name(self, name: str) -> User | None:
        """Passed through."""
        return await self.inner.get_user_by_name(name)

    async def list_users(self) -> list[User]:
        """Passed through."""
        return await self.inner.list_users()

    async def add_key(
        self,
        user_id: str,
        key_hash: str,
        *,
        kind: str = "api",
        expires_at: datetime | None = None,
    ) -> None:
        """Passed through."""
        await self.inner.add_key(user_id, key_hash, kind=kind, expires_at=expires_at)

    async def user_for_key(self, key_hash: str, *, kind: str = "api") -> User | None:
        """Passed through."""
        return await self.inner.user_for_key(key_hash, kind=kind)

    async def revoke_key(self, key_hash: str) -> None:
        """Passed through."""
        await self.inner.revoke_key(key_hash)

    async def aclose(self) -> None:
        """Empty the cache and close the inner store."""
        self._forget_all()
        await self.inner.aclose()

    # -- inside --------------------------------------------------------------------

    def _serve(self, conversation_id: str, limit: int, before: int | None) -> Page[Message] | None:
        tail = self._tails.get(conversation_id)
        if tail is None:
            return None
        page = _page(tail.messages, tail.complete, limit, before, copy=True)
        if page is not None:
            self._tails.move_to_end(conversation_id)
        return page

    def _extend(self, stored: Message) -> None:
        """Add a just-appended message to its cached tail, or drop the tail if not next."""
        tail = self._written(stored.conversation_id)
        if tail is None:
            return
        last = tail.messages[-1].seq if tail.messages else None
        if (last is not None and stored.seq == last + 1) or (
            last is None and tail.complete and stored.seq == 1
        ):
            tail.messages.append(_copy(stored))
            if len(tail.messages) > self.max_messages:
                del tail.messages[: len(tail.messages) - self.max_messages]
                tail.complete = False
        else:
            self._tails.pop(stored.conversation_id, None)

    def _updated(self, message_id: str) -> bool:
        """Count an update of ``message_id`` as answered; True if another overlapped it."""
        left = self._updating[message_id] - 1
        overlapped = message_id in self._overlapped
        if left:
            self._updating[message_id] = left
        else:
            del self._updating[message_id]
            self._overlapped.discard(message_id)
        return overlapped

    def _replace(self, updated: Message) -> None:
        """Put a just-updated message in place of its cached copy, if it is cached."""
        tail = self._written(updated.conversation_id)
        if tail is None:
            return
        messages = tail.messages
        for index in range(len(messages) - 1, -1, -1):  # a reply is near the end
            if messages[index].id == updated.id:
                messages[index] = _copy(updated)
                return

    def _written(self, conversation_id: str) -> _Tail | None:
        """A write to the conversation was answered: reads in flight are stale; its tail."""
        self._stale(conversation_id)
        return self._tails.get(conversation_id)

    def _store(self, conversation_id: str, tail: _Tail) -> None:
        self._tails[conversation_id] = tail
        self._tails.move_to_end(conversation_id)
        while len(self._tails) > self.size:
            self._tails.popitem(last=False)

    def _stale(self, conversation_id: str) -> None:
        for fill in self._fills.get(conversation_id, ()):
            fill.stale = True

    def _forget(self, conversation_id: str) -> None:
        self._stale(conversation_id)
        self._tails.pop(conversation_id, None)

    def _forget_all(self) -> None:
        for waiting in self._fills.values():
            for fill in waiting:
                fill.stale = True
        self._tails.clear()


def _page(
    messages: list[Message], complete: bool, limit: int, before: int | None, *, copy: bool
) -> Page[Message] | None:
    """The page ``limit, before`` out of the newest ``messages`` (oldest first), or None
    if they do not reach back far enough; ``complete``: no older message exists."""
    candidates = messages
    if before is not None:
        candidates = [m for m in candidates if m.seq < before]
    if len(candidates) < limit and not complete:
        return None
    page = candidates[-limit:]
    more = bool(page) and (len(candidates) > limit or not complete)
    return Page([_copy(m) for m in page] if copy else page, str(page[0].seq) if more else None)


_FIELDS = operator.attrgetter(*(f.name for f in dataclasses.fields(Message)))


def _copy(message: Message) -> Message:
    """A copy the caller may change without touching the cache."""
    copied = Message(*_FIELDS(message))
    metadata = message.metadata
    copied.metadata = _json_copy(metadata) if metadata else {}
    if message.tool_calls is not None:
        copied.tool_calls = [
            ToolCall(c.id, c.name, _json_copy(c.arguments)) for c in message.tool_calls
        ]
    if message.usage is not None:
        copied.usage = Usage(message.usage.prompt_tokens, message.usage.completion_tokens)
    return copied


def _json_copy(value: Any) -> Any:
    """A copy of JSON data: new dicts and lists all the way down, scalars shared."""
    kind = type(value)
    if kind is dict:
        return {key: _json_copy(item) for key, item in value.items()}
    if kind is list:
        return [_json_copy(item) for item in value]
    return value
