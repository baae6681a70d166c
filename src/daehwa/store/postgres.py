"""The PostgreSQL side of :class:`~daehwa.store.sql.SqlStore`: an ``asyncpg`` pool, used directly.

Every hot operation is one statement, so one round trip: an append bumps the
conversation's ``last_seq`` and ``updated_at`` and inserts the messages in a
single ``WITH ... UPDATE ... INSERT``. The SQL is fixed text, so asyncpg
prepares each statement once per connection and then only binds and runs it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg

from daehwa.errors import Conflict, NotFound, StoreError
from daehwa.messages import Conversation, Message, User
from daehwa.store.rows import (
    CONVERSATION_SELECT,
    MESSAGE_SELECT,
    USER_OF_KEY_SELECT,
    USER_SELECT,
    conversation_from_row,
    message_from_row,
    user_from_row,
)

log = logging.getLogger(__name__)

# Connections kept open, and the most opened under load; callers beyond that
# queue for a connection (each holds one for a single statement).
POOL_SIZE = 5
MAX_OVERFLOW = 15


def _as_is(moment: datetime) -> datetime:
    # asyncpg returns timestamptz as an aware datetime in UTC already.
    return moment


async def _keep(connection: asyncpg.Connection) -> None:
    # The store leaves no session state behind (no SET, LISTEN or advisory lock),
    # so the reset query asyncpg would send on every release is a wasted round trip.
    return None


class PostgresDatabase:
    """The SQL of every store operation, on one PostgreSQL database."""

    dialect = "postgresql"

    def __init__(
        self,
        connect: dict[str, Any],
        *,
        pool_size: int = POOL_SIZE,
        max_overflow: int = MAX_OVERFLOW,
    ) -> None:
        self.connect = connect
        self.min_size = max(1, pool_size)
        self.max_size = self.min_size + max(0, max_overflow)
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()
        self._closed = False

    async def pool(self) -> asyncpg.Pool:
        """The connection pool, opened on first use."""
        if self._pool is not None:
            return self._pool
        async with self._opening:
            if self._closed:
                raise StoreError("the history store is closed")
            if self._pool is None:
                try:
                    self._pool = await asyncpg.create_pool(
                        **self.connect,
                        min_size=self.min_size,
                        max_size=self.max_size,
                        reset=_keep,
                    )
                except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                    log.warning("postgres store cannot connect: %s", exc)
                    raise StoreError("the history store is unavailable") from exc
            return self._pool

    async def aclose(self) -> None:
        """Close every connection of the pool."""
        self._closed = True
        async with self._opening:
            if self._pool is not None:
                await self._pool.close()
                self._pool = None

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; one that broke is closed (the pool replaces it)."""
        pool = self._pool or await self.pool()
        try:
            async with pool.acquire() as connection:
                try:
                    yield connection
                except _BROKEN:
                    # Do not hand a connection in an unknown state to the next caller.
                    connection.terminate()
                    raise
        except NotFound:
            raise
        except Exception as exc:
            raise _translated(exc) from exc

    # A call that meets a dead pooled connection (after a server restart, say) is
    # tried on the next one, when that cannot run it twice; every dead one is
    # closed as it is found, so this ends within the pool's size.

    async def _fetchrow(self, sql: str, *args: Any) -> Any:
        for attempt in range(self.max_size, -1, -1):
            try:
                async with self._connection() as connection:
                    return await connection.fetchrow(sql, *args)
            except StoreError as exc:
                if not attempt or not _unsent(exc, sql):
                    raise
        raise AssertionError("unreachable")

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        for attempt in range(self.max_size, -1, -1):
            try:
                async with self._connection() as connection:
                    return list(await connection.fetch(sql, *args))
            except StoreError as exc:
                if not attempt or not _unsent(exc, sql):
                    raise
        raise AssertionError("unreachable")

    async def _execute(self, sql: str, *args: Any) -> str:
        for attempt in range(self.max_size, -1, -1):
            try:
                async with self._connection() as connection:
                    return str(await connection.execute(sql, *args))
            except StoreError as exc:
                if not attempt or not _unsent(exc, sql):
                    raise
        raise AssertionError("unreachable")

    async def schema_revisions(self) -> frozenset[str]:
        """The revisions in Alembic's version table (none before the first migration)."""
        if not (await self._fetchrow("SELECT to_regclass('alembic_version') IS NOT NULL"))[0]:
            return frozenset()
        return frozenset(
            row[0] for row in await self._fetch("SELECT version_num FROM alembic_version")
        )

    async def _in_transaction(self, statements: tuple[str, ...], *args: Any) -> None:
        async with self._connection() as connection, connection.transaction():
            for sql in statements:
                await connection.execute(sql, *args)

    # -- conversations -------------------------------------------------------------

    async def insert_conversation(self, row: tuple[Any, ...]) -> None:
        await self._execute(_INSERT_CONVERSATION, *row)

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        row = await self._fetchrow(_GET_CONVERSATION, conversation_id)
        return conversation_from_row(row, _as_is) if row else None

    async def list_conversations(
        self, user_id: str, limit: int, after: tuple[datetime, str] | None
    ) -> list[Conversation]:
        if after is None:
            rows = await self._fetch(_LIST_CONVERSATIONS, user_id, limit)
        else:
            rows = await self._fetch(_LIST_CONVERSATIONS_AFTER, user_id, *after, limit)
        return [conversation_from_row(r, _as_is) for r in rows]

    async def update_conversation(
        self, conversation_id: str, fields: dict[str, Any], now: datetime
    ) -> Conversation | None:
        names = sorted(fields)
        row = await self._fetchrow(
            _update_conversation_sql(tuple(names)),
            *(fields[n] for n in names),
            now,
            conversation_id,
        )
        return conversation_from_row(row, _as_is) if row else None

    async def delete_conversation(self, conversation_id: str) -> None:
        await self._in_transaction(_DELETE_CONVERSATION, conversation_id)

    async def clear_conversation(self, conversation_id: str) -> None:
        await self._in_transaction(_CLEAR_CONVERSATION, conversation_id)

    # -- messages --------------------------------------------------------------------

    async def append(
        self, conversation_id: str, rows: list[tuple[Any, ...]], now: datetime
    ) -> list[tuple[int, datetime]] | None:
        """Insert ``rows`` (``MESSAGE_COLUMNS`` without seq and times) with the next seqs.

        ``None`` when the conversation does not exist (then nothing is stored).
        """
        found = await self._fetch(_APPEND, conversation_id, len(rows), now, *_arrays(rows))
        if not found:
            return None
        stored = {r[0]: (r[1], r[2]) for r in found}
        return [stored[row[0]] for row in rows]

    async def append_grouped(
        self, groups: list[tuple[str, list[tuple[Any, ...]]]], now: datetime
    ) -> list[tuple[int, datetime]]:
        """Like :meth:`append` for messages of several conversations, in one transaction."""
        stored: list[tuple[int, datetime]] = []
        async with self._connection() as connection, connection.transaction():
            for conversation_id, rows in groups:
                found = await connection.fetch(
                    _APPEND, conversation_id, len(rows), now, *_arrays(rows)
                )
                if not found:
                    raise NotFound(f"conversation {conversation_id} not found")
                by_id = {r[0]: (r[1], r[2]) for r in found}
                stored.extend(by_id[row[0]] for row in rows)
        return stored

    async def update_message(self, params: tuple[Any, ...]) -> Message | None:
        row = await self._fetchrow(_UPDATE_MESSAGE, *params)
        return message_from_row(row, _as_is) if row else None

    async def get_message(self, message_id: str) -> Message | None:
        row = await self._fetchrow(_GET_MESSAGE, message_id)
        return message_from_row(row, _as_is) if row else None

    async def find_by_request_id(self, conversation_id: str, request_id: str) -> Message | None:
        row = await self._fetchrow(_BY_REQUEST_ID, conversation_id, request_id)
        return message_from_row(row, _as_is) if row else None

    async def last_message(self, conversation_id: str) -> Message | None:
        row = await self._fetchrow(_NEWEST, conversation_id, 1)
        return message_from_row(row, _as_is) if row else None

    async def list_messages(
        self, conversation_id: str, limit: int, before: int | None, since: datetime | None
    ) -> list[Message]:
        if since is not None:
            bound = before if before is not None else _NO_SEQ
            rows = await self._fetch(_SINCE, conversation_id, since, bound, limit)
        elif before is not None:
            rows = await self._fetch(_NEWEST_BEFORE, conversation_id, before, limit)
        else:
            rows = await self._fetch(_NEWEST, conversation_id, limit)
        return [message_from_row(r, _as_is) for r in rows]

    async def search_messages(self, user_id: str, pattern: str, limit: int) -> list[Message]:
        rows = await self._fetch(_SEARCH, user_id, pattern, limit)
        return [message_from_row(r, _as_is) for r in rows]

    async def streaming_replies(self, created_before: datetime) -> list[str]:
        return [r[0] for r in await self._fetch(_STREAMING_BEFORE, created_before)]

    async def mark_interrupted(self, message_ids: Collection[str] | None, now: datetime) -> int:
        if message_ids is None:
            status = await self._execute(_MARK_ALL, now)
        else:
            status = await self._execute(_MARK_THESE, now, sorted(set(message_ids)))
        return int(status.rpartition(" ")[2])

    # -- users ---------------------------------------------------------------------

    async def insert_user(self, row: tuple[Any, ...]) -> None:
        await self._execute(_INSERT_USER, *row)

    async def get_user(self, user_id: str) -> User | None:
        row = await self._fetchrow(_GET_USER, user_id)
        return user_from_row(row, _as_is) if row else None

    async def get_user_by_name(self, name: str) -> User | None:
        row = await self._fetchrow(_GET_USER_BY_NAME, name)
        return user_from_row(row, _as_is) if row else None

    async def list_users(self) -> list[User]:
        return [user_from_row(r, _as_is) for r in await self._fetch(_LIST_USERS)]

    async def add_key(self, row: tuple[Any, ...]) -> bool:
        status = await self._execute(_INSERT_CREDENTIAL, *row)
        return status.rpartition(" ")[2] == "1"

    async def user_for_key(self, key_hash: str, kind: str, now: datetime) -> User | None:
        row = await self._fetchrow(_USER_FOR_KEY, key_hash, kind, now)
        return user_from_row(row, _as_is) if row else None

    async def revoke_key(self, key_hash: str) -> None:
        await self._execute(_REVOKE_KEY, key_hash)

    async def delete_user(self, user_id: str) -> None:
        await self._in_transaction(_DELETE_USER, user_id)


