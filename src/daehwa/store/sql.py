"""``SqlStore``: history and users in SQLite (the default) or PostgreSQL.

One code path serves both through SQLAlchemy's async engine (aiosqlite,
asyncpg). ``seq`` comes from a counter column on the conversation row,
bumped by an ``UPDATE ... RETURNING`` that is the first statement of the
append's transaction: PostgreSQL holds that row's lock until commit and
SQLite holds its single write lock, so concurrent appends get 1, 2, 3 ... in
commit order with no gap or duplicate.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import (
    Select,
    delete,
    event,
    insert,
    select,
    tuple_,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from daehwa.errors import Conflict, NotFound, StoreError
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
from daehwa.store.migrate import upgrade
from daehwa.store.paging import (
    as_utc,
    check_fields,
    check_kind,
    check_limit,
    check_query,
    decode_cursor,
    encode_cursor,
    from_micros,
    later_than,
)
from daehwa.store.tables import (
    conversation_from_row,
    conversations,
    credentials,
    message_from_row,
    message_values,
    messages,
    user_from_row,
    users,
)

log = logging.getLogger(__name__)

# How long an SQLite connection waits for the write lock before failing.
SQLITE_BUSY_TIMEOUT_MS = 10_000


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the one writer; busy_timeout makes writers
    # queue for the lock instead of failing at once.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


class SqlStore:
    """A :class:`~daehwa.store.base.Store` in an SQL database.

    ``url`` is an SQLAlchemy async URL: ``sqlite+aiosqlite:///path/to/file.db``
    or ``postgresql+asyncpg://user@host/db``. Call :meth:`migrate` (or use
    :meth:`open`) before the first use.
    """

    def __init__(self, url: str, *, pool_size: int = 5, max_overflow: int = 10) -> None:
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        options: dict[str, Any] = {"json_serializer": _dumps, "json_deserializer": orjson.loads}
        if self.dialect != "sqlite":
            # A pooled server connection may have been dropped (restart, failover).
            options.update(pool_size=pool_size, max_overflow=max_overflow, pool_pre_ping=True)
        elif parsed.database not in (None, "", ":memory:"):
            options.update(pool_size=pool_size, max_overflow=max_overflow)
        self.engine: AsyncEngine = create_async_engine(parsed, **options)
        # SQLite has one writer at a time; queueing writers here is fairer and
        # faster than letting them sleep in SQLite's busy handler.
        self._write_lock: asyncio.Lock | None = None
        if self.dialect == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
            self._write_lock = asyncio.Lock()

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

    async def migrate(self) -> None:
        """Bring the schema up to the newest migration; existing data is kept."""
        async with self._write() as conn:
            await conn.run_sync(upgrade)

    async def aclose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()

    # -- conversations ---------------------------------------------------------

    async def create_conversation(self, conversation: Conversation) -> Conversation:
        """Store a new conversation; its times are set to now."""
        now = utcnow()
        values: dict[str, Any] = {
            "id": conversation.id or new_id(),
            "user_id": conversation.user_id,
            "title": conversation.title or "",
            "persona": conversation.persona,
            "variables": dict(conversation.variables or {}),
            "model": conversation.model,
            "summary": conversation.summary or "",
            "summary_seq": conversation.summary_seq,
            "last_seq": 0,
            "created_at": now,
            "updated_at": now,
        }
        async with self._write(conflict=f"conversation {values['id']} already exists") as conn:
            await conn.execute(insert(conversations).values(**values))
        del values["last_seq"]
        return Conversation(**values)

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        """The conversation, or ``None``."""
        async with self._read() as conn:
            row = (
                await conn.execute(
                    select(conversations).where(conversations.c.id == conversation_id)
                )
            ).first()
        return conversation_from_row(row) if row else None

    async def list_conversations(
        self, user_id: str, *, limit: int = 20, before: str | None = None
    ) -> Page[Conversation]:
        """The user's conversations, most recently updated first."""
        check_limit(limit)
        c = conversations.c
        query = select(conversations).where(c.user_id == user_id)
        if before:
            micros, last_id = decode_cursor(before)
            query = query.where(tuple_(c.updated_at, c.id) < tuple_(from_micros(micros), last_id))
        query = query.order_by(c.updated_at.desc(), c.id.desc()).limit(limit + 1)
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        items = [conversation_from_row(r) for r in rows[:limit]]
        more = len(rows) > limit
        return Page(items, encode_cursor(items[-1].updated_at, items[-1].id) if more else None)

    async def update_conversation(self, conversation_id: str, **fields: Any) -> Conversation:
        """Change the given fields; ``updated_at`` moves forward."""
        fields = check_fields(fields)
        c = conversations.c
        async with self._write() as conn:
            # Writing first takes the row (or SQLite's) lock before the read;
            # last_seq = last_seq keeps the statement valid when no field is given.
            previous = (
                await conn.execute(
                    update(conversations)
                    .where(c.id == conversation_id)
                    .values(last_seq=c.last_seq, **fields)
                    .returning(c.updated_at)
                )
            ).scalar_one_or_none()
            if previous is None:
                raise NotFound(f"conversation {conversation_id} not found")
            row = (
                await conn.execute(
                    update(conversations)
                    .where(c.id == conversation_id)
                    .values(updated_at=later_than(utcnow(), previous))
                    .returning(conversations)
                )
            ).one()
        return conversation_from_row(row)

    async def delete_conversation(self, conversation_id: str) -> None:
        """Remove the conversation and its messages (nothing happens if it is missing)."""
        async with self._write() as conn:
            await conn.execute(
                delete(messages).where(messages.c.conversation_id == conversation_id)
            )
            await conn.execute(delete(conversations).where(conversations.c.id == conversation_id))

    async def clear_conversation(self, conversation_id: str) -> None:
        """Remove every message and the summary; ``seq`` keeps counting up."""
        async with self._write() as conn:
            await conn.execute(
                update(conversations)
                .where(conversations.c.id == conversation_id)
                .values(summary="", summary_seq=0)
            )
            await conn.execute(
                delete(messages).where(messages.c.conversation_id == conversation_id)
            )

    # -- messages --------------------------------------------------------------

    async def append_message(self, message: Message) -> Message:
        """Store a new message with the next ``seq``."""
        values = message_values(message)
        values["id"] = values["id"] or new_id()
        c = conversations.c
        async with self._write(conflict=f"message {values['id']} already exists") as conn:
            bumped = (
                await conn.execute(
                    update(conversations)
                    .where(c.id == message.conversation_id)
                    .values(last_seq=c.last_seq + 1)
                    .returning(c.last_seq, c.updated_at)
                )
            ).first()
            if bumped is None:
                raise NotFound(f"conversation {message.conversation_id} not found")
            seq, previous = bumped
            created = later_than(utcnow(), previous)
            await conn.execute(
                update(conversations)
                .where(c.id == message.conversation_id)
                .values(updated_at=created)
            )
            values.update(seq=seq, created_at=created, updated_at=created)
            await conn.execute(insert(messages).values(**values))
        return _stored(message, values)

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
        values: dict[str, Any] = {"updated_at": utcnow()}
        if content is not None:
            values["content"] = content
        if status is not None:
            values["status"] = MessageStatus(status).value
        if usage is not None:
            values["usage"] = usage.to_dict()
        if tool_calls is not None:
            values["tool_calls"] = [t.to_dict() for t in tool_calls]
        if metadata is not None:
            values["metadata"] = metadata
        async with self._write() as conn:
            row = (
                await conn.execute(
                    update(messages)
                    .where(messages.c.id == message_id)
                    .values(**values)
                    .returning(messages)
                )
            ).first()
        if row is None:
            raise NotFound(f"message {message_id} not found")
        return message_from_row(row)

    async def get_message(self, message_id: str) -> Message | None:
        """The message, or ``None``."""
        return await self._one(select(messages).where(messages.c.id == message_id))

    async def find_by_request_id(self, conversation_id: str, request_id: str) -> Message | None:
        """The first message of the conversation sent with ``request_id``."""
        m = messages.c
        return await self._one(
            select(messages)
            .where(m.conversation_id == conversation_id, m.request_id == request_id)
            .order_by(m.seq)
            .limit(1)
        )

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
        m = messages.c
        query = select(messages).where(m.conversation_id == conversation_id)
        if before is not None:
            query = query.where(m.seq < before)
        if since is not None:
            query = query.where(m.created_at >= as_utc(since)).order_by(m.seq).limit(limit + 1)
        else:
            query = query.order_by(m.seq.desc()).limit(limit + 1)
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        more = len(rows) > limit
        found = [message_from_row(r) for r in rows[:limit]]
        if since is not None:
            return Page(found, rows[limit].created_at.isoformat() if more else None)
        found.reverse()
        return Page(found, str(found[0].seq) if more else None)

    async def last_message(self, conversation_id: str) -> Message | None:
        """The newest message of the conversation, if any."""
        m = messages.c
        return await self._one(
            select(messages)
            .where(m.conversation_id == conversation_id)
            .order_by(m.seq.desc())
            .limit(1)
        )

    async def search_messages(self, user_id: str, query: str, *, limit: int = 20) -> list[Message]:
        """The user's messages containing ``query`` (ASCII case ignored), newest first."""
        check_limit(limit)
        check_query(query)
        m = messages.c
        # ILIKE on PostgreSQL (served by the trigram index when there is one);
        # lower(...) LIKE lower(...) on SQLite.
        pattern = "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        owned = select(conversations.c.id).where(conversations.c.user_id == user_id)
        statement = (
            select(messages)
            .where(m.conversation_id.in_(owned), m.content.ilike(pattern, escape="\\"))
            .order_by(m.created_at.desc(), m.seq.desc(), m.id.desc())
            .limit(limit)
        )
        async with self._read() as conn:
            rows = (await conn.execute(statement)).all()
        return [message_from_row(r) for r in rows]

    async def streaming_replies(self, *, created_before: datetime) -> list[str]:
        """Ids of ``streaming`` messages created before ``created_before``."""
        m = messages.c
        query = select(m.id).where(
            m.status == MessageStatus.STREAMING.value, m.created_at < as_utc(created_before)
        )
        async with self._read() as conn:
            return list((await conn.execute(query)).scalars().all())

    async def mark_interrupted(self, message_ids: Collection[str] | None = None) -> int:
        """Turn ``streaming`` messages (all, or those of ``message_ids``) into ``incomplete``."""
        m = messages.c
        statement = (
            update(messages)
            .where(m.status == MessageStatus.STREAMING.value)
            .values(status=MessageStatus.INCOMPLETE.value, updated_at=utcnow())
        )
        if message_ids is not None:
            ids = list(set(message_ids))
            if not ids:
                return 0
            statement = statement.where(m.id.in_(ids))
        async with self._write() as conn:
            result = await conn.execute(statement)
        return int(result.rowcount)

    # -- users -----------------------------------------------------------------

    async def create_user(self, user: User) -> User:
        """Store a new user; ids and names are unique."""
        values: dict[str, Any] = {
            "id": user.id or new_id(),
            "name": user.name,
            "is_admin": user.is_admin,
            "password_hash": user.password_hash,
            "created_at": as_utc(user.created_at),
        }
        async with self._write(conflict=f"user {user.name!r} already exists") as conn:
            await conn.execute(insert(users).values(**values))
        return User(**values)

    async def get_user(self, user_id: str) -> User | None:
        """The user, or ``None``."""
        return await self._user(select(users).where(users.c.id == user_id))

    async def get_user_by_name(self, name: str) -> User | None:
        """The user called ``name``, or ``None``."""
        return await self._user(select(users).where(users.c.name == name))

    async def list_users(self) -> list[User]:
        """Every user, oldest first."""
        async with self._read() as conn:
            rows = (
                await conn.execute(select(users).order_by(users.c.created_at, users.c.name))
            ).all()
        return [user_from_row(r) for r in rows]

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
        async with self._write(conflict="this credential already exists") as conn:
            exists = (await conn.execute(select(users.c.id).where(users.c.id == user_id))).first()
            if exists is None:
                raise NotFound(f"user {user_id} not found")
            await conn.execute(
                insert(credentials).values(
                    key_hash=key_hash,
                    kind=kind,
                    user_id=user_id,
                    created_at=utcnow(),
                    expires_at=as_utc(expires_at) if expires_at else None,
                    revoked=False,
                )
            )

    async def user_for_key(self, key_hash: str, *, kind: str = "api") -> User | None:
        """The owner of a live credential of this kind, or ``None``."""
        k = credentials.c
        return await self._user(
            select(users)
            .join(credentials, k.user_id == users.c.id)
            .where(
                k.key_hash == key_hash,
                k.kind == kind,
                k.revoked.is_(False),
                (k.expires_at.is_(None)) | (k.expires_at > utcnow()),
            )
        )

    async def revoke_key(self, key_hash: str) -> None:
        """Make a credential unusable (nothing happens if it is unknown)."""
        async with self._write() as conn:
            await conn.execute(
                update(credentials).where(credentials.c.key_hash == key_hash).values(revoked=True)
            )

    async def delete_user(self, user_id: str) -> None:
        """Remove the user with their credentials, conversations and messages."""
        owned = select(conversations.c.id).where(conversations.c.user_id == user_id)
        async with self._write() as conn:
            await conn.execute(delete(messages).where(messages.c.conversation_id.in_(owned)))
            await conn.execute(delete(conversations).where(conversations.c.user_id == user_id))
            await conn.execute(delete(credentials).where(credentials.c.user_id == user_id))
            await conn.execute(delete(users).where(users.c.id == user_id))

    # -- inside ----------------------------------------------------------------

    @asynccontextmanager
    async def _write(self, *, conflict: str | None = None) -> AsyncIterator[AsyncConnection]:
        """A transaction, committed at the end; database errors become ours."""
        try:
            if self._write_lock is None:
                async with self.engine.begin() as conn:
                    yield conn
            else:
                async with self._write_lock, self.engine.begin() as conn:
                    yield conn
        except IntegrityError as exc:
            if conflict is None:
                raise StoreError("the history store refused a write") from exc
            raise Conflict(conflict) from exc
        except (SQLAlchemyError, OSError) as exc:
            log.warning("sql store write failed: %s", exc)
            raise StoreError("the history store is unavailable") from exc

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reading; database errors become ours."""
        try:
            async with self.engine.connect() as conn:
                yield conn
        except (SQLAlchemyError, OSError) as exc:
            log.warning("sql store read failed: %s", exc)
            raise StoreError("the history store is unavailable") from exc

    async def _one(self, query: Select[Any]) -> Message | None:
        async with self._read() as conn:
            row = (await conn.execute(query)).first()
        return message_from_row(row) if row else None

    async def _user(self, query: Select[Any]) -> User | None:
        async with self._read() as conn:
            row = (await conn.execute(query)).first()
        return user_from_row(row) if row else None


def _stored(message: Message, values: dict[str, Any]) -> Message:
    """The appended message as stored, without a round trip to read it back."""
    return Message(
        role=message.role,
        content=message.content,
        id=values["id"],
        conversation_id=message.conversation_id,
        status=MessageStatus(message.status),
        seq=values["seq"],
        created_at=values["created_at"],
        usage=Usage.from_dict(values["usage"]),
        tool_calls=(
            [ToolCall.from_dict(c) for c in values["tool_calls"]]
            if values["tool_calls"] is not None
            else None
        ),
        tool_call_id=message.tool_call_id,
        request_id=message.request_id,
        model=message.model,
        metadata=dict(values["metadata"]),
    )
