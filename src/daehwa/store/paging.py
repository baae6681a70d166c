"""Rules every store shares: cursors, limits, clocks and which fields may change.

Keeping them in one place is what lets the contract suite run unchanged
against every store.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime, timedelta
from typing import Any

from daehwa.errors import InvalidInput

# Fields of a conversation that ``update_conversation`` accepts.
UPDATABLE_FIELDS = frozenset({"title", "summary", "summary_seq", "model", "variables", "persona"})

# Credential kinds (``add_key(kind=...)``).
KEY_KINDS = frozenset({"api", "session", "login"})

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TICK = timedelta(microseconds=1)


def to_micros(moment: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime (exact, no float)."""
    return (moment - _EPOCH) // _TICK


def from_micros(micros: int) -> datetime:
    """The aware UTC datetime ``micros`` microseconds after the Unix epoch."""
    return _EPOCH + timedelta(microseconds=micros)


def as_utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a naive value is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def later_than(now: datetime, previous: datetime) -> datetime:
    """``now``, or one microsecond after ``previous`` if the clock has not moved past it.

    Per conversation, every write time is strictly later than the last one, so
    ``created_at`` grows with ``seq`` and a ``since`` cursor never repeats or
    skips a message.
    """
    return max(as_utc(now), as_utc(previous) + _TICK)


def check_limit(limit: int) -> int:
    """Refuse a page size below 1."""
    if limit < 1:
        raise InvalidInput(f"limit must be at least 1, got {limit}", field="limit")
    return limit


def check_query(query: str) -> str:
    """Refuse an empty search text."""
    if not query.strip():
        raise InvalidInput("search text must not be empty", field="query")
    return query


def check_kind(kind: str) -> str:
    """Refuse an unknown credential kind."""
    if kind not in KEY_KINDS:
        raise InvalidInput(
            f"credential kind must be one of {', '.join(sorted(KEY_KINDS))}, got {kind!r}",
            field="kind",
        )
    return kind


def check_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """Refuse conversation fields that ``update_conversation`` may not change."""
    unknown = sorted(set(fields) - UPDATABLE_FIELDS)
    if unknown:
        raise InvalidInput(
            f"cannot update {', '.join(unknown)}; allowed: {', '.join(sorted(UPDATABLE_FIELDS))}",
            field=unknown[0],
        )
    if "summary_seq" in fields:
        fields["summary_seq"] = int(fields["summary_seq"])
    if "variables" in fields:
        fields["variables"] = dict(fields["variables"] or {})
    if "title" in fields:
        fields["title"] = str(fields["title"] or "")
    if "summary" in fields:
        fields["summary"] = str(fields["summary"] or "")
    return fields


def encode_cursor(updated_at: datetime, conversation_id: str) -> str:
    """The ``next`` cursor after a conversation in a newest-first listing."""
    raw = f"{to_micros(updated_at)}:{conversation_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    """``(updated_at in microseconds, conversation id)`` from :func:`encode_cursor`."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        micros, _, conversation_id = base64.urlsafe_b64decode(padded).decode().partition(":")
        if not conversation_id:
            raise ValueError("no id")
        return int(micros), conversation_id
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidInput(
            "invalid cursor; pass the 'next' value of a page", field="before"
        ) from exc


def is_before(updated_micros: int, conversation_id: str, cursor: tuple[int, str]) -> bool:
    """Whether a conversation comes after ``cursor`` in newest-first order."""
    return (updated_micros, conversation_id) < cursor