# Errors after which a connection's state is unknown.
_BROKEN = (asyncpg.InterfaceError, asyncpg.InternalClientError, OSError)


def _unsent(exc: StoreError, sql: str) -> bool:
    """Whether the call failed on a dead connection in a way that is safe to repeat.

    asyncpg refuses to start a statement on a connection whose server has gone
    (``InternalClientError``) before sending anything; a connection that closed
    mid-call may have run the statement, which only a read may repeat.
    """
    cause = exc.__cause__
    if isinstance(cause, asyncpg.InternalClientError):
        return True
    return isinstance(cause, asyncpg.ConnectionDoesNotExistError) and sql.startswith("SELECT")


def _translated(exc: Exception) -> Exception:
    """Our error for a driver's (anything else is returned unchanged, to be re-raised)."""
    if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        return Conflict("a row with this key already exists")
    if isinstance(exc, (asyncpg.PostgresError, TimeoutError, *_BROKEN)):
        log.warning("postgres store call failed: %s", exc)
        return StoreError("the history store is unavailable")
    return exc


def _arrays(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    """The rows' columns, one array each, skipping ``conversation_id`` (the same for all)."""
    return [list(column) for n, column in enumerate(zip(*rows, strict=True)) if n != 1]


_update_sql: dict[tuple[str, ...], str] = {}


def _update_conversation_sql(names: tuple[str, ...]) -> str:
    """The one statement that sets ``names`` and moves ``updated_at`` forward."""
    sql = _update_sql.get(names)
    if sql is None:
        numbers = itertools.count(1)
        assignments = "".join(
            f"{name} = ${next(numbers)}{'::jsonb' if name == 'variables' else ''}, "
            for name in names
        )
        now, conversation = next(numbers), next(numbers)
        sql = _update_sql[names] = (
            f"UPDATE conversations SET {assignments}"
            f"updated_at = greatest(${now}::timestamptz, updated_at + interval '1 microsecond') "
            f"WHERE id = ${conversation} RETURNING {CONVERSATION_SELECT}"
        )
    return sql


_NO_SEQ = 2**31 - 1  # a "before" bound above every seq (the column is a 32-bit integer)

_INSERT_CONVERSATION = (
    "INSERT INTO conversations (id, user_id, title, persona, variables, model, summary, "
    "summary_seq, last_seq, created_at, updated_at) "
    "VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, $10, $11)"
)
_GET_CONVERSATION = f"SELECT {CONVERSATION_SELECT} FROM conversations WHERE id = $1"
_LIST_CONVERSATIONS = (
    f"SELECT {CONVERSATION_SELECT} FROM conversations WHERE user_id = $1 "
    "ORDER BY updated_at DESC, id DESC LIMIT $2"
)
_LIST_CONVERSATIONS_AFTER = (
    f"SELECT {CONVERSATION_SELECT} FROM conversations WHERE user_id = $1 "
    "AND (updated_at, id) < ($2, $3) ORDER BY updated_at DESC, id DESC LIMIT $4"
)
_DELETE_CONVERSATION = (
    "DELETE FROM messages WHERE conversation_id = $1",
    "DELETE FROM conversations WHERE id = $1",
)
_CLEAR_CONVERSATION = (
    "UPDATE conversations SET summary = '', summary_seq = 0 WHERE id = $1",
    "DELETE FROM messages WHERE conversation_id = $1",
)

# $1 conversation, $2 how many, $3 now, then one array per column. The row lock
# taken by the UPDATE orders concurrent appends: seqs follow commit order, and
# each message is at least a microsecond later than the one before.
_APPEND = f"""
WITH bumped AS (
    UPDATE conversations
    SET last_seq = last_seq + $2,
        updated_at = greatest($3::timestamptz, updated_at + interval '1 microsecond')
            + ($2 - 1) * interval '1 microsecond'
    WHERE id = $1
    RETURNING last_seq, updated_at
)
INSERT INTO messages ({MESSAGE_SELECT}, updated_at)
SELECT m.id, $1, bumped.last_seq - $2 + m.n, m.role, m.content, m.status, m.usage::jsonb,
       m.tool_calls::jsonb, m.tool_call_id, m.request_id, m.model, m.metadata::jsonb,
       bumped.updated_at - ($2 - m.n) * interval '1 microsecond',
       bumped.updated_at - ($2 - m.n) * interval '1 microsecond'
FROM bumped, unnest($4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[],
                    $10::text[], $11::text[], $12::text[], $13::text[])
     WITH ORDINALITY AS m(id, role, content, status, usage, tool_calls, tool_call_id,
                          request_id, model, metadata, n)
RETURNING id, seq, created_at
"""
# NULL keeps a column as it is (no field of update_message can be set to NULL).
_UPDATE_MESSAGE = (
    "UPDATE messages SET content = coalesce($1, content), status = coalesce($2, status), "
    "usage = coalesce($3::jsonb, usage), tool_calls = coalesce($4::jsonb, tool_calls), "
    "metadata = coalesce($5::jsonb, metadata), updated_at = $6 "
    f"WHERE id = $7 RETURNING {MESSAGE_SELECT}"
)
_GET_MESSAGE = f"SELECT {MESSAGE_SELECT} FROM messages WHERE id = $1"
_BY_REQUEST_ID = (
    f"SELECT {MESSAGE_SELECT} FROM messages WHERE conversation_id = $1 AND request_id = $2 "
    "ORDER BY seq LIMIT 1"
)
_NEWEST = (
    f"SELECT {MESSAGE_SELECT} FROM messages WHERE conversation_id = $1 ORDER BY seq DESC LIMIT $2"
)
_NEWEST_BEFORE = (
    f"SELECT {MESSAGE_SELECT} FROM messages WHERE conversation_id = $1 AND seq < $2 "
    "ORDER BY seq DESC LIMIT $3"
)
_SINCE = (
    f"SELECT {MESSAGE_SELECT} FROM messages WHERE conversation_id = $1 AND created_at >= $2 "
    "AND seq < $3 ORDER BY seq LIMIT $4"
)
# ILIKE folds every letter's case; served by the trigram index when there is one.
_SEARCH = (
    f"SELECT {MESSAGE_SELECT} FROM messages WHERE conversation_id IN "
    "(SELECT id FROM conversations WHERE user_id = $1) AND content ILIKE $2 ESCAPE '\\' "
    "ORDER BY created_at DESC, seq DESC, id DESC LIMIT $3"
)
_STREAMING_BEFORE = "SELECT id FROM messages WHERE status = 'streaming' AND created_at < $1"
_MARK_ALL = "UPDATE messages SET status = 'incomplete', updated_at = $1 WHERE status = 'streaming'"
_MARK_THESE = (
    "UPDATE messages SET status = 'incomplete', updated_at = $1 "
    "WHERE status = 'streaming' AND id = ANY($2::text[])"
)

_INSERT_USER = (
    "INSERT INTO users (id, name, is_admin, password_hash, created_at) VALUES ($1, $2, $3, $4, $5)"
)
_GET_USER = f"SELECT {USER_SELECT} FROM users WHERE id = $1"
_GET_USER_BY_NAME = f"SELECT {USER_SELECT} FROM users WHERE name = $1"
_LIST_USERS = f"SELECT {USER_SELECT} FROM users ORDER BY created_at, name"
_INSERT_CREDENTIAL = (
    "INSERT INTO credentials (key_hash, kind, user_id, created_at, expires_at, revoked) "
    "SELECT $1, $2, $3::varchar, $4::timestamptz, $5::timestamptz, $6::boolean "
    "WHERE EXISTS (SELECT 1 FROM users WHERE id = $3)"
)
_USER_FOR_KEY = (
    f"SELECT {USER_OF_KEY_SELECT} FROM credentials JOIN users ON users.id = credentials.user_id "
    "WHERE credentials.key_hash = $1 AND credentials.kind = $2 AND NOT credentials.revoked "
    "AND (credentials.expires_at IS NULL OR credentials.expires_at > $3)"
)
_REVOKE_KEY = "UPDATE credentials SET revoked = true WHERE key_hash = $1"
_DELETE_USER = (
    "DELETE FROM messages WHERE conversation_id IN "
    "(SELECT id FROM conversations WHERE user_id = $1)",
    "DELETE FROM conversations WHERE user_id = $1",
    "DELETE FROM credentials WHERE user_id = $1",
    "DELETE FROM users WHERE id = $1",
)
