"""The SQLite side of :class:`~daehwa.store.sql.SqlStore`: the SQL of each store operation.

Each operation is one call of
:class:`~daehwa.store.sqlite_threads.SqliteConnections`, a write in one
transaction. The short ones (a row by its key, a page, a turn's few rows) run
on the event loop's connection; those whose cost grows with the data (search,
deleting a conversation or a user, marking interrupted replies, a large
import) run in a thread. The SQL is fixed text, so ``sqlite3``'s statement
cache prepares each statement once per connection.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

import orjson

from daehwa.errors import NotFound
from daehwa.messages import Conversation, Message, User
from daehwa.store.paging import later_than
from daehwa.store.rows import (
    CONVERSATION_SELECT,
    MESSAGE_SELECT,
    USER_OF_KEY_SELECT,
    USER_SELECT,
    conversation_from_row,
    message_from_row,
    user_from_row,
)
from daehwa.store.sqlite_threads import SqliteConnections

# Messages appended in one call that still count as a short write (a turn writes two).
SHORT_ROWS = 16


def sql_time(moment: datetime) -> str:
    """A timestamp as SQLite keeps it: naive UTC text of fixed width (sorts in time order)."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def read_time(text: str) -> datetime:
    """An aware UTC datetime from :func:`sql_time`'s text."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


class SqliteDatabase(SqliteConnections):
    """The SQL of every store operation, on one SQLite file (or ``:memory:``)."""

    dialect = "sqlite"

    # -- conversations -------------------------------------------------------------

    async def insert_conversation(self, row: tuple[Any, ...]) -> None:
        await self.write(_execute, _INSERT_CONVERSATION, _times(row, 9, 10))

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        return await self.read(_conversation, _GET_CONVERSATION, (conversation_id,))

    async def list_conversations(
        self, user_id: str, limit: int, after: tuple[datetime, str] | None
    ) -> list[Conversation]:
        if after is None:
            return await self.read(_conversations, _LIST_CONVERSATIONS, (user_id, limit))
        params = (user_id, sql_time(after[0]), after[1], limit)
        return await self.read(_conversations, _LIST_CONVERSATIONS_AFTER, params)

    async def update_conversation(
        self, conversation_id: str, fields: dict[str, Any], now: datetime
    ) -> Conversation | None:
        return await self.write(_update_conversation, conversation_id, fields, now)

    async def delete_conversation(self, conversation_id: str) -> None:
        await self.write(_run_all, _DELETE_CONVERSATION, (conversation_id,), short=False)

    async def clear_conversation(self, conversation_id: str) -> None:
        await self.write(_run_all, _CLEAR_CONVERSATION, (conversation_id,), short=False)

    # -- messages --------------------------------------------------------------------

    async def append(
        self, conversation_id: str, rows: list[tuple[Any, ...]], now: datetime
    ) -> list[tuple[int, datetime]] | None:
        return await self.write(_append, conversation_id, rows, now, short=len(rows) <= SHORT_ROWS)

    async def append_grouped(
        self, groups: list[tuple[str, list[tuple[Any, ...]]]], now: datetime
    ) -> list[tuple[int, datetime]]:
        """Like :meth:`append` for messages of several conversations, in one transaction."""
        return await self.write(_append_grouped, groups, now, short=False)

    async def update_message(self, params: tuple[Any, ...]) -> Message | None:
        return await self.write(_message, _UPDATE_MESSAGE, _times(params, 5))

    async def get_message(self, message_id: str) -> Message | None:
        return await self.read(_message, _GET_MESSAGE, (message_id,))

    async def find_by_request_id(self, conversation_id: str, request_id: str) -> Message | None:
        return await self.read(_message, _BY_REQUEST_ID, (conversation_id, request_id))

    async def last_message(self, conversation_id: str) -> Message | None:
        return await self.read(_message, _NEWEST, (conversation_id, 1))

    async def list_messages(
        self, conversation_id: str, limit: int, before: int | None, since: datetime | None
    ) -> list[Message]:
        if since is not None:
            bound = before if before is not None else _NO_SEQ
            params = (conversation_id, sql_time(since), bound, limit)
            return await self.read(_messages, _SINCE, params)
        if before is not None:
            return await self.read(_messages, _NEWEST_BEFORE, (conversation_id, before, limit))
        return await self.read(_messages, _NEWEST, (conversation_id, limit))

    async def search_messages(self, user_id: str, pattern: str, limit: int) -> list[Message]:
        return await self.read(_messages, _SEARCH, (user_id, pattern, limit), short=False)

    async def streaming_replies(self, created_before: datetime) -> list[str]:
        params = (sql_time(created_before),)
        return await self.read(_column, _STREAMING_BEFORE, params, short=False)

    async def mark_interrupted(self, message_ids: Collection[str] | None, now: datetime) -> int:
        if message_ids is None:
            return await self.write(_count, _MARK_ALL, (sql_time(now),), short=False)
        ids = orjson.dumps(sorted(set(message_ids))).decode()
        return await self.write(_count, _MARK_THESE, (sql_time(now), ids), short=False)

    # -- users ---------------------------------------------------------------------

    async def insert_user(self, row: tuple[Any, ...]) -> None:
        await self.write(_execute, _INSERT_USER, _times(row, 4))

    async def get_user(self, user_id: str) -> User | None:
        return await self.read(_user, _GET_USER, (user_id,))

    async def get_user_by_name(self, name: str) -> User | None:
        return await self.read(_user, _GET_USER_BY_NAME, (name,))

    async def list_users(self) -> list[User]:
        return await self.read(_users, _LIST_USERS, (), short=False)

    async def add_key(self, row: tuple[Any, ...]) -> bool:
        return await self.write(_add_key, _times(row, 3, 4))

    async def user_for_key(self, key_hash: str, kind: str, now: datetime) -> User | None:
        return await self.read(_user, _USER_FOR_KEY, (key_hash, kind, sql_time(now)))

    async def revoke_key(self, key_hash: str) -> None:
        await self.write(_execute, _REVOKE_KEY, (key_hash,))

    async def delete_user(self, user_id: str) -> None:
        await self.write(_run_all, _DELETE_USER, (user_id,), short=False)


# -- what runs on a connection ---------------------------------------------------------
# Each function takes the connection first.

_NO_SEQ = 2**62  # a "before" bound above every seq


def _times(row: tuple[Any, ...], *positions: int) -> tuple[Any, ...]:
    """``row`` with the datetimes at ``positions`` in SQLite's text form."""
    values = list(row)
    for n in positions:
        if values[n] is not None:
            values[n] = sql_time(values[n])
    return tuple(values)


