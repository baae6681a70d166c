"""The protocols every history store implements.

One contract test suite (tests/store/test_contract.py) runs against each.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from daehwa.messages import Conversation, Message, MessageStatus, ToolCall, Usage, User

T = TypeVar("T")


@dataclass(slots=True, frozen=True)
class Page(Generic[T]):
    """A page of results and the cursor for the next one (``None`` at the end)."""

    items: list[T]
    next: str | None


class HistoryStore(Protocol):
    """Conversations and their messages.

    Messages get a per-conversation ``seq`` (1, 2, 3 ...) at append time, in
    the order appends commit; pages are ordered by it.
    """

    async def create_conversation(self, conversation: Conversation) -> Conversation: ...

    async def get_conversation(self, conversation_id: str) -> Conversation | None: ...

    async def list_conversations(
        self, user_id: str, *, limit: int = 20, before: str | None = None
    ) -> Page[Conversation]:
        """The user's conversations, most recently updated first.

        ``before`` is the ``next`` cursor of the previous page.
        """
        ...

    async def update_conversation(self, conversation_id: str, **fields: Any) -> Conversation:
        """Change ``title``, ``summary``, ``summary_seq``, ``model`` or ``variables``."""
        ...

    async def delete_conversation(self, conversation_id: str) -> None:
        """Remove the conversation and every message in it."""
        ...

    async def clear_conversation(self, conversation_id: str) -> None:
        """Remove every message and the summary; keep the conversation."""
        ...

    async def append_message(self, message: Message) -> Message:
        """Store a new message; returns it with ``id``, ``seq`` and ``created_at`` set.

        Also moves the conversation's ``updated_at`` forward.
        """
        ...

    async def append_messages(self, messages: Sequence[Message]) -> list[Message]:
        """Store several new messages in one transaction, as stored, in the given order.

        The same as ``append_message`` for each in turn (consecutive ``seq`` in
        a conversation), except that either all are stored or, on an error,
        none is.
        """
        ...

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
        """Change a stored message (the reply as it grows and when it ends)."""
        ...

    async def get_message(self, message_id: str) -> Message | None: ...

    async def find_by_request_id(self, conversation_id: str, request_id: str) -> Message | None:
        """The user message sent with ``request_id`` in this conversation, if any."""
        ...

    async def list_messages(
        self,
        conversation_id: str,
        *,
        limit: int = 50,
        before: int | None = None,
        since: datetime | None = None,
    ) -> Page[Message]:
        """A page of messages, oldest to newest inside the page.

        Without ``since``: the newest ``limit`` messages with ``seq < before``;
        ``next`` is the ``before`` cursor for the older page. With ``since``:
        the oldest ``limit`` messages created at or after that time; ``next``
        continues forward.
        """
        ...

    async def last_message(self, conversation_id: str) -> Message | None:
        """The newest message of the conversation (for previews), if any."""
        ...

    async def search_messages(self, user_id: str, query: str, *, limit: int = 20) -> list[Message]:
        """The user's own messages containing ``query``, newest first.

        A substring match that ignores ASCII case (Korean has none).
        """
        ...

    async def streaming_replies(self, *, created_before: datetime) -> list[str]:
        """Ids of messages still ``streaming`` that were created before ``created_before``."""
        ...

    async def mark_interrupted(self, message_ids: Collection[str] | None = None) -> int:
        """Turn messages left ``streaming`` into ``incomplete`` (after a crash).

        Without ``message_ids`` every streaming message; with them, only those
        of them still streaming. Returns how many changed.
        """
        ...

    async def aclose(self) -> None: ...


class UserStore(Protocol):
    """Users and their hashed API keys and browser sessions."""

    async def create_user(self, user: User) -> User: ...

    async def get_user(self, user_id: str) -> User | None: ...

    async def get_user_by_name(self, name: str) -> User | None: ...

    async def list_users(self) -> list[User]: ...

    async def add_key(
        self,
        user_id: str,
        key_hash: str,
        *,
        kind: str = "api",
        expires_at: datetime | None = None,
    ) -> None:
        """Store a credential hash: an ``api`` key, a ``session`` or a ``login`` token."""
        ...

    async def user_for_key(self, key_hash: str, *, kind: str = "api") -> User | None:
        """The user whose credential of this kind has this hash, unless revoked or expired."""
        ...

    async def revoke_key(self, key_hash: str) -> None: ...

    async def delete_user(self, user_id: str) -> None:
        """Remove the user, their keys, conversations and messages."""
        ...


class Store(HistoryStore, UserStore, Protocol):
    """A store that keeps both history and users (every built-in store does)."""
