"""Plain domain types: users, conversations, messages. No I/O here."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


def new_id() -> str:
    """A new random identifier (32 hex characters)."""
    return uuid.uuid4().hex


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


# Metadata the server keeps for itself (cached token counts, recall embeddings).
INTERNAL_METADATA = frozenset({"tokens", "embedding"})


class Role(StrEnum):
    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"
    TOOL = "tool"


class MessageStatus(StrEnum):
    COMPLETE = "complete"
    STREAMING = "streaming"
    INCOMPLETE = "incomplete"
    STOPPED = "stopped"
    FALLBACK = "fallback"
    BLOCKED = "blocked"
    FAILED = "failed"


@dataclass(slots=True)
class Usage:
    """Token usage of one model call."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Usage | None:
        if not data:
            return None
        return cls(int(data.get("prompt_tokens", 0)), int(data.get("completion_tokens", 0)))


@dataclass(slots=True)
class ToolCall:
    """A call the model asked for; ``arguments`` is already parsed JSON."""

    id: str
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "arguments": self.arguments}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ToolCall:
        return cls(str(data["id"]), str(data["name"]), dict(data.get("arguments") or {}))


@dataclass(slots=True)
class Message:
    """One message of a conversation, as stored and as sent to a model.

    A message built only for a model call (a system prompt, a summary) has an
    empty ``id`` and ``seq`` 0.
    """

    role: Role
    content: str
    id: str = ""
    conversation_id: str = ""
    status: MessageStatus = MessageStatus.COMPLETE
    seq: int = 0
    created_at: datetime = field(default_factory=utcnow)
    usage: Usage | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    request_id: str | None = None
    model: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The public JSON shape of a message (API.md)."""
        data: dict[str, Any] = {
            "id": self.id,
            "conversation_id": self.conversation_id,
            "seq": self.seq,
            "role": self.role.value,
            "content": self.content,
            "status": self.status.value,
            "created_at": self.created_at.isoformat(),
            "usage": self.usage.to_dict() if self.usage else None,
            "tool_calls": [c.to_dict() for c in self.tool_calls] if self.tool_calls else None,
            "request_id": self.request_id,
            "model": self.model,
        }
        if self.tool_call_id is not None:
            data["tool_call_id"] = self.tool_call_id
        public = {k: v for k, v in self.metadata.items() if k not in INTERNAL_METADATA}
        if public:
            data["metadata"] = public
        return data


@dataclass(slots=True)
class Conversation:
    """A conversation owned by one user."""

    id: str
    user_id: str
    title: str = ""
    persona: str | None = None
    variables: dict[str, str] = field(default_factory=dict)
    model: str | None = None
    summary: str = ""
    summary_seq: int = 0
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "persona": self.persona,
            "variables": self.variables,
            "model": self.model,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass(slots=True)
class User:
    """A user of the server. API keys are stored only as hashes."""

    id: str
    name: str
    is_admin: bool = False
    password_hash: str | None = None
    created_at: datetime = field(default_factory=utcnow)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "is_admin": self.is_admin,
            "created_at": self.created_at.isoformat(),
        }
