"""Token counters: exact offline encodings, estimates, caching, the factory."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from daehwa.config import ModelSettings
from daehwa.context import tokens
from daehwa.context.tokens import (
    PROFILES,
    EstimatingCounter,
    OpenAICounter,
    ScriptedCounter,
    TokenCounter,
    counter_for,
    is_cached,
    message_tokens,
    register_counter,
)
from daehwa.messages import Message, MessageStatus, Role, ToolCall


def test_o200k_counts_exactly_offline() -> None:
    counter = OpenAICounter("o200k_base")
    # Reference counts of OpenAI's o200k_base encoding.
    assert counter.count("Hello world") == 2
    assert counter.count("") == 0
    assert counter.count("서울 날씨 알려줘") == 5


def test_cl100k_is_less_efficient_on_korean() -> None:
    text = "나는 대전에 살아. 내 이름은 김민수야!"
    assert OpenAICounter("cl100k_base").count(text) > OpenAICounter("o200k_base").count(text)


def test_messages_add_framing_and_tool_calls() -> None:
    counter = OpenAICounter("o200k_base")
    plain = Message(Role.ASSISTANT, "확인해 볼게요")
    call = Message(
        Role.ASSISTANT,
        "확인해 볼게요",
        tool_calls=[ToolCall("c1", "weather", {"city": "부산"})],
    )
    assert counter.count_messages([]) == tokens.REPLY_OVERHEAD
    assert counter.count_messages([plain]) == (
        tokens.REPLY_OVERHEAD + tokens.MESSAGE_OVERHEAD + counter.count(plain.content)
    )
    assert counter.count_messages([call]) > counter.count_messages([plain])


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_estimates_grow_with_text_and_never_return_zero_for_text(profile: str) -> None:
    counter = EstimatingCounter(PROFILES[profile])
    assert counter.count("") == 0
    assert counter.count("?") >= 1
    short = counter.count("서울 날씨 알려줘")
    assert counter.count("서울 날씨 알려줘. 내일 부산은 어때?") > short
    assert counter.count("line one\nline two") >= counter.count("line one line two")


def test_hcx_estimate_stays_above_o200k_on_korean() -> None:
    text = "오늘 회의는 오후 세 시에 시작합니다. 자료는 미리 공유해 주세요. " * 20
    assert EstimatingCounter(PROFILES["hcx"]).count(text) >= OpenAICounter().count(text)


def test_generic_estimate_stays_above_cl100k_on_korean() -> None:
    text = "우리 강아지 이름은 초코야. 산책을 정말 좋아해. " * 20
    generic = EstimatingCounter(PROFILES["generic"]).count(text)
    assert generic >= OpenAICounter("cl100k_base").count(text)


def test_scripted_counter_matches_the_scripted_model() -> None:
    assert ScriptedCounter().count("안녕 하세요  반가워요") == 3
    assert ScriptedCounter().count_messages([Message(Role.USER, "a b")]) == 2


@pytest.mark.parametrize(
    ("settings", "name"),
    [
        (ModelSettings(provider="openai", model="gpt-4o-mini"), "o200k_base"),
        (ModelSettings(provider="openai", model="gpt-4-turbo"), "cl100k_base"),
        (ModelSettings(provider="openai", model="glm-4.5"), "estimate-generic"),
        (ModelSettings(provider="clova", model="HCX-003"), "estimate-hcx"),
        (ModelSettings(provider="anthropic", model="claude-sonnet-4"), "estimate-claude"),
        (ModelSettings(provider="bedrock", model="anthropic.claude-3"), "estimate-claude"),
        (ModelSettings(provider="scripted"), "scripted"),
    ],
)
def test_counter_for_picks_the_family(settings: ModelSettings, name: str) -> None:
    assert counter_for(settings).name == name


def test_counter_for_is_memoised() -> None:
    settings = ModelSettings(provider="openai", model="gpt-4o")
    assert counter_for(settings) is counter_for(settings)


class _Fixed:
    name = "fixed-test"

    def count(self, text: str) -> int:
        return 7

    def count_messages(self, messages: Sequence[Message]) -> int:
        return 1 + 7 * len(messages)


def test_registered_factories_come_first_and_may_decline() -> None:
    settings = ModelSettings(provider="openai", model="my-vllm-model")
    register_counter("openai", lambda m: _Fixed() if m.model == "my-vllm-model" else None)
    try:
        assert counter_for(settings).name == "fixed-test"
        assert counter_for(ModelSettings(provider="openai", model="gpt-4o")).name == "o200k_base"
    finally:
        tokens._FACTORIES.pop("openai")
        tokens._COUNTERS.clear()


def test_any_protocol_counter_works_with_the_cache() -> None:
    counter: TokenCounter = _Fixed()
    message = Message(Role.USER, "아무 말")
    assert message_tokens(message, counter) == 7
    assert message.metadata["tokens"]["fixed-test"] == [7, len(message.content)]


class _Counting(ScriptedCounter):
    name = "counting-test"

    def __init__(self) -> None:
        self.calls = 0

    def count(self, text: str) -> int:
        self.calls += 1
        return super().count(text)


def test_message_counts_are_computed_once_and_stored_in_metadata() -> None:
    counter = _Counting()
    message = Message(Role.USER, "하나 둘 셋", id="m-cache-1")
    assert message_tokens(message, counter) == 3
    assert message_tokens(message, counter) == 3
    assert counter.calls == 1
    assert is_cached(message, counter)
    # A fresh copy (as loaded from a store without metadata) hits the LRU by id.
    copy = Message(Role.USER, "하나 둘 셋", id="m-cache-1")
    assert message_tokens(copy, counter) == 3
    assert counter.calls == 1


def test_edited_content_is_recounted() -> None:
    counter = _Counting()
    message = Message(Role.ASSISTANT, "하나", id="m-cache-2")
    assert message_tokens(message, counter) == 1
    message.content = "하나 둘"
    assert message_tokens(message, counter) == 2


def test_streaming_messages_are_not_cached() -> None:
    counter = _Counting()
    message = Message(Role.ASSISTANT, "반쯤 쓴", status=MessageStatus.STREAMING)
    message_tokens(message, counter)
    assert "tokens" not in message.metadata
