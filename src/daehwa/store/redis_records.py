"""What :class:`~daehwa.store.redis.RedisStore` keeps, to and from Python values.

Conversations, users and credentials are hashes whose values are JSON (ids,
flags and times raw). A message is one JSON record; a new one is sent without
``status``, ``seq`` and ``created_us``, which the append script puts first (see
:mod:`daehwa.store.redis_scripts`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson

from daehwa.messages import Conversation, Message, MessageStatus, Role, ToolCall, Usage, User
from daehwa.store.paging import from_micros


def json_text(value: Any) -> str:
    """``value`` as JSON text."""
    return orjson.dumps(value).decode()


def json_pairs(values: dict[str, Any]) -> list[str]:
    """Field/value pairs with JSON-encoded values."""
    return [item for name, value in values.items() for item in (name, json_text(value))]


def field_map(flat: list[str]) -> dict[str, str]:
    """A hash's fields from HGETALL's flat name, value, name, value … list."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def conversation_from_fields(flat: list[str]) -> Conversation:
    """A conversation from its hash (HGETALL)."""
    data = field_map(flat)
    return Conversation(
        id=data["id"],
        user_id=data["user_id"],
        title=orjson.loads(data["title"]),
        persona=orjson.loads(data["persona"]),
        variables=orjson.loads(data["variables"]),
        model=orjson.loads(data["model"]),
        summary=orjson.loads(data["summary"]),
        summary_seq=int(orjson.loads(data["summary_seq"])),
        created_at=from_micros(int(data["created_us"])),
        updated_at=from_micros(int(data["updated_us"])),
    )


def record_body(message: Message, mid: str) -> bytes:
    """A new message's record without the status, seq and time the script puts first."""
    return orjson.dumps(
        {
            "conversation_id": message.conversation_id,
            "id": mid,
            "role": Role(message.role).value,
            "content": message.content,
            "usage": message.usage.to_dict() if message.usage else None,
            "tool_calls": (
                [c.to_dict() for c in message.tool_calls]
                if message.tool_calls is not None
                else None
            ),
            "tool_call_id": message.tool_call_id,
            "request_id": message.request_id,
            "model": message.model,
            "metadata": message.metadata or {},
        }
    )


def stored_message(body: bytes, status: str, seq: int | str, created_us: int | str) -> Message:
    """The stored message, decoded afresh so it shares nothing with the caller's."""
    data = orjson.loads(body)
    data["status"], data["seq"], data["created_us"] = status, int(seq), int(created_us)
    return message_from_record(data)


_ROLES = {role.value: role for role in Role}
_STATUSES = {status.value: status for status in MessageStatus}
# For from_micros by multiplication: half the cost of a timedelta built from keywords.
_EPOCH = from_micros(0)
_MICROSECOND = timedelta(microseconds=1)


def message_from_record(data: dict[str, Any]) -> Message:
    """A message from its decoded record."""
    tool_calls = data["tool_calls"]
    usage = data["usage"]
    # Positional (half the cost of keywords, paid 50 times a page), in the order of
    # Message's fields; test_redis checks that each field comes back as stored.
    return Message(
        _ROLES[data["role"]],
        data["content"],
        data["id"],
        data["conversation_id"],
        _STATUSES[data["status"]],
        data["seq"],
        _EPOCH + _MICROSECOND * data["created_us"],
        Usage.from_dict(usage) if usage else None,
        [ToolCall.from_dict(c) for c in tool_calls] if tool_calls is not None else None,
        data["tool_call_id"],
        data["request_id"],
        data["model"],
        data["metadata"],
    )


def user_from_fields(flat: list[str]) -> User:
    """A user from its hash (HGETALL)."""
    data = field_map(flat)
    return User(
        id=data["id"],
        name=data["name"],
        is_admin=data["is_admin"] == "1",
        password_hash=orjson.loads(data["password_hash"]),
        created_at=from_micros(int(data["created_us"])),
    )