def _execute(connection: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> None:
    connection.execute(sql, params)


def _run_all(connection: sqlite3.Connection, statements: tuple[str, ...], params: Any) -> None:
    for sql in statements:
        connection.execute(sql, params)


def _count(connection: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> int:
    return connection.execute(sql, params).rowcount


def _column(connection: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> list[Any]:
    return [row[0] for row in connection.execute(sql, params)]


def _conversation(
    connection: sqlite3.Connection, sql: str, params: tuple[Any, ...]
) -> Conversation | None:
    row = connection.execute(sql, params).fetchone()
    return conversation_from_row(row, read_time) if row else None


def _conversations(
    connection: sqlite3.Connection, sql: str, params: tuple[Any, ...]
) -> list[Conversation]:
    return [conversation_from_row(r, read_time) for r in connection.execute(sql, params)]


def _message(connection: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> Message | None:
    row = connection.execute(sql, params).fetchone()
    return message_from_row(row, read_time) if row else None


def _messages(connection: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> list[Message]:
    return [message_from_row(r, read_time) for r in connection.execute(sql, params)]


def _user(connection: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> User | None:
    row = connection.execute(sql, params).fetchone()
    return user_from_row(row, read_time) if row else None


def _users(connection: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> list[User]:
    return [user_from_row(r, read_time) for r in connection.execute(sql, params)]


def _update_conversation(
    connection: sqlite3.Connection, conversation_id: str, fields: dict[str, Any], now: datetime
) -> Conversation | None:
    """The changed conversation, or ``None`` if it is missing."""
    found = connection.execute(_CONVERSATION_TIME, (conversation_id,)).fetchone()
    if found is None:
        return None
    updated = later_than(now, read_time(found[0]))
    names = sorted(fields)
    assignments = "".join(f"{name} = ?, " for name in names)
    row = connection.execute(
        f"UPDATE conversations SET {assignments}updated_at = ? WHERE id = ? "
        f"RETURNING {CONVERSATION_SELECT}",
        (*(fields[n] for n in names), sql_time(updated), conversation_id),
    ).fetchone()
    return conversation_from_row(row, read_time)


def _append(
    connection: sqlite3.Connection, conversation_id: str, rows: list[tuple[Any, ...]], now: datetime
) -> list[tuple[int, datetime]] | None:
    """Insert ``rows`` (``MESSAGE_COLUMNS`` without seq and times) with the next seqs."""
    bumped = connection.execute(_BUMP_SEQ, (len(rows), conversation_id)).fetchone()
    if bumped is None:
        return None
    last_seq, previous = bumped[0], read_time(bumped[1])
    stored: list[tuple[int, datetime]] = []
    seq = last_seq - len(rows)
    for row in rows:
        seq += 1
        previous = later_than(now, previous)
        text = sql_time(previous)
        connection.execute(_INSERT_MESSAGE, (*row[:2], seq, *row[2:], text, text))
        stored.append((seq, previous))
    connection.execute(_SET_UPDATED_AT, (sql_time(previous), conversation_id))
    return stored


def _append_grouped(
    connection: sqlite3.Connection, groups: list[tuple[str, list[tuple[Any, ...]]]], now: datetime
) -> list[tuple[int, datetime]]:
    stored: list[tuple[int, datetime]] = []
    for conversation_id, rows in groups:
        appended = _append(connection, conversation_id, rows, now)
        if appended is None:
            raise NotFound(f"conversation {conversation_id} not found")
        stored.extend(appended)
    return stored


def _add_key(connection: sqlite3.Connection, row: tuple[Any, ...]) -> bool:
    if connection.execute(_USER_EXISTS, (row[2],)).fetchone() is None:
        return False
    connection.execute(_INSERT_CREDENTIAL, row)
    return True


# -- the SQL ---------------------------------------------------------------------------

_INSERT_CONVERSATION = (
    "INSERT INTO conversations (id, user_id, title, persona, variables, model, summary, "
    "summary_seq, last_seq, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_GET_CONVERSATION = f"SELECT {CONVERSATION_SELECT} FROM conversations WHERE id = ?"
_CONVERSATION_TIME = "SELECT updated_at FROM conversations WHERE id = ?"
_LIST_CONVERSATIONS = (
    f"SELECT {CONVERSATION_SELECT} FROM conversations WHERE user_id = ? "
    "ORDER BY updated_at DESC, id DESC LIMIT ?"
)
_LIST_CONVERSATIONS_AFTER = (
    f"SELECT {CONVERSATION_SELECT} FROM conversations "
    "WHERE user_id = ? AND (updated_at, id) < (?, ?) "
    "ORDER BY updated_at DESC, id DESC LIMIT ?"
)
_DELETE_CONVERSATION = (
    "DELETE FROM messages WHERE conversation_id = ?",
    "DELETE FROM conversations WHERE id = ?",
)
_CLEAR_CONVERSATION = (
    "UPDATE conversations SET summary = '', summary_seq = 0 WHERE id = ?",
    "DELETE FROM messages WHERE conversation_id = ?",
)

_BUMP_SEQ = (
    "UPDATE conversations SET last_seq = last_seq + ? WHERE id = ? RETURNING last_seq, updated_at"
)
_SET_UPDATED_AT = "UPDATE conversations SET updated_at = ? WHERE id = ?"
_INSERT_MESSAGE = (
    f"INSERT INTO messages ({MESSAGE_SELECT}, updated_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# NULL keeps a column as it is (no field of update_message can be set to NULL).
_UPDATE_MESSAGE = (
    "UPDATE messages SET content = coalesce(?, content), status = coalesce(?, status), "
    "usage = coalesce(?, usage), tool_calls = coalesce(?, tool_calls), "
    "metadata = coalesce(?, metadata), updated_at = ? "
    f"WHERE id = ? RETURNING {MESSAGE_SELECT}"
)
_GET_MESSAGE = f"SELECT {MESSAGE_SELECT} FROM messages WHERE id = ?"
_BY_REQUEST_ID = (
    f"SELECT {MESSAGE_SELECT} FROM messages WHERE conversation_id = ? AND request_id = ? "
    "ORDER BY seq LIMIT 1"
)
# The newest first; the caller turns the page around.
_NEWEST = (
    f"SELECT {MESSAGE_SELECT} FROM messages WHERE conversation_id = ? ORDER BY seq DESC LIMIT ?"
)
_NEWEST_BEFORE = (
    f"SELECT {MESSAGE_SELECT} FROM messages WHERE conversation_id = ? AND seq < ? "
    "ORDER BY seq DESC LIMIT ?"
)
_SINCE = (
    f"SELECT {MESSAGE_SELECT} FROM messages WHERE conversation_id = ? AND created_at >= ? "
    "AND seq < ? ORDER BY seq LIMIT ?"
)
# Case is folded by LIKE itself (ASCII only in SQLite), as the contract asks.
_SEARCH = (
    f"SELECT {MESSAGE_SELECT} FROM messages WHERE conversation_id IN "
    "(SELECT id FROM conversations WHERE user_id = ?) AND content LIKE ? ESCAPE '\\' "
    "ORDER BY created_at DESC, seq DESC, id DESC LIMIT ?"
)
# SQLite's statistics call the status index unselective (nearly every message
# is "complete"), so its planner would rather skip-scan another index; the few
# streaming rows are exactly what the status index finds at once.
_STREAMING_BEFORE = (
    "SELECT id FROM messages INDEXED BY ix_messages_status "
    "WHERE status = 'streaming' AND created_at < ?"
)
_MARK_ALL = (
    "UPDATE messages INDEXED BY ix_messages_status SET status = 'incomplete', updated_at = ? "
    "WHERE status = 'streaming'"
)
_MARK_THESE = (
    "UPDATE messages SET status = 'incomplete', updated_at = ? WHERE status = 'streaming' "
    "AND id IN (SELECT value FROM json_each(?))"
)

_INSERT_USER = (
    "INSERT INTO users (id, name, is_admin, password_hash, created_at) VALUES (?, ?, ?, ?, ?)"
)
_GET_USER = f"SELECT {USER_SELECT} FROM users WHERE id = ?"
_GET_USER_BY_NAME = f"SELECT {USER_SELECT} FROM users WHERE name = ?"
_LIST_USERS = f"SELECT {USER_SELECT} FROM users ORDER BY created_at, name"
_USER_EXISTS = "SELECT 1 FROM users WHERE id = ?"
_INSERT_CREDENTIAL = (
    "INSERT INTO credentials (key_hash, kind, user_id, created_at, expires_at, revoked) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
_USER_FOR_KEY = (
    f"SELECT {USER_OF_KEY_SELECT} FROM credentials JOIN users ON users.id = credentials.user_id "
    "WHERE credentials.key_hash = ? AND credentials.kind = ? AND credentials.revoked = 0 "
    "AND (credentials.expires_at IS NULL OR credentials.expires_at > ?)"
)
_REVOKE_KEY = "UPDATE credentials SET revoked = 1 WHERE key_hash = ?"
_DELETE_USER = (
    "DELETE FROM messages WHERE conversation_id IN "
    "(SELECT id FROM conversations WHERE user_id = ?1)",
    "DELETE FROM conversations WHERE user_id = ?1",
    "DELETE FROM credentials WHERE user_id = ?1",
    "DELETE FROM users WHERE id = ?1",
)
