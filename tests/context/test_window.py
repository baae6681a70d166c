"""The sliding window: CLOVA semantics, whole turns, the system prompt, overflow."""

from __future__ import annotations

import random

import pytest

from daehwa.context.tokens import OpenAICounter, ScriptedCounter
from daehwa.context.window import TurnIndex, sliding_window, turn_starts
from daehwa.errors import ContextOverflow
from daehwa.messages import Message, Role, ToolCall

# ScriptedCounter: one token per word, no framing, which keeps the arithmetic visible.
COUNTER = ScriptedCounter()


def words(n: int, tag: str = "w") -> str:
    return " ".join(f"{tag}{i}" for i in range(n))


def history(*turns: tuple[int, int]) -> list[Message]:
    out = [Message(Role.SYSTEM, words(2, "sys"))]
    for i, (user, reply) in enumerate(turns):
        out.append(Message(Role.USER, words(user, f"u{i}-")))
        out.append(Message(Role.ASSISTANT, words(reply, f"a{i}-")))
    return out


def test_everything_fits_nothing_dropped() -> None:
    messages = history((3, 5), (2, 4))
    result = sliding_window(messages, max_new_tokens=10, limit=100, counter=COUNTER)
    assert result.messages == messages
    assert result.dropped == []
    assert result.dropped_turns == 0
    assert result.input_tokens == 2 + 8 + 6


def test_drops_oldest_whole_turns_and_never_more_than_needed() -> None:
    messages = history((3, 5), (2, 4), (1, 1))  # system 2, turns 8, 6, 2 → A = 18
    # A + B = 18 + 4 = 22 > 20 → drop the 8-token turn only: 10 + 4 <= 20.
    result = sliding_window(messages, max_new_tokens=4, limit=20, counter=COUNTER)
    assert result.dropped_turns == 1
    assert result.dropped == messages[1:3]
    assert result.messages == [messages[0], *messages[3:]]
    assert result.input_tokens == 10
    # With room for 10 but not 6 + 2 + 2 + 4 = 14 ... 13: the second turn goes too.
    result = sliding_window(messages, max_new_tokens=4, limit=14, counter=COUNTER)
    assert result.dropped_turns == 1
    result = sliding_window(messages, max_new_tokens=4, limit=13, counter=COUNTER)
    assert result.dropped_turns == 2
    assert result.messages == [messages[0], *messages[5:]]


def test_exact_fit_is_kept() -> None:
    messages = history((3, 5), (2, 4))  # A = 16
    result = sliding_window(messages, max_new_tokens=4, limit=20, counter=COUNTER)
    assert result.dropped_turns == 0


def test_system_prompt_is_always_kept() -> None:
    messages = history((30, 30), (1, 1))
    result = sliding_window(messages, max_new_tokens=1, limit=6, counter=COUNTER)
    assert result.messages[0].role is Role.SYSTEM
    assert [m.role for m in result.messages] == [Role.SYSTEM, Role.USER, Role.ASSISTANT]


def test_newest_turn_that_cannot_fit_is_a_4xx_error() -> None:
    messages = history((1, 1), (50, 0))
    with pytest.raises(ContextOverflow) as info:
        sliding_window(messages, max_new_tokens=10, limit=40, counter=COUNTER)
    assert info.value.status == 400
    assert info.value.code == "context_overflow"
    assert "40" in info.value.message


def test_system_prompt_alone_too_big_is_an_error() -> None:
    messages = [Message(Role.SYSTEM, words(30))]
    with pytest.raises(ContextOverflow):
        sliding_window(messages, max_new_tokens=10, limit=20, counter=COUNTER)


def test_tool_call_and_results_stay_with_their_turn() -> None:
    call = ToolCall("c1", "weather", {"city": "부산"})
    messages = [
        Message(Role.SYSTEM, "sys"),
        Message(Role.USER, words(4)),
        Message(Role.ASSISTANT, "", tool_calls=[call]),
        Message(Role.TOOL, words(20, "r"), tool_call_id="c1"),
        Message(Role.ASSISTANT, words(3)),
        Message(Role.USER, "부산은?"),
    ]
    assert turn_starts(messages, 1) == [1, 5]
    result = sliding_window(messages, max_new_tokens=5, limit=20, counter=COUNTER)
    # The 27-token tool turn goes as a whole; no orphan tool result remains.
    assert [m.role for m in result.messages] == [Role.SYSTEM, Role.USER]
    assert all(m.role is not Role.TOOL for m in result.messages)


def test_greeting_before_first_user_message_is_its_own_turn() -> None:
    messages = [
        Message(Role.SYSTEM, "sys"),
        Message(Role.ASSISTANT, words(10)),
        Message(Role.USER, "안녕"),
    ]
    result = sliding_window(messages, max_new_tokens=2, limit=6, counter=COUNTER)
    assert [m.content for m in result.messages] == ["sys", "안녕"]


def test_no_system_prompt() -> None:
    messages = history((1, 1))[1:]
    result = sliding_window(messages, max_new_tokens=1, limit=10, counter=COUNTER)
    assert result.messages == messages


def test_wire_shape_matches_the_api() -> None:
    messages = history((1, 1))
    body = sliding_window(messages, max_new_tokens=1, limit=10, counter=COUNTER).to_dict()
    assert body["tokens"] == {"input": 4, "max_new": 1, "limit": 10}
    assert body["messages"][0] == {"role": "system", "content": "sys0 sys1"}
    assert body["dropped"] == []


def test_real_counter_counts_framing() -> None:
    counter = OpenAICounter()
    messages = [Message(Role.SYSTEM, "너는 비서야"), Message(Role.USER, "서울 날씨 알려줘")]
    result = sliding_window(messages, max_new_tokens=100, limit=4096, counter=counter)
    assert result.input_tokens == counter.count_messages(messages)


def _brute_force(turn_costs: list[int], budget: int) -> int:
    """The fewest oldest turns to drop so the rest fit, by trying each."""
    for first in range(len(turn_costs) + 1):
        if sum(turn_costs[first:]) <= budget:
            return first
    raise AssertionError


def test_matches_brute_force_on_random_histories() -> None:
    rng = random.Random(4)
    for _ in range(300):
        turns = [(rng.randint(0, 9), rng.randint(0, 9)) for _ in range(rng.randint(1, 12))]
        messages = history(*turns)
        limit = rng.randint(5, 80)
        costs = [u + r for u, r in turns]
        budget = limit - 3 - 2
        if costs[-1] > budget:
            with pytest.raises(ContextOverflow):
                sliding_window(messages, max_new_tokens=3, limit=limit, counter=COUNTER)
            continue
        result = sliding_window(messages, max_new_tokens=3, limit=limit, counter=COUNTER)
        assert result.dropped_turns == _brute_force(costs, budget)
        assert result.input_tokens + 3 <= limit


def test_turn_index_suffix_sums() -> None:
    messages = history((3, 5), (2, 4), (1, 1))
    index = TurnIndex.build(messages, COUNTER, 1)
    assert index.costs == [8, 6, 2]
    assert index.suffix(1) == 8
    assert index.first_fitting(8) == 1
    assert index.first_fitting(1) == 3
