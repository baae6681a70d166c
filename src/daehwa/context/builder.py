"""Assembles what the model receives for the next turn.

This is the seam the turn calls: system prompt + history -> model input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from daehwa.config import ModelSettings
from daehwa.messages import Conversation, Message, MessageStatus, Role

# Replies with these statuses carry no text worth showing the model again.
_SKIPPED = frozenset({MessageStatus.BLOCKED, MessageStatus.FAILED, MessageStatus.STREAMING})


@dataclass(slots=True)
class BuiltContext:
    """The model input for one turn, with what was done to fit it."""

    messages: list[Message]
    input_tokens: int
    max_new_tokens: int
    limit: int
    steps: dict[str, Any] = field(default_factory=dict)


class ContextBuilder:
    """Builds the model input from a conversation's history."""

    async def build(
        self,
        *,
        system_prompt: str,
        conversation: Conversation,
        history: Sequence[Message],
        model: ModelSettings,
    ) -> BuiltContext:
        messages = [Message(Role.SYSTEM, system_prompt)] if system_prompt else []
        messages.extend(m for m in history if m.status not in _SKIPPED)
        return BuiltContext(
            messages=messages,
            input_tokens=sum(len(m.content) for m in messages),
            max_new_tokens=model.max_new_tokens,
            limit=model.context_window,
        )
