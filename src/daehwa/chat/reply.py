"""A reply's state while it is generated, and its events rebuilt from the store."""

from __future__ import annotations

import logging

from daehwa.errors import DaehwaError, ProviderError
from daehwa.events import Delta, Done, Envelope, Error, Event, Meta
from daehwa.messages import Message, MessageStatus, Usage

log = logging.getLogger(__name__)


def stored_events(message: Message) -> list[Envelope]:
    """The events of a finished reply, rebuilt from the stored message."""
    events: list[Event] = [
        Meta(
            message.conversation_id,
            str(message.metadata.get("reply_to", "")),
            message.id,
            message.model or "",
            message.request_id,
        )
    ]
    if message.content:
        events.append(Delta(message.content))
    if message.status is MessageStatus.STREAMING:
        events.append(
            Error(
                "reply_unavailable",
                "the reply is still being generated or was interrupted",
                message.id,
            )
        )
    elif message.status in (MessageStatus.FAILED, MessageStatus.INCOMPLETE):
        reason = str(message.metadata.get("error", "the reply could not be completed"))
        events.append(Error(f"reply_{message.status.value}", reason, message.id))
    else:
        usage = message.usage or Usage()
        finish = message.metadata.get("finish_reason")
        events.append(
            Done(message.id, message.status.value, str(finish) if finish else None, usage.to_dict())
        )
    return [Envelope.of(seq, event) for seq, event in enumerate(events, start=1)]


class Outcome:
    """How a reply ended: its text, status, finish reason, usage and error event."""

    __slots__ = ("failure", "finish", "status", "text", "usage")

    def __init__(self) -> None:
        self.text = ReplyText()
        self.status = MessageStatus.FAILED
        self.finish: str | None = None
        self.usage: Usage | None = None
        self.failure: Error | None = None

    def cancelled(self, stop_requested: bool) -> None:
        self.status = MessageStatus.STOPPED if stop_requested else MessageStatus.INCOMPLETE
        self.finish = "stop_requested" if stop_requested else "interrupted"

    def fail(self, exc: Exception, message_id: str) -> None:
        self.status = MessageStatus.INCOMPLETE if self.text.started else MessageStatus.FAILED
        if isinstance(exc, DaehwaError):
            if not isinstance(exc, ProviderError):
                log.warning("reply %s ended with %s: %s", message_id, exc.code, exc.message)
            self.failure = Error(exc.code, exc.message, message_id)
        else:
            log.error("reply %s failed", message_id, exc_info=exc)
            self.failure = Error("internal_error", "the reply could not be completed", message_id)


class ReplyText:
    """The reply's text as it grows (joined lazily)."""

    __slots__ = ("_parts", "started")

    def __init__(self) -> None:
        self._parts: list[str] = []
        self.started = False

    def add(self, text: str) -> None:
        self._parts.append(text)
        self.started = True

    @property
    def value(self) -> str:
        if len(self._parts) > 1:
            self._parts = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""
