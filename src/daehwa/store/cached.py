"""``CachedStore``: an LRU of hot conversations' newest messages, in front of any store.

Loading the newest page of a conversation (every turn does) is served from
memory when that conversation is hot. Writes go straight to the inner store
and then fix the cache, so the cache never shows less than the store.

Only writes made through *this* object are seen. With several processes
sharing one database, each would keep its own cache and miss the others'
writes: turn the cache off there (``[store] cache_size = 0``).

Correctness under concurrent writes rests on two rules:

- A write, once the inner store has answered (or failed), extends the cached
  tail only when the new message is exactly the next ``seq``; any other write
  drops the conversation's entry.
- A read that fills the cache registers itself first; every write to that
  conversation meanwhile marks it stale, and a stale read does not fill.
"""

from __future__ import annotations

import copy
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

    def __init__(self, inner: Store, size: int, *, max_messages: int = 200) -> None:
        if size < 1:
            raise ValueError("size must be at least 1 (use the inner store to turn caching off)")
        self.inner = inner
        self.size = size
        self.max_messages = max_messages
        self._tails: OrderedDict[str, _Tail] = OrderedDict()
        self._fills: dict[str, set[_Fill]] = {}
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
        if since is not None or before is not None:
            return await self.inner.list_messages(
                conversation_id, limit=limit, before=before, since=since
            )
        fill = _Fill()
        self._fills.setdefault(conversation_id, set()).add(fill)
        try:
            page = await self.inner.list_messages(conversation_id, limit=limit)
        finally:
            waiting = self._fills[conversation_id]
            waiting.discard(fill)
            if not waiting:
                del self._fills[conversation_id]
        if not fill.stale:
            self._store(conversation_id, _Tail([_copy(m) for m in page.items], page.next is None))
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
        """Update through the inner store and drop the conversation's cached tail."""
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
            # Which conversation it was is unknown here; forget them all.
            self._forget_all()
            raise
        self._forget(updated.conversation_id)
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
        candidates = tail.messages
        if before is not None:
            candidates = [m for m in candidates if m.seq < before]
        if len(candidates) < limit and not tail.complete:
            return None
        self._tails.move_to_end(conversation_id)
        page = candidates[-limit:]
        more = bool(page) and (len(candidates) > limit or not tail.complete)
        return Page([_copy(m) for m in page], str(page[0].seq) if more else None)

    def _extend(self, stored: Message) -> None:
        """Add a just-appended message to its cached tail, or drop the tail if not next."""
        self._stale(stored.conversation_id)
        tail = self._tails.get(stored.conversation_id)
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


def _copy(message: Message) -> Message:
    """A copy the caller may change without touching the cache."""
    copied = copy.copy(message)
    copied.metadata = copy.deepcopy(message.metadata) if message.metadata else {}
    if message.tool_calls is not None:
        copied.tool_calls = copy.deepcopy(message.tool_calls)
    if message.usage is not None:
        copied.usage = copy.copy(message.usage)
    return copied
