"""``SqlStore``: history and users in SQLite (the default) or PostgreSQL.

The schema is SQLAlchemy's (``tables.py``) and the Alembic migrations build
it, but the calls themselves go straight to the driver with fixed SQL, one
thread hop or one round trip per call where possible: ``sqlite3`` in worker
threads (:mod:`daehwa.store.sqlite`) or an ``asyncpg`` pool
(:mod:`daehwa.store.postgres`); :mod:`daehwa.store.sql_engine` reads the URL
for the driver and runs the migrations. This class holds what both drivers
share: the arguments' checks, the encoding of values, and the shape of each
result.

``seq`` comes from a counter column on the conversation row, bumped by the
first statement of the append's transaction: PostgreSQL holds that row's lock
until commit and SQLite holds its single write lock, so concurrent appends
get 1, 2, 3 ... in commit order with no gap or duplicate.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from daehwa.errors import Conflict, NotFound
from daehwa.messages import (
    Conversation,
    Message,
    MessageStatus,
    Role,
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
    from_micros,
)
from daehwa.store.sql_engine import asyncpg_options, engine_for, migrate_database
from daehwa.store.sqlite import SqliteDatabase
from daehwa.store.urls import sqlite_database

if TYPE_CHECKING:
    from sqlalchemy.engine import URL
    from sqlalchemy.ext.asyncio import AsyncEngine

    from daehwa.store.postgres import PostgresDatabase


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _json_or_none(value: Any) -> str | None:
    return _dumps(value) if value is not None else None


class SqlStore:
    """A :class:`~daehwa.store.base.Store` in an SQL database.

    ``url`` is an SQLAlchemy URL: ``sqlite+aiosqlite:///path/to/file.db`` or
    ``postgresql+asyncpg://user@host/db`` (the driver part may be left out).
    On PostgreSQL each process keeps ``pool_size`` connections and opens up to
    ``max_overflow`` more under load. Call :meth:`migrate` (or use :meth:`open`)
    before the first use.
    """

    def __init__(
        self, url: str, *, pool_size: int | None = None, max_overflow: int | None = None
    ) -> None:
        self._url = url
        # SQLite needs only the file's path: no SQLAlchemy imported (~11 MB at rest).
        database = sqlite_database(url)
        self.dialect = "sqlite" if database is not None else self.url.get_backend_name()
        self._engine: AsyncEngine | None = None
        self._db: SqliteDatabase | PostgresDatabase
        if database is not None:
            self._db = SqliteDatabase(database)
        elif self.dialect == "postgresql":
            # Imported here: asyncpg is ~15 MB that an SQLite server never needs.
            from daehwa.store.postgres import MAX_OVERFLOW, POOL_SIZE, PostgresDatabase

            self._db = PostgresDatabase(
                asyncpg_options(self.url),
                pool_size=POOL_SIZE if pool_size is None else pool_size,
                max_overflow=MAX_OVERFLOW if max_overflow is None else max_overflow,
            )
        else:
            raise ValueError(f"SqlStore supports sqlite and postgresql, not {self.dialect!r}")

    @classmethod
    async def open(cls, url: str, **options: Any) -> SqlStore:
        """A store on ``url`` with its schema migrated to the newest version."""
        store = cls(url, **options)
        try:
            await store.migrate()
        except BaseException:
            await store.aclose()
            raise
        return store

    @functools.cached_property
    def url(self) -> URL:
        """The store's URL, as SQLAlchemy reads it."""
        from sqlalchemy.engine import make_url

        return make_url(self._url)

    @property
    def engine(self) -> AsyncEngine:
        """An SQLAlchemy engine on the same database, for migrations and tools.

        The store's own calls do not use it. (For an in-memory SQLite database
        it would see a different, empty database.)
        """
        if self._engine is None:
            self._engine = engine_for(self.url, self.dialect)
        return self._engine

    async def migrate(self) -> None:
        """Bring the schema up to the newest migration; existing data is kept."""
        await migrate_database(self._db, lambda: self.engine)

    async def aclose(self) -> None:
        """Close every connection (and the store's threads on SQLite)."""
        try:
            await self._db.aclose()
        finally:
            if self._engine is not None:
                await self._engine.dispose()

    # -- conversations ---------------------------------------------------------

    async def create_conversation(self, conversation: Conversation) -> Conversation:
        """Store a new conversation; its times are set to now."""
        now = utcnow()
        stored = Conversation(
            id=conversation.id or new_id(),
            user_id=conversation.user_id,
            title=conversation.title or "",
            persona=conversation.persona,
            variables=dict(conversation.variables or {}),
            model=conversation.model,
            summary=conversation.summary or "",
            summary_seq=conversation.summary_seq,
            created_at=now,
            updated_at=now,
        )
        row = (
            stored.id,
            stored.user_id,
            stored.title,
            stored.persona,
            _dumps(stored.variables),
            stored.model,
            stored.summary,
            stored.summary_seq,
            0,
            now,
            now,
        )
        try:
            await self._db.insert_conversation(row)
        except Conflict as exc:
            raise Conflict(f"conversation {stored.id} already exists") from exc
        return stored

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        """The conversation, or ``None``."""
        return await self._db.get_conversation(conversation_id)

    async def list_conversations(
        self, user_id: str, *, limit: int = 20, before: str | None = None
    ) -> Page[Conversation]:
        """The user's conversations, most recently updated first."""
        check_limit(limit)
        after = None
        if before:
            micros, last_id = decode_cursor(before)
            after = (from_micros(micros), last_id)
        found = await self._db.list_conversations(user_id, limit + 1, after)
        items = found[:limit]
        more = len(found) > limit
        return Page(items, encode_cursor(items[-1].updated_at, items[-1].id) if more else None)

    async def update_conversation(self, conversation_id: str, **fields: Any) -> Conversation:
        """Change the given fields; ``updated_at`` moves forward."""
        fields = check_fields(fields)
        if "variables" in fields:
            fields["variables"] = _dumps(fields["variables"])
        updated = await self._db.update_conversation(conversation_id, fields, utcnow())
        if updated is None:
            raise NotFound(f"conversation {conversation_id} not found")
        return updated

    async def delete_conversation(self, conversation_id: str) -> None:
        """Remove the conversation and its messages (nothing happens if it is missing)."""
        await self._db.delete_conversation(conversation_id)

    async def clear_conversation(self, conversation_id: str) -> None:
        """Remove every message and the summary; ``seq`` keeps counting up."""
        await self._db.clear_conversation(conversation_id)

    # -- messages --------------------------------------------------------------

    async def append_message(self, message: Message) -> Message:
        """Store a new message with the next ``seq``."""
        return (await self.append_messages([message]))[0]

    async def append_messages(self, messages: Sequence[Message]) -> list[Message]:
        """Store new messages in one transaction, with consecutive ``seq`` in each conversation."""
        if not messages:
            return []
        rows = [_message_row(m) for m in messages]
        now = utcnow()
        groups: list[tuple[str, list[tuple[Any, ...]]]] = []
        for message, row in zip(messages, rows, strict=True):
            if groups and groups[-1][0] == message.conversation_id:
                groups[-1][1].append(row)
            else:
                groups.append((message.conversation_id, [row]))
        conflict = f"message {rows[0][0]} already exists" if len(rows) == 1 else None
        try:
            if len(groups) == 1:
                stored = await self._db.append(groups[0][0], rows, now)
                if stored is None:
                    raise NotFound(f"conversation {groups[0][0]} not found")
            else:
                stored = await self._db.append_grouped(groups, now)
        except Conflict as exc:
            raise Conflict(conflict or "one of these messages already exists") from exc
        return [
            _stored(message, row, seq, created)
            for message, row, (seq, created) in zip(messages, rows, stored, strict=True)
        ]

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
        """Change the given fields of a stored message (one statement)."""
        params = (
            content,
            MessageStatus(status).value if status is not None else None,
            _dumps(usage.to_dict()) if usage is not None else None,
            _dumps([t.to_dict() for t in tool_calls]) if tool_calls is not None else None,
            _dumps(metadata) if metadata is not None else None,
            utcnow(),
            message_id,
        )
        updated = await self._db.update_message(params)
        if updated is None:
            raise NotFound(f"message {message_id} not found")
        return updated

    async def get_message(self, message_id: str) -> Message | None:
        """The message, or ``None``."""
        return await self._db.get_message(message_id)

    async def find_by_request_id(self, conversation_id: str, request_id: str) -> Message | None:
        """The first message of the conversation sent with ``request_id``."""
        return await self._db.find_by_request_id(conversation_id, request_id)

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
        start = as_utc(since) if since is not None else None
        found = await self._db.list_messages(conversation_id, limit + 1, before, start)
        more = len(found) > limit
        if start is not None:
            return Page(found[:limit], found[limit].created_at.isoformat() if more else None)
        page = found[:limit]
        page.reverse()
        return Page(page, str(page[0].seq) if more else None)

    async def last_message(self, conversation_id: str) -> Message | None:
        """The newest message of the conversation, if any."""
        return await self._db.last_message(conversation_id)

    async def search_messages(self, user_id: str, query: str, *, limit: int = 20) -> list[Message]:
        """The user's messages containing ``query`` (ASCII case ignored), newest first."""
        check_limit(limit)
        check_query(query)
        pattern = "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        return await self._db.search_messages(user_id, pattern, limit)

    async def streaming_replies(self, *, created_before: datetime) -> list[str]:
        """Ids of ``streaming`` messages created before ``created_before``."""
        return await self._db.streaming_replies(as_utc(created_before))

    async def mark_interrupted(self, message_ids: Collection[str] | None = None) -> int:
        """Turn ``streaming`` messages (all, or those of ``message_ids``) into ``incomplete``."""
        if message_ids is not None and not message_ids:
            return 0
        return await self._db.mark_interrupted(message_ids, utcnow())

    # -- users -----------------------------------------------------------------

    async def create_user(self, user: User) -> User:
        """Store a new user; ids and names are unique."""
        stored = User(
            id=user.id or new_id(),
            name=user.name,
            is_admin=user.is_admin,
            password_hash=user.password_hash,
            created_at=as_utc(user.created_at),
        )
        row = (stored.id, stored.name, stored.is_admin, stored.password_hash, stored.created_at)
        try:
            await self._db.insert_user(row)
        except Conflict as exc:
            raise Conflict(f"user {user.name!r} already exists") from exc
        return stored

    async def get_user(self, user_id: str) -> User | None:
        """The user, or ``None``."""
        return await self._db.get_user(user_id)

    async def get_user_by_name(self, name: str) -> User | None:
        """The user called ``name``, or ``None``."""
        return await self._db.get_user_by_name(name)

    async def list_users(self) -> list[User]:
        """Every user, oldest first."""
        return await self._db.list_users()

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
        expiry = as_utc(expires_at) if expires_at else None
        row = (key_hash, kind, user_id, utcnow(), expiry, False)
        try:
            added = await self._db.add_key(row)
        except Conflict as exc:
            raise Conflict("this credential already exists") from exc
        if not added:
            raise NotFound(f"user {user_id} not found")

    async def user_for_key(self, key_hash: str, *, kind: str = "api") -> User | None:
        """The owner of a live credential of this kind, or ``None``."""
        return await self._db.user_for_key(key_hash, kind, utcnow())

    async def revoke_key(self, key_hash: str) -> None:
        """Make a credential unusable (nothing happens if it is unknown)."""
        await self._db.revoke_key(key_hash)

    async def delete_user(self, user_id: str) -> None:
        """Remove the user with their credentials, conversations and messages."""
        await self._db.delete_user(user_id)


