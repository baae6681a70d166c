"""``MemoryStore``: the in-process store, for tests, demos and ``memory://``.

Nothing survives a restart. Every method runs without awaiting between its
read and its write, so under asyncio each is atomic without a lock. Values
go in and out as copies: a caller mutating a returned message never changes
the stored one.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from daehwa.errors import Conflict, NotFound
from daehwa.messages import (
    Conversation,
    Message,
    MessageStatus,
    ToolCall,
    Usage,
    User,
    new_id,
    utcnow,
)
from daehwa.store.base import Page
from daehwa.store.paging import (
    as_utc,
    check_fields,
    check_kind,
    check_limit,
    check_query,
    decode_cursor,
    encode_cursor,
    is_before,
    later_than,
    to_micros,
)


@dataclass(slots=True)
class _Thread:
    """A conversation with its messages in ``seq`` order."""

    conversation: Conversation
    messages: list[Message] = field(default_factory=list)
    last_seq: int = 0


@dataclass(slots=True)
class _Credential:
    user_id: str
    kind: str
    expires_at: datetime | None
    revoked: bool = False


class MemoryStore:
    """A complete :class:`~daehwa.store.base.Store` kept in dictionaries."""

    def __init__(self) -> None:
        self._threads: dict[str, _Thread] = {}
        self._messages: dict[str, Message] = {}
        self._users: dict[str, User] = {}
        self._credentials: dict[str, _Credential] = {}

    # -- conversations ---------------------------------------------------------

    async def create_conversation(self, conversation: Conversation) -> Conversation:
        """Store a new conversation; its times are set to now."""
        stored = copy.deepcopy(conversation)
        stored.id = stored.id or new_id()
        if stored.id in self._threads:
            raise Conflict(f"conversation {stored.id} already exists")
        stored.created_at = stored.updated_at = utcnow()
        self._threads[stored.id] = _Thread(stored)
        return copy.deepcopy(stored)

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        """The conversation, or ``None``."""
        thread = self._threads.get(conversation_id)
        return copy.deepcopy(thread.conversation) if thread else None

    async def list_conversations(
        self, user_id: str, *, limit: int = 20, before: str | None = None
    ) -> Page[Conversation]:
        """The user's conversations, most recently updated first."""
        check_limit(limit)
        cursor = decode_cursor(before) if before else None
        keyed = sorted(
            (
                ((to_micros(t.conversation.updated_at), t.conversation.id), t.conversation)
                for t in self._threads.values()
                if t.conversation.user_id == user_id
            ),
            key=lambda pair: pair[0],
            reverse=True,
        )
        if cursor is not None:
            keyed = [pair for pair in keyed if is_before(*pair[0], cursor)]
        items = [copy.deepcopy(c) for _, c in keyed[:limit]]
        more = len(keyed) > limit
        return Page(items, encode_cursor(items[-1].updated_at, items[-1].id) if more else None)

    async def update_conversation(self, conversation_id: str, **fields: Any) -> Conversation:
        """Change the given fields; ``updated_at`` moves forward."""
        fields = check_fields(fields)
        conversation = self._thread(conversation_id).conversation
        for name, value in fields.items():
            setattr(conversation, name, copy.deepcopy(value))
        conversation.updated_at = later_than(utcnow(), conversation.updated_at)
        return copy.deepcopy(conversation)

    async def delete_conversation(self, conversation_id: str) -> None:
        """Remove the conversation and its messages (nothing happens if it is missing)."""
        thread = self._threads.pop(conversation_id, None)
        if thread is not None:
            for message in thread.messages:
                self._messages.pop(message.id, None)

    async def clear_conversation(self, conversation_id: str) -> None:
        """Remove every message and the summary; ``seq`` keeps counting up."""
        thread = self._threads.get(conversation_id)
        if thread is None:
            return
        for message in thread.messages:
            self._messages.pop(message.id, None)
        thread.messages.clear()
        thread.conversation.summary = ""
        thread.conversation.summary_seq = 0

    # -- messages --------------------------------------------------------------

    async def append_message(self, message: Message) -> Message:
        """Store a new message with the next ``seq``."""
        return self._append(message)

    def _append(self, message: Message) -> Message:
        thread = self._thread(message.conversation_id)
        stored = copy.deepcopy(message)
        stored.id = stored.id or new_id()
        if stored.id in self._messages:
            raise Conflict(f"message {stored.id} already exists")
        thread.last_seq += 1
        stored.seq = thread.last_seq
        stored.created_at = later_than(utcnow(), thread.conversation.updated_at)
        thread.conversation.updated_at = stored.created_at
        thread.messages.append(stored)
        self._messages[stored.id] = stored
        return copy.deepcopy(stored)

    async def append_messages(self, messages: Sequence[Message]) -> list[Message]:
        """Store new messages, all or none, with consecutive ``seq`` in each conversation."""
        ids: set[str] = set()
        for message in messages:
            self._thread(message.conversation_id)
            if message.id and (message.id in self._messages or message.id in ids):
                raise Conflict(f"message {message.id} already exists")
            ids.add(message.id)
        # Checked first, so none of these appends can fail half way.
        return [self._append(message) for message in messages]

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
        """Change the given fields of a stored message."""
        stored = self._messages.get(message_id)
        if stored is None:
            raise NotFound(f"message {message_id} not found")
        if content is not None:
            stored.content = content
        if status is not None:
            stored.status = MessageStatus(status)
        if usage is not None:
            stored.usage = copy.deepcopy(usage)
        if tool_calls is not None:
            stored.tool_calls = copy.deepcopy(list(tool_calls))
        if metadata is not None:
            stored.metadata = copy.deepcopy(metadata)
        return copy.deepcopy(stored)

    async def get_message(self, message_id: str) -> Message | None:
        """The message, or ``None``."""
        stored = self._messages.get(message_id)
        return copy.deepcopy(stored) if stored else None

    async def find_by_request_id(self, conversation_id: str, request_id: str) -> Message | None:
        """The first message of the conversation sent with ``request_id``."""
        thread = self._threads.get(conversation_id)
        for message in thread.messages if thread else ():
            if message.request_id == request_id:
                return copy.deepcopy(message)
        return None

    async def list_messages(
        self,
        conversation_id: str,
        *,
        limit: int = 50,
        before: int | None = None,
        since: datetime | None = None,
    ) -> Page[Message]:
        """A page of messages, oldest to newest inside the page."""
        check_limit(limit)
        thread = self._threads.get(conversation_id)
        found = list(thread.messages) if thread else []
        if before is not None:
            found = [m for m in found if m.seq < before]
        if since is not None:
            start = as_utc(since)
            found = [m for m in found if m.created_at >= start]
            page = found[:limit]
            more = len(found) > limit
            next_cursor = found[limit].created_at.isoformat() if more else None
        else:
            page = found[-limit:]
            more = len(found) > limit
            next_cursor = str(page[0].seq) if more else None
        return Page([copy.deepcopy(m) for m in page], next_cursor)

    async def last_message(self, conversation_id: str) -> Message | None:
        """The newest message of the conversation, if any."""
        thread = self._threads.get(conversation_id)
        if thread is None or not thread.messages:
            return None
        return copy.deepcopy(thread.messages[-1])

    async def search_messages(self, user_id: str, query: str, *, limit: int = 20) -> list[Message]:
        """The user's messages containing ``query`` (ASCII case ignored), newest first."""
        check_limit(limit)
        needle = _ascii_lower(check_query(query))
        found = [
            m
            for t in self._threads.values()
            if t.conversation.user_id == user_id
            for m in t.messages
            if needle in _ascii_lower(m.content)
        ]
        found.sort(key=lambda m: (m.created_at, m.seq, m.id), reverse=True)
        return [copy.deepcopy(m) for m in found[:limit]]

    async def streaming_replies(self, *, created_before: datetime) -> list[str]:
        """Ids of ``streaming`` messages created before ``created_before``."""
        cutoff = as_utc(created_before)
        return [
            m.id
            for m in self._messages.values()
            if m.status is MessageStatus.STREAMING and m.created_at < cutoff
        ]

    async def mark_interrupted(self, message_ids: Collection[str] | None = None) -> int:
        """Turn ``streaming`` messages (all, or those of ``message_ids``) into ``incomplete``."""
        if message_ids is None:
            chosen: list[Message] = list(self._messages.values())
        else:
            chosen = [m for i in set(message_ids) if (m := self._messages.get(i)) is not None]
        count = 0
        for message in chosen:
            if message.status is MessageStatus.STREAMING:
                message.status = MessageStatus.INCOMPLETE
                count += 1
        return count

    # -- users -----------------------------------------------------------------

    async def create_user(self, user: User) -> User:
        """Store a new user; ids and names are unique."""
        stored = copy.deepcopy(user)
        stored.id = stored.id or new_id()
        if stored.id in self._users or any(u.name == stored.name for u in self._users.values()):
            raise Conflict(f"user {stored.name!r} already exists")
        self._users[stored.id] = stored
        return copy.deepcopy(stored)

    async def get_user(self, user_id: str) -> User | None:
        """The user, or ``None``."""
        user = self._users.get(user_id)
        return copy.deepcopy(user) if user else None

    async def get_user_by_name(self, name: str) -> User | None:
        """The user called ``name``, or ``None``."""
        for user in self._users.values():
            if user.name == name:
                return copy.deepcopy(user)
        return None

    async def list_users(self) -> list[User]:
        """Every user, oldest first."""
        users = sorted(self._users.values(), key=lambda u: (u.created_at, u.name))
        return [copy.deepcopy(u) for u in users]

    async def add_key(
        self,
        user_id: str,
        key_hash: str,
        *,
        kind: str = "api",
        expires_at: datetime | None = None,
    ) -> None:
        """Store a credential hash for an existing user."""
        check_kind(kind)
        if user_id not in self._users:
            raise NotFound(f"user {user_id} not found")
        if key_hash in self._credentials:
            raise Conflict("this credential already exists")
        expiry = as_utc(expires_at) if expires_at else None
        self._credentials[key_hash] = _Credential(user_id, kind, expiry)

    async def user_for_key(self, key_hash: str, *, kind: str = "api") -> User | None:
        """The owner of a live credential of this kind, or ``None``."""
        credential = self._credentials.get(key_hash)
        if credential is None or credential.revoked or credential.kind != kind:
            return None
        if credential.expires_at is not None and credential.expires_at <= utcnow():
            return None
        return await self.get_user(credential.user_id)

    async def revoke_key(self, key_hash: str) -> None:
        """Make a credential unusable (nothing happens if it is unknown)."""
        credential = self._credentials.get(key_hash)
        if credential is not None:
            credential.revoked = True

    async def delete_user(self, user_id: str) -> None:
        """Remove the user with their credentials, conversations and messages."""
        owned = [cid for cid, t in self._threads.items() if t.conversation.user_id == user_id]
        for conversation_id in owned:
            await self.delete_conversation(conversation_id)
        for key_hash in [h for h, c in self._credentials.items() if c.user_id == user_id]:
            del self._credentials[key_hash]
        self._users.pop(user_id, None)

    async def aclose(self) -> None:
        """Nothing to release."""

    # -- inside ----------------------------------------------------------------

    def _thread(self, conversation_id: str) -> _Thread:
        thread = self._threads.get(conversation_id)
        if thread is None:
            raise NotFound(f"conversation {conversation_id} not found")
        return thread

    def counts(self) -> dict[str, int]:
        """How many records of each kind are held (used by tests to prove deletion)."""
        return {
            "conversations": len(self._threads),
            "messages": len(self._messages),
            "users": len(self._users),
            "credentials": len(self._credentials),
        }


def _ascii_lower(text: str) -> str:
    # Lower only A-Z, like SQLite's LIKE, so every store matches the same texts.
    return text.translate(_ASCII_LOWER)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
