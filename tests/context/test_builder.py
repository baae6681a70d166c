"""The context builder: window, summary and recall within one budget."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from daehwa.config import ContextSettings, ModelSettings
from daehwa.context.builder import BuiltContext, ContextBuilder
from daehwa.context.recall import Recall
from daehwa.context.summary import SUMMARY_HEADER
from daehwa.context.tokens import ScriptedCounter
from daehwa.errors import ContextOverflow
from daehwa.messages import Conversation, Message, MessageStatus, Role
from tests.context.embedders import BigramEmbedder

COUNTER = ScriptedCounter()  # what provider "scripted" uses: one token per word


def model(window: int, max_new: int = 10) -> ModelSettings:
    return ModelSettings(provider="scripted", context_window=window, max_new_tokens=max_new)


def conversation(summary: str = "", summary_seq: int = 0) -> Conversation:
    return Conversation(id="c1", user_id="u1", summary=summary, summary_seq=summary_seq)


def chat(*pairs: tuple[str, str]) -> list[Message]:
    out: list[Message] = []
    for user, reply in pairs:
        seq = len(out) + 1
        out.append(Message(Role.USER, user, id=f"m{seq}", seq=seq, conversation_id="c1"))
        out.append(
            Message(Role.ASSISTANT, reply, id=f"m{seq + 1}", seq=seq + 1, conversation_id="c1")
        )
    return out


FILLER = [
    (f"잡담 {i} 오늘 뭐 먹지 날씨 좋다", f"답변 {i} 그렇군요 좋은 하루 되세요") for i in range(30)
]


async def test_everything_fits() -> None:
    history = chat(("서울 날씨 알려줘", "맑아요"), ("부산은?", "흐려요"))
    built = await ContextBuilder().build(
        system_prompt="당신은 비서입니다",
        conversation=conversation(),
        history=[*history, Message(Role.USER, "대구는?", id="m5", seq=5)],
        model=model(100),
    )
    assert [m.content for m in built.messages] == [
        "당신은 비서입니다",
        "서울 날씨 알려줘",
        "맑아요",
        "부산은?",
        "흐려요",
        "대구는?",
    ]
    assert built.input_tokens == 2 + 3 + 1 + 1 + 1 + 1
    assert (built.max_new_tokens, built.limit) == (10, 100)
    assert built.steps == {"windowed_out": 0, "summarised": 0, "recalled": 0, "summary_tokens": 0}
    assert built.dropped == []


async def test_follow_up_keeps_the_turn_it_refers_to() -> None:
    history = chat(*FILLER[:10], ("서울 날씨 알려줘", "서울은 맑아요"))
    history.append(Message(Role.USER, "부산은?", id="q", seq=len(history) + 1))
    built = await ContextBuilder().build(
        system_prompt="비서", conversation=conversation(), history=history, model=model(30)
    )
    contents = [m.content for m in built.messages]
    assert contents[-3:] == ["서울 날씨 알려줘", "서울은 맑아요", "부산은?"]
    assert built.steps["windowed_out"] > 0
    assert built.input_tokens + built.max_new_tokens <= built.limit
    assert built.dropped == history[: 2 * built.steps["windowed_out"]]


async def test_skipped_statuses_never_reach_the_model() -> None:
    history = chat(("안녕", "실패한 답"), ("다시", "좋아요"))
    history[1].status = MessageStatus.FAILED
    built = await ContextBuilder().build(
        system_prompt="", conversation=conversation(), history=history, model=model(100)
    )
    assert "실패한 답" not in [m.content for m in built.messages]
    assert built.messages[0].content == "안녕"


async def test_overflow_when_the_newest_turn_cannot_fit() -> None:
    history = [Message(Role.USER, " ".join(["단어"] * 50), id="m1", seq=1)]
    with pytest.raises(ContextOverflow):
        await ContextBuilder().build(
            system_prompt="비서", conversation=conversation(), history=history, model=model(40)
        )


async def test_summary_goes_after_the_system_prompt_within_budget() -> None:
    history = chat(*FILLER[:12])
    summary = "사용자는 대전에 산다"
    built = await ContextBuilder().build(
        system_prompt="비서",
        conversation=conversation(summary, summary_seq=10),
        history=history,
        model=model(40),
    )
    assert built.messages[0].content == "비서"
    assert built.messages[1].role is Role.SYSTEM
    assert built.messages[1].content == f"{SUMMARY_HEADER}\n{summary}"
    assert built.steps["summary_tokens"] == COUNTER.count(built.messages[1].content)
    out = built.steps["windowed_out"]
    assert out > 0
    # Turns 1-5 (seq 1-10) are covered by the summary.
    assert built.steps["summarised"] == min(out, 5)
    assert built.input_tokens + built.max_new_tokens <= built.limit
    assert built.input_tokens == COUNTER.count_messages(built.messages)


async def test_no_summary_when_the_whole_conversation_fits() -> None:
    built = await ContextBuilder().build(
        system_prompt="비서",
        conversation=conversation("오래된 요약", 2),
        history=chat(("안녕", "네")),
        model=model(100),
    )
    assert all(SUMMARY_HEADER not in m.content for m in built.messages)


async def test_summary_is_left_out_when_it_does_not_fit() -> None:
    built = await ContextBuilder().build(
        system_prompt="비서",
        conversation=conversation(" ".join(["요약"] * 100), 4),
        history=chat(*FILLER[:6]),
        model=model(40),
    )
    assert all(SUMMARY_HEADER not in m.content for m in built.messages)
    assert built.steps["summary_tokens"] == 0


async def test_summary_can_be_switched_off() -> None:
    built = await ContextBuilder(use_summary=False).build(
        system_prompt="비서",
        conversation=conversation("요약", 4),
        history=chat(*FILLER[:12]),
        model=model(40),
    )
    assert all(SUMMARY_HEADER not in m.content for m in built.messages)


def fact_history() -> list[Message]:
    pairs = [*FILLER[:5], ("나는 대전에 살아", "기억할게요"), *FILLER[5:25]]
    history = chat(*pairs)
    history.append(Message(Role.USER, "내가 대전에 산다고 했나 어디 산다고 했지", id="q", seq=99))
    return history


async def test_recall_brings_back_the_relevant_old_turn_in_order() -> None:
    history = fact_history()
    recall = Recall(BigramEmbedder())
    builder = ContextBuilder(
        recall=recall, recall_share=0.3, recall_max_turns=2, max_embed_per_build=100
    )
    built = await builder.build(
        system_prompt="비서", conversation=conversation(), history=history, model=model(80)
    )
    contents = [m.content for m in built.messages]
    assert "나는 대전에 살아" in contents
    assert built.steps["recalled"] >= 1
    assert built.recalled[0].content == "나는 대전에 살아"
    # Recalled turns come whole, after the system prompt, before the window, oldest first.
    i = contents.index("나는 대전에 살아")
    assert contents[i + 1] == "기억할게요"
    seqs = [m.seq for m in built.messages[1:]]
    assert seqs == sorted(seqs)
    assert built.input_tokens + built.max_new_tokens <= built.limit
    assert built.input_tokens == COUNTER.count_messages(built.messages)
    # Out-of-window messages were embedded once and are reported for persisting.
    assert any("embedding" in m.metadata for m in built.updated)
    before = recall.embedded
    await builder.build(
        system_prompt="비서", conversation=conversation(), history=history, model=model(80)
    )
    assert recall.embedded == before


async def test_recall_off_is_a_plain_window() -> None:
    history = fact_history()
    built = await ContextBuilder().build(
        system_prompt="비서", conversation=conversation(), history=history, model=model(80)
    )
    assert "나는 대전에 살아" not in [m.content for m in built.messages]
    assert built.steps["recalled"] == 0


async def test_recall_budget_unused_goes_back_to_the_window() -> None:
    history = fact_history()
    plain = await ContextBuilder().build(
        system_prompt="비서", conversation=conversation(), history=history, model=model(80)
    )
    builder = ContextBuilder(recall=Recall(BigramEmbedder()), recall_max_turns=1)
    recalled = await builder.build(
        system_prompt="비서", conversation=conversation(), history=history, model=model(80)
    )
    # Whatever recall did not use, the window did: the input is as full as before or fuller.
    assert recalled.input_tokens >= plain.input_tokens - 8
    assert recalled.input_tokens + recalled.max_new_tokens <= recalled.limit


async def test_embedding_per_build_is_capped() -> None:
    recall = Recall(BigramEmbedder())
    builder = ContextBuilder(recall=recall, max_embed_per_build=4)
    await builder.build(
        system_prompt="비서", conversation=conversation(), history=fact_history(), model=model(80)
    )
    assert recall.embedded == 4


async def test_new_counts_are_reported_for_persisting() -> None:
    history = chat(("안녕", "네"))
    built = await ContextBuilder().build(
        system_prompt="비서", conversation=conversation(), history=history, model=model(100)
    )
    assert {m.id for m in built.updated} == {"m1", "m2"}
    assert history[0].metadata["tokens"]["scripted"] == [1, 2]
    again = await ContextBuilder().build(
        system_prompt="비서", conversation=conversation(), history=history, model=model(100)
    )
    assert again.updated == []


def test_from_settings() -> None:
    assert ContextBuilder.from_settings(ContextSettings(recall=False)).recall is None
    builder = ContextBuilder.from_settings(ContextSettings(summary=False, recall_share=0.5))
    assert builder.use_summary is False
    assert builder.recall_share == 0.5


class _Summary:
    """A model that answers every summary request with a fixed text."""

    name = "summary-test"

    async def stream(self, messages, params):  # type: ignore[no-untyped-def]
        from daehwa.llm.base import Chunk

        yield Chunk(text="사용자는 대전에 산다.")
        yield Chunk(finish_reason="stop")

    async def aclose(self) -> None:
        return None


async def test_after_turn_persists_counts_embeddings_and_summary() -> None:
    from daehwa.context.summary import Summariser
    from daehwa.store.memory import MemoryStore

    store = MemoryStore()
    conv = await store.create_conversation(Conversation(id="c1", user_id="u1"))
    pairs = [*FILLER[:5], ("나는 대전에 살아", "기억할게요"), *FILLER[5:25]]
    history = []
    for user, reply in pairs:
        history.append(await store.append_message(Message(Role.USER, user, conversation_id="c1")))
        history.append(
            await store.append_message(Message(Role.ASSISTANT, reply, conversation_id="c1"))
        )
    recall = Recall(BigramEmbedder())
    builder = ContextBuilder(
        recall=recall, summariser=Summariser(lambda c: _Summary()), max_embed_per_build=2
    )
    built = await builder.build(
        system_prompt="비서", conversation=conv, history=history, model=model(80)
    )
    assert built.dropped
    await builder.after_turn(conversation=conv, built=built, store=store)

    stored_conv = await store.get_conversation("c1")
    assert stored_conv is not None
    assert stored_conv.summary == "사용자는 대전에 산다."
    assert stored_conv.summary_seq == built.dropped[-1].seq
    page = await store.list_messages("c1", limit=100)
    assert all("tokens" in m.metadata for m in page.items)
    dropped_ids = {m.id for m in built.dropped}
    assert all("embedding" in m.metadata for m in page.items if m.id in dropped_ids)

    # The next build reads the stored summary, counts and vectors: nothing is recomputed.
    calls = recall.embedded
    again = await builder.build(
        system_prompt="비서", conversation=conv, history=page.items, model=model(80)
    )
    assert recall.embedded == calls
    assert again.updated == []
    with_summary = await builder.build(
        system_prompt="비서", conversation=stored_conv, history=page.items, model=model(80)
    )
    assert with_summary.messages[1].content.endswith("사용자는 대전에 산다.")


async def test_turn_index_is_reused_and_extended_as_the_conversation_grows() -> None:
    cached = ContextBuilder()
    history: list[Message] = []
    for i, (user, reply) in enumerate(FILLER):
        seq = len(history) + 1
        history.append(Message(Role.USER, user, id=f"g{seq}", seq=seq))
        for window in (30, 80):
            fresh = await ContextBuilder().build(
                system_prompt="비서",
                conversation=conversation(),
                history=history,
                model=model(window),
            )
            reused = await cached.build(
                system_prompt="비서",
                conversation=conversation(),
                history=history,
                model=model(window),
            )
            assert [m.id for m in reused.messages] == [m.id for m in fresh.messages]
            assert reused.input_tokens == fresh.input_tokens
        history.append(Message(Role.ASSISTANT, reply, id=f"g{seq + 1}", seq=seq + 1))
        if i == 10:
            # A page that moved on (the oldest messages no longer given) is re-indexed.
            history = history[4:]
    assert ("c1", "scripted") in cached._indexes


class ThreadNoting(ContextBuilder):
    """A builder that notes which thread assembled each context."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[int] = []

    def assemble(self, **kwargs: Any) -> BuiltContext:
        self.threads.append(threading.get_ident())
        return super().assemble(**kwargs)


async def test_a_short_counted_history_is_built_on_the_event_loop() -> None:
    builder = ThreadNoting()
    loop_thread = threading.get_ident()
    history = chat(*FILLER[:3])

    async def build(messages: list[Message]) -> BuiltContext:
        return await builder.build(
            system_prompt="비서", conversation=conversation(), history=messages, model=model(500)
        )

    first = await build(history)  # uncounted messages, a tokenizer never used here yet
    newest = Message(Role.USER, "새 질문", id="m7", seq=7, conversation_id="c1")
    await builder.count_before_storing(newest, model(500))
    second = await build([*history, newest])  # every count is stored now
    longer = chat(*FILLER, *FILLER)  # more messages than is worth building on the loop
    for message in longer:
        await builder.count_before_storing(message, model(500))
    await build(longer)
    assert builder.threads[0] != loop_thread
    assert builder.threads[1:] == [loop_thread, builder.threads[2]]
    assert builder.threads[2] != loop_thread
    assert [m.content for m in second.messages] == [
        *[m.content for m in first.messages],
        "새 질문",
    ]
    assert second.updated == []
