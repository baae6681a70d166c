"""The SQL schema of :class:`~daehwa.store.sql.SqlStore` (SQLite and PostgreSQL).

The migrations in ``store/migrations`` build exactly this; a test compares the
two. A change here needs a new migration.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator, TypeEngine

# The columns and row converters live in rows.py, without SQLAlchemy; kept importable here.
from daehwa.store.rows import (
    CONVERSATION_COLUMNS,
    MESSAGE_COLUMNS,
    USER_COLUMNS,
    TimeReader,
    conversation_from_row,
    message_from_row,
    user_from_row,
)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that always comes back timezone-aware, in UTC.

    PostgreSQL keeps ``timestamptz``; SQLite keeps naive UTC text, whose
    fixed-width format also sorts in time order.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; pass an aware one")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _json() -> TypeEngine[Any]:
    # JSONB on PostgreSQL (compact, indexable); JSON text on SQLite. A Python
    # None is stored as SQL NULL, not the JSON literal null.
    return JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

users = Table(
    "users",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("is_admin", Boolean, nullable=False),
    Column("password_hash", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
)

credentials = Table(
    "credentials",
    metadata,
    Column("key_hash", String(128), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column(
        "user_id",
        String(64),
        ForeignKey("users.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=True),
    Column("revoked", Boolean, nullable=False),
)

# user_id is deliberately not a foreign key: a conversation may be created for
# a user id that no users row describes (an external identity), and
# delete_user removes conversations by user_id.
conversations = Table(
    "conversations",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("user_id", String(64), nullable=False),
    Column("title", Text, nullable=False),
    Column("persona", String(200), nullable=True),
    Column("variables", _json(), nullable=False),
    Column("model", String(200), nullable=True),
    Column("summary", Text, nullable=False),
    Column("summary_seq", Integer, nullable=False),
    # The seq of the newest message ever appended; appends bump it atomically.
    Column("last_seq", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # A user's conversations newest first (the index is scanned backwards).
    Index(None, "user_id", "updated_at", "id"),
)

messages = Table(
    "messages",
    metadata,
    Column("id", String(64), primary_key=True),
    Column(
        "conversation_id",
        String(64),
        ForeignKey("conversations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("seq", Integer, nullable=False),
    Column("role", String(16), nullable=False),
    Column("content", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("usage", _json(), nullable=True),
    Column("tool_calls", _json(), nullable=True),
    Column("tool_call_id", String(200), nullable=True),
    Column("request_id", String(200), nullable=True),
    Column("model", String(200), nullable=True),
    Column("metadata", _json(), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # Pages by seq; also makes a duplicate seq impossible.
    UniqueConstraint("conversation_id", "seq"),
    Index(None, "conversation_id", "request_id"),
    # "since" queries.
    Index(None, "conversation_id", "created_at"),
    Index(None, "status"),
)

# The trigram index for search, made by the migration only on PostgreSQL and
# only when the pg_trgm extension can be created; not part of ``metadata``.
TRIGRAM_INDEX = "ix_messages_content_trgm"


__all__ = [
    "CONVERSATION_COLUMNS",
    "MESSAGE_COLUMNS",
    "TRIGRAM_INDEX",
    "USER_COLUMNS",
    "TimeReader",
    "UTCDateTime",
    "conversation_from_row",
    "conversations",
    "credentials",
    "message_from_row",
    "messages",
    "metadata",
    "user_from_row",
    "users",
]