def _message_row(message: Message) -> tuple[Any, ...]:
    """A new message's columns (``MESSAGE_COLUMNS`` without seq and created_at), JSON as text."""
    return (
        message.id or new_id(),
        message.conversation_id,
        Role(message.role).value,
        message.content,
        MessageStatus(message.status).value,
        _dumps(message.usage.to_dict()) if message.usage else None,
        _json_or_none(
            [c.to_dict() for c in message.tool_calls] if message.tool_calls is not None else None
        ),
        message.tool_call_id,
        message.request_id,
        message.model,
        _dumps(message.metadata or {}),
    )


def _stored(message: Message, row: tuple[Any, ...], seq: int, created: datetime) -> Message:
    """The appended message as stored, without a round trip to read it back."""
    return Message(
        role=Role(message.role),
        content=message.content,
        id=row[0],
        conversation_id=message.conversation_id,
        status=MessageStatus(message.status),
        seq=seq,
        created_at=created,
        usage=Usage.from_dict(message.usage.to_dict()) if message.usage else None,
        tool_calls=(
            [ToolCall.from_dict(c.to_dict()) for c in message.tool_calls]
            if message.tool_calls is not None
            else None
        ),
        tool_call_id=message.tool_call_id,
        request_id=message.request_id,
        model=message.model,
        metadata=orjson.loads(row[10]),
    )
