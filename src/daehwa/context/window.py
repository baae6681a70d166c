"""The sliding window, with CLOVA Studio's semantics.

History tokens A, the reply's maximum B, the model's limit X: when A + B > X the
oldest *whole* turns are dropped until A + B <= X, and not one more. Leading system
messages always stay. A turn is a user message with everything up to the next user
message (the reply, tool calls and their results), so a call and its results are
never split. If even the newest turn cannot fit, :class:`ContextOverflow` is raised.

Windowing uses prefix sums of cached per-message counts: the index is built in
O(n), extended per appended message, and each decision is a binary search.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field

from daehwa.context.tokens import TokenCounter, message_tokens, reply_overhead
from daehwa.errors import ContextOverflow
from daehwa.messages import Message, Role


@dataclass(slots=True)
class WindowResult:
    """What the window kept and dropped, and the token arithmetic (A, B, X)."""

    messages: list[Message]
    dropped: list[Message]
    dropped_turns: int
    input_tokens: int
    max_new_tokens: int
    limit: int

    def to_dict(self) -> dict[str, object]:
        """The body of ``POST /v1/tools/sliding-window`` (API.md)."""
        return {
            "messages": [_wire(m) for m in self.messages],
            "dropped": [_wire(m) for m in self.dropped],
            "tokens": {
                "input": self.input_tokens,
                "max_new": self.max_new_tokens,
                "limit": self.limit,
            },
        }


def _wire(message: Message) -> dict[str, object]:
    data: dict[str, object] = {"role": message.role.value, "content": message.content}
    if message.tool_calls:
        data["tool_calls"] = [c.to_dict() for c in message.tool_calls]
    if message.tool_call_id is not None:
        data["tool_call_id"] = message.tool_call_id
    return data


def split_system(messages: Sequence[Message]) -> int:
    """How many leading messages are system messages (kept whatever happens)."""
    head = 0
    while head < len(messages) and messages[head].role is Role.SYSTEM:
        head += 1
    return head


def turn_starts(messages: Sequence[Message], start: int = 0) -> list[int]:
    """Indices where turns begin, from ``start``: each user message opens one.

    Messages before the first user message (a persona's greeting, say) form a turn
    of their own.
    """
    user = Role.USER
    starts = [start] if start < len(messages) else []
    for i in range(start + 1, len(messages)):
        if messages[i].role is user:
            starts.append(i)
    return starts


def cached_costs(messages: Sequence[Message], counter: TokenCounter) -> list[int]:
    """Each message's token cost, read straight from its cached count where there is one."""
    name = counter.name
    out = []
    for message in messages:
        # The hot path of windowing: a plain dict read instead of message_tokens().
        stored = message.metadata.get("tokens")
        entry = stored.get(name) if type(stored) is dict else None
        if type(entry) is list and len(entry) == 2 and entry[1] == len(message.content):
            out.append(entry[0])
        else:
            out.append(message_tokens(message, counter))
    return out


@dataclass(slots=True)
class TurnIndex:
    """Prefix sums of turn costs over a history, for O(log n) windowing.

    ``starts[i]`` is the index of turn ``i``'s first message (oldest first),
    ``costs[i]`` its token cost and ``suffix(k)`` the cost of turns ``k..end``.
    The index grows with :meth:`extend` as messages are appended, so a long
    conversation is indexed once and each later decision is a binary search.
    """

    starts: list[int] = field(default_factory=list)
    costs: list[int] = field(default_factory=list)
    prefix: list[int] = field(default_factory=lambda: [0])
    size: int = 0

    @classmethod
    def build(cls, messages: Sequence[Message], counter: TokenCounter, start: int = 0) -> TurnIndex:
        """Index the turns of ``messages[start:]`` (counts come from the cache)."""
        index = cls(size=start)
        index.extend(messages[start:], counter)
        return index

    def extend(self, messages: Sequence[Message], counter: TokenCounter) -> None:
        """Append messages that follow the indexed ones (a user message opens a turn)."""
        user = Role.USER  # a local: enum attribute lookups dominate this loop
        for offset, cost in enumerate(cached_costs(messages, counter)):
            if not self.starts or messages[offset].role is user:
                self.starts.append(self.size + offset)
                self.costs.append(cost)
                self.prefix.append(self.prefix[-1] + cost)
            else:
                self.costs[-1] += cost
                self.prefix[-1] += cost
        self.size += len(messages)

    def suffix(self, first_turn: int) -> int:
        """Tokens of turns ``first_turn`` to the newest."""
        return self.prefix[-1] - self.prefix[first_turn]

    def first_fitting(self, budget: int) -> int:
        """The oldest turn from which all newer turns fit ``budget`` tokens.

        Returns ``len(costs)`` when not even the newest turn fits.
        """
        total = self.prefix[-1]
        # Smallest k with total - prefix[k] <= budget, i.e. prefix[k] >= total - budget.
        return bisect.bisect_left(self.prefix, total - budget, 0, len(self.prefix) - 1)


def sliding_window(
    messages: Sequence[Message],
    *,
    max_new_tokens: int,
    limit: int,
    counter: TokenCounter,
) -> WindowResult:
    """Drop the oldest whole turns until input + ``max_new_tokens`` <= ``limit``.

    Leading system messages are always kept. Raises :class:`ContextOverflow` when
    the system messages and the newest turn alone exceed the budget.
    """
    head = split_system(messages)
    fixed = reply_overhead(counter) + sum(message_tokens(m, counter) for m in messages[:head])
    index = TurnIndex.build(messages, counter, head)
    budget = limit - max_new_tokens - fixed
    first = index.first_fitting(budget)
    if (index.costs and first == len(index.costs)) or budget < 0:
        newest = index.costs[-1] if index.costs else 0
        raise ContextOverflow(
            f"the newest turn needs {fixed + newest} tokens and the reply up to "
            f"{max_new_tokens}, more than the model's limit of {limit}; shorten the "
            "message or lower max_tokens",
            field="messages",
        )
    cut = index.starts[first] if first < len(index.starts) else len(messages)
    kept = [*messages[:head], *messages[cut:]]
    return WindowResult(
        messages=kept,
        dropped=list(messages[head:cut]),
        dropped_turns=first,
        input_tokens=fixed + index.suffix(first),
        max_new_tokens=max_new_tokens,
        limit=limit,
    )
