"""Plain counters of what the service did, read by /metrics at scrape time."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(slots=True)
class TurnStats:
    """Counts kept by :class:`~daehwa.chat.service.ChatService` (no locks: one event loop)."""

    replies: Counter[tuple[str, str]] = field(default_factory=Counter)  # (model, status)
    reply_tokens: Counter[str] = field(default_factory=Counter)  # model
    first_token_seconds_sum: float = 0.0
    first_token_count: int = 0
    blocked_inputs: int = 0

    def reply_finished(self, model: str, status: str, completion_tokens: int) -> None:
        self.replies[(model, status)] += 1
        self.reply_tokens[model] += completion_tokens

    def first_token(self, seconds: float) -> None:
        self.first_token_seconds_sum += seconds
        self.first_token_count += 1
