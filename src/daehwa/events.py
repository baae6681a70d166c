"""Typed stream events shared by SSE, WebSocket and the terminal chat.

Each event has a ``type`` literal and a ``data()`` payload; the transports add
the per-reply sequence number (``seq``, from 1) and encode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

EventType = Literal["meta", "step", "delta", "sources", "suggestions", "done", "error"]


@dataclass(slots=True)
class Meta:
    """First event of a reply: who is answering what."""

    type: ClassVar[EventType] = "meta"
    conversation_id: str
    user_message_id: str
    message_id: str
    model: str
    request_id: str | None = None

    def data(self) -> dict[str, Any]:
        # By hand: dataclasses.asdict deep-copies each field, once per reply.
        return {
            "conversation_id": self.conversation_id,
            "user_message_id": self.user_message_id,
            "message_id": self.message_id,
            "model": self.model,
            "request_id": self.request_id,
        }


@dataclass(slots=True)
class Step:
    """Progress of answer generation (context, filter, generate, tool, ...)."""

    type: ClassVar[EventType] = "step"
    name: str
    detail: dict[str, Any] | str | None = None

    def data(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.detail is not None:
            out["detail"] = self.detail
        return out


@dataclass(slots=True)
class Delta:
    """A piece of the reply's text."""

    type: ClassVar[EventType] = "delta"
    text: str

    def data(self) -> dict[str, Any]:
        return {"text": self.text}


@dataclass(slots=True)
class Sources:
    """Citations or tool results."""

    type: ClassVar[EventType] = "sources"
    items: list[dict[str, Any]] = field(default_factory=list)

    def data(self) -> dict[str, Any]:
        return {"items": self.items}


@dataclass(slots=True)
class Suggestions:
    """Follow-up suggestions."""

    type: ClassVar[EventType] = "suggestions"
    items: list[dict[str, Any]] = field(default_factory=list)

    def data(self) -> dict[str, Any]:
        return {"items": self.items}


@dataclass(slots=True)
class Done:
    """Last event of a reply that reached a final status."""

    type: ClassVar[EventType] = "done"
    message_id: str
    status: str
    finish_reason: str | None
    usage: dict[str, int]

    def data(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "status": self.status,
            "finish_reason": self.finish_reason,
            "usage": dict(self.usage),
        }


@dataclass(slots=True)
class Error:
    """Last event of a reply that could not be completed."""

    type: ClassVar[EventType] = "error"
    code: str
    message: str
    message_id: str | None = None

    def data(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.message_id is not None:
            out["message_id"] = self.message_id
        return out


Event = Meta | Step | Delta | Sources | Suggestions | Done | Error

TERMINAL_TYPES: frozenset[str] = frozenset({"done", "error"})


@dataclass(slots=True, frozen=True)
class Envelope:
    """An event as logged and sent: its place in the reply (``seq``), type and payload."""

    seq: int
    type: str
    data: dict[str, Any]

    @classmethod
    def of(cls, seq: int, event: Event) -> Envelope:
        return cls(seq, event.type, event.data())

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_TYPES
