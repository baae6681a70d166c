"""A reply's state while it is generated, and its events rebuilt from the store."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

from daehwa.errors import DaehwaError, ProviderError
from daehwa.events import Delta, Done, Envelope, Error, Event, Meta
from daehwa.guard import StreamFilter
from daehwa.messages import Message, MessageStatus, Role, ToolCall, Usage

log = logging.getLogger(__name__)


def model_order(messages: Sequence[Message]) -> list[Message]:
    """Messages in the order a model expects around tool calls.

    A stored reply that called tools holds its calls and its final text in one
    message, with the tool results stored after it. A model must see the call,
    then the results, then the text. Results answering no known call are dropped.
    """
    ordered: list[Message] = []
    index = 0
    while index < len(messages):
        message = messages[index]
        index += 1
        if message.role is Role.TOOL:
            continue  # a result whose call is not in view
        if message.role is not Role.ASSISTANT or not message.tool_calls:
            ordered.append(message)
            continue
        call_ids = {call.id for call in message.tool_calls}
        ordered.append(replace(message, content=""))
        while index < len(messages) and messages[index].role is Role.TOOL:
            if messages[index].tool_call_id in call_ids:
                ordered.append(messages[index])
            index += 1
        if message.content:
            ordered.append(replace(message, tool_calls=None))
    return ordered


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

    __slots__ = ("answered", "failure", "filter", "finish", "status", "text", "tool_calls", "usage")

    def __init__(self) -> None:
        self.text = ReplyText()
        self.status = MessageStatus.FAILED
        self.finish: str | None = None
        self.usage: Usage | None = None
        self.failure: Error | None = None
        # Whether the model has started answering (text, reasoning or a tool call).
        self.answered = False
        # The output filter of this reply, while it streams.
        self.filter: StreamFilter | None = None
        self.tool_calls: list[ToolCall] = []

    def add_usage(self, usage: Usage) -> None:
        """Add one model call's usage (a reply with tool rounds makes several calls)."""
        if self.usage is None:
            self.usage = Usage(usage.prompt_tokens, usage.completion_tokens)
        else:
            self.usage.prompt_tokens += usage.prompt_tokens
            self.usage.completion_tokens += usage.completion_tokens

    def terminal_event(self, message_id: str) -> Error | Done:
        """The last event of the reply: ``done`` with its status, or the error."""
        if self.failure is not None:
            return self.failure
        usage = self.usage or Usage()
        return Done(message_id, self.status.value, self.finish, usage.to_dict())

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
