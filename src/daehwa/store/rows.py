"""Rows of the SQL store's tables as the drivers return them, and back to messages.

The column lists and converters shared by the SQLite and PostgreSQL sides of
:class:`~daehwa.store.sql.SqlStore`. Plain Python: an SQLite server reads and
writes without importing SQLAlchemy (~14 MB at rest), which keeps the schema
(``tables.py``) for migrations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import orjson

from daehwa.messages import (
    Conversation,
    Message,
    MessageStatus,
    Role,
    ToolCall,
    Usage,
    User,
)

# The columns the store reads, in the order the converters below expect. Each
# query names them, so a column added by a later migration changes no result.
CONVERSATION_COLUMNS = (
    "id",
    "user_id",
    "title",
    "persona",
    "variables",
    "model",
    "summary",
    "summary_seq",
    "created_at",
    "updated_at",
)
MESSAGE_COLUMNS = (
    "id",
    "conversation_id",
    "seq",
    "role",
    "content",
    "status",
    "usage",
    "tool_calls",
    "tool_call_id",
    "request_id",
    "model",
    "metadata",
    "created_at",
)
USER_COLUMNS = ("id", "name", "is_admin", "password_hash", "created_at")

# The same columns as one select list, as the SQL of every query names them.
CONVERSATION_SELECT = ", ".join(CONVERSATION_COLUMNS)
MESSAGE_SELECT = ", ".join(MESSAGE_COLUMNS)
USER_SELECT = ", ".join(USER_COLUMNS)
# A user's columns in a query that joins another table.
USER_OF_KEY_SELECT = ", ".join(f"users.{c}" for c in USER_COLUMNS)

# How a driver's value of a timestamp column becomes an aware UTC datetime.
TimeReader = Callable[[Any], datetime]


def _json_or_none(text: str | None) -> Any:
    return orjson.loads(text) if text is not None else None


def conversation_from_row(row: Sequence[Any], when: TimeReader) -> Conversation:
    """A :class:`Conversation` from a row of ``CONVERSATION_COLUMNS`` (JSON as text)."""
    return Conversation(
        id=row[0],
        user_id=row[1],
        title=row[2],
        persona=row[3],
        variables=dict(_json_or_none(row[4]) or {}),
        model=row[5],
        summary=row[6],
        summary_seq=row[7],
        created_at=when(row[8]),
        updated_at=when(row[9]),
    )


_ROLES = {role.value: role for role in Role}
_STATUSES = {status.value: status for status in MessageStatus}


def message_from_row(row: Sequence[Any], when: TimeReader) -> Message:
    """A :class:`Message` from a row of ``MESSAGE_COLUMNS`` (JSON as text)."""
    # A page builds up to hundreds of these: plain lookups instead of enum calls,
    # no JSON parse for the usual empty values, positional arguments in the
    # order of Message's fields.
    usage, tool_calls, metadata = row[6], row[7], row[11]
    return Message(
        _ROLES[row[3]],
        row[4],
        row[0],
        row[1],
        _STATUSES[row[5]],
        row[2],
        when(row[12]),
        Usage.from_dict(orjson.loads(usage)) if usage is not None else None,
        [ToolCall.from_dict(c) for c in orjson.loads(tool_calls)]
        if tool_calls is not None
        else None,
        row[8],
        row[9],
        row[10],
        {} if metadata is None or metadata == "{}" else dict(orjson.loads(metadata) or {}),
    )


def user_from_row(row: Sequence[Any], when: TimeReader) -> User:
    """A :class:`User` from a row of ``USER_COLUMNS``."""
    return User(
        id=row[0],
        name=row[1],
        is_admin=bool(row[2]),
        password_hash=row[3],
        created_at=when(row[4]),
    )
