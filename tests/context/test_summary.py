"""The running summary, written by a (scripted) model and stored with the conversation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from daehwa.context.summary import SUMMARY_HEADER, Summariser, summary_message, transcript
from daehwa.context.tokens import ScriptedCounter
from daehwa.errors import ProviderError
from daehwa.llm.base import Chunk, GenerationParams
from daehwa.llm.scripted import ScriptedModel
from daehwa.messages import Conversation, Message, MessageStatus, Role
from daehwa.store.memory import MemoryStore


async def stored(store: MemoryStore, conversation: Conversation, *pairs: str) -> list[Message]:
    out = []
    for i, text in enumerate(pairs):
        role = Role.USER if i % 2 == 0 else Role.ASSISTANT
        out.append(await store.append_message(Message(role, text, conversation_id=conversation.id)))
    return out


async def setup() -> tuple[MemoryStore, Conversation]:
    store = MemoryStore()
    conversation = await store.create_conversation(Conversation(id="c1", user_id="u1"))
    return store, conversation


class Recording:
    """Records what it was asked, answers with a fixed summary."""

    name = "recording"

    def __init__(self, answer: str = "사용자는 대전에 산다.") -> None:
        self.answer = answer
        self.prompts: list[Sequence[Message]] = []

    async def stream(
        self, messages: Sequence[Message], params: GenerationParams
    ) -> AsyncIterator[Chunk]:
        self.prompts.append(list(messages))
        yield Chunk(text=self.answer)
        yield Chunk(finish_reason="stop")

    async def aclose(self) -> None:
        return None


class Failing(Recording):
    async def stream(
        self, messages: Sequence[Message], params: GenerationParams
    ) -> AsyncIterator[Chunk]:
        raise ProviderError("upstream down")
        yield Chunk()


async def test_folds_dropped_messages_and_stores_summary_and_seq() -> None:
    store, conversation = await setup()
    dropped = await stored(store, conversation, "나는 대전에 살아", "기억할게요.")
    model = Recording()
    summariser = Summariser(lambda c: model)
    updated = await summariser.maybe_update(conversation, dropped, store)
    assert updated is not None
    assert updated.summary == "사용자는 대전에 산다."
    assert updated.summary_seq == dropped[-1].seq
    again = await store.get_conversation("c1")
    assert again is not None and again.summary_seq == dropped[-1].seq
    prompt = model.prompts[0][-1].content
    assert "사용자: 나는 대전에 살아" in prompt and "비서: 기억할게요." in prompt


async def test_incremental_previous_summary_is_fed_back_and_nothing_twice() -> None:
    store, conversation = await setup()
    first = await stored(store, conversation, "내 이름은 민수야", "반가워요 민수님.")
    model = Recording("이름은 민수.")
    summariser = Summariser(lambda c: model)
    conversation = await summariser.maybe_update(conversation, first, store) or conversation
    second = await stored(store, conversation, "나는 냉면을 좋아해", "좋네요.")
    model.answer = "이름은 민수. 냉면을 좋아함."
    conversation = (
        await summariser.maybe_update(conversation, first + second, store) or conversation
    )
    assert conversation.summary == "이름은 민수. 냉면을 좋아함."
    last_prompt = model.prompts[-1][-1].content
    assert "이전 요약:\n이름은 민수." in last_prompt
    assert "민수야" not in last_prompt  # already folded, not sent again
    # Nothing new: no model call.
    assert await summariser.maybe_update(conversation, first + second, store) is None
    assert len(model.prompts) == 2


async def test_with_the_scripted_model() -> None:
    store, conversation = await setup()
    dropped = await stored(store, conversation, "우리 강아지 이름은 초코야", "귀엽네요.")
    model = ScriptedModel(reply="요약: {input}")
    summariser = Summariser(lambda c: model, max_tokens=200)
    updated = await summariser.maybe_update(conversation, dropped, store)
    assert updated is not None
    assert updated.summary.startswith("요약: 이전 요약:")
    assert "초코야" in updated.summary


async def test_summary_is_bounded_by_the_counter() -> None:
    store, conversation = await setup()
    dropped = await stored(store, conversation, "긴 이야기", "네.")
    long_answer = " ".join(f"문장{i}입니다." for i in range(100))
    summariser = Summariser(
        lambda c: Recording(long_answer), max_tokens=10, counter=ScriptedCounter()
    )
    updated = await summariser.maybe_update(conversation, dropped, store)
    assert updated is not None
    assert ScriptedCounter().count(updated.summary) <= 10


async def test_model_failure_keeps_the_old_summary() -> None:
    store, conversation = await setup()
    conversation = await store.update_conversation("c1", summary="예전 요약", summary_seq=0)
    dropped = await stored(store, conversation, "안녕", "안녕하세요")
    summariser = Summariser(lambda c: Failing())
    assert await summariser.maybe_update(conversation, dropped, store) is None
    again = await store.get_conversation("c1")
    assert again is not None and again.summary == "예전 요약"


async def test_skips_failed_and_blocked_messages() -> None:
    store, conversation = await setup()
    dropped = await stored(store, conversation, "안녕", "오류")
    dropped[1].status = MessageStatus.FAILED
    model = Recording()
    await Summariser(lambda c: model).maybe_update(conversation, dropped, store)
    assert "오류" not in model.prompts[0][-1].content


async def test_concurrent_updates_fold_each_message_once() -> None:
    store, conversation = await setup()
    dropped = await stored(store, conversation, "나는 대전에 살아", "네.")
    model = Recording()
    summariser = Summariser(lambda c: model)
    await asyncio.gather(
        summariser.maybe_update(conversation, dropped, store),
        summariser.maybe_update(conversation, dropped, store),
    )
    assert len(model.prompts) == 1


async def test_long_backlog_is_folded_in_batches() -> None:
    store, conversation = await setup()
    texts = []
    for i in range(20):
        texts += [f"질문 {i} " + "가" * 400, f"답 {i} " + "나" * 400]
    dropped = await stored(store, conversation, *texts)
    model = Recording()
    updated = await Summariser(lambda c: model).maybe_update(conversation, dropped, store)
    assert len(model.prompts) > 1
    assert updated is not None and updated.summary_seq == dropped[-1].seq
    # Batches start at a user message.
    for prompt in model.prompts:
        assert prompt[-1].content.split("새 대화:\n")[1].startswith("사용자:")


def test_summary_message_and_transcript() -> None:
    assert summary_message("요약").content == f"{SUMMARY_HEADER}\n요약"
    assert summary_message("요약").role is Role.SYSTEM
    text = transcript([Message(Role.USER, " 안녕 "), Message(Role.ASSISTANT, "네")])
    assert text == "사용자: 안녕\n비서: 네"
