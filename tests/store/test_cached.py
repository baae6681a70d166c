"""CachedStore: hits, eviction, isolation, and no stale page under concurrent writes."""

from __future__ import annotations

import asyncio
import random
from datetime import datetime
from typing import Any

import pytest

from daehwa.errors import Conflict
from daehwa.messages import Conversation, Message, MessageStatus, Role, ToolCall, Usage, new_id
from daehwa.store import CachedStore, MemoryStore
from daehwa.store.base import Page, Store


async def conversation(store: Store, user_id: str = "u1") -> str:
    return (await store.create_conversation(Conversation(id=new_id(), user_id=user_id))).id


async def say(store: Store, cid: str, text: str, **fields: Any) -> Message:
    return await store.append_message(Message(Role.USER, text, conversation_id=cid, **fields))


async def test_newest_page_is_served_from_memory_and_kept_current() -> None:
    inner = MemoryStore()
    cached = CachedStore(inner, 4)
    cid = await conversation(cached)
    for i in range(3):
        await say(cached, cid, f"메시지 {i}")
    first = await cached.list_messages(cid, limit=10)
    assert (cached.hits, cached.misses) == (0, 1)
    assert await cached.list_messages(cid, limit=10) == first
    assert cached.hits == 1
    # An append extends the cached tail; no trip to the inner store.
    new = await say(cached, cid, "새 메시지")
    page = await cached.list_messages(cid, limit=10)
    assert page.items[-1] == new
    assert page == await inner.list_messages(cid, limit=10)
    assert cached.hits == 2
    assert await cached.last_message(cid) == new
    # Smaller pages and older cursors inside the tail are hits too.
    assert await cached.list_messages(cid, limit=2) == await inner.list_messages(cid, limit=2)
    assert await cached.list_messages(cid, limit=2, before=3) == await inner.list_messages(
        cid, limit=2, before=3
    )


async def test_a_batch_append_extends_the_cached_tail() -> None:
    inner = MemoryStore()
    cached = CachedStore(inner, 4)
    cid = await conversation(cached)
    await say(cached, cid, "처음")
    await cached.list_messages(cid, limit=10)
    stored = await cached.append_messages(
        [
            Message(Role.USER, "질문", conversation_id=cid),
            Message(Role.ASSISTANT, "", conversation_id=cid, status=MessageStatus.STREAMING),
        ]
    )
    hits = cached.hits
    page = await cached.list_messages(cid, limit=10)
    assert cached.hits == hits + 1
    assert page.items[-2:] == stored
    assert page == await inner.list_messages(cid, limit=10)
    # A refused batch leaves the cache as the store is.
    with pytest.raises(Conflict):
        await cached.append_messages(
            [Message(Role.USER, "x", conversation_id=cid, id=stored[0].id)]
        )
    assert await cached.list_messages(cid, limit=10) == await inner.list_messages(cid, limit=10)


async def test_a_partial_tail_answers_only_what_it_holds() -> None:
    inner = MemoryStore()
    cached = CachedStore(inner, 4)
    cid = await conversation(cached)
    for i in range(6):
        await say(cached, cid, f"메시지 {i}")
    page = await cached.list_messages(cid, limit=3)
    assert page.next == "4"
    assert await cached.list_messages(cid, limit=3) == page  # a hit
    misses = cached.misses
    # Older than the tail, or more than it holds: asked of the inner store.
    assert await cached.list_messages(cid, limit=3, before=4) == await inner.list_messages(
        cid, limit=3, before=4
    )
    assert await cached.list_messages(cid, limit=5) == await inner.list_messages(cid, limit=5)
    assert cached.misses == misses + 2


async def test_updates_clear_and_delete_are_never_hidden() -> None:
    cached = CachedStore(MemoryStore(), 4)
    cid = await conversation(cached)
    reply = await say(cached, cid, "", status=MessageStatus.STREAMING)
    await cached.list_messages(cid)
    await cached.update_message(reply.id, content="완성", status=MessageStatus.COMPLETE)
    [stored] = (await cached.list_messages(cid)).items
    assert (stored.content, stored.status) == ("완성", MessageStatus.COMPLETE)
    await cached.mark_interrupted()
    await cached.clear_conversation(cid)
    assert (await cached.list_messages(cid)).items == []
    assert await cached.last_message(cid) is None
    assert (await say(cached, cid, "after clear")).seq == 2
    assert [m.content for m in (await cached.list_messages(cid)).items] == ["after clear"]
    await cached.delete_conversation(cid)
    assert (await cached.list_messages(cid)).items == []


async def test_returned_messages_are_copies() -> None:
    cached = CachedStore(MemoryStore(), 4)
    cid = await conversation(cached)
    stored = await say(
        cached,
        cid,
        "원문",
        metadata={"tags": ["a"], "tokens": {"estimate": 3}},
        tool_calls=[ToolCall("c1", "weather", {"city": ["서울"]})],
        usage=Usage(3, 4),
        request_id="r1",
    )
    page = await cached.list_messages(cid)
    assert page.items == [stored]
    first = page.items[0]
    first.content = "바뀜"
    first.metadata["tags"].append("b")
    first.metadata["tokens"]["estimate"] = 9
    assert first.tool_calls is not None and first.usage is not None
    first.tool_calls[0].arguments["city"].append("부산")
    first.usage.completion_tokens = 99
    [again] = (await cached.list_messages(cid)).items
    assert cached.hits == 1
    assert again == stored
    assert (again.content, again.metadata) == ("원문", {"tags": ["a"], "tokens": {"estimate": 3}})


async def test_a_turn_keeps_its_conversation_cached() -> None:
    # A turn appends the question and a streaming reply, updates the reply at its
    # checkpoints and at its end; the next turn's read is still served from memory.
    inner = MemoryStore()
    cached = CachedStore(inner, 4)
    cid = await conversation(cached)
    await say(cached, cid, "처음")
    for turn in range(3):
        _, reply = await cached.append_messages(
            [
                Message(Role.USER, f"질문 {turn}", conversation_id=cid),
                Message(Role.ASSISTANT, "", conversation_id=cid, status=MessageStatus.STREAMING),
            ]
        )
        await cached.update_message(reply.id, content="답")
        await cached.update_message(
            reply.id, content="답입니다", status=MessageStatus.COMPLETE, metadata={"n": [turn]}
        )
        # The turn's own read: the history before its reply (the first one fills the cache).
        hits = cached.hits
        history = await cached.list_messages(cid, limit=400, before=reply.seq)
        assert cached.hits == hits + (1 if turn else 0), f"turn {turn}: read from the store"
        assert history == await inner.list_messages(cid, limit=400, before=reply.seq)
        assert history.items[-1].content == f"질문 {turn}"
        hits = cached.hits
        page = await cached.list_messages(cid, limit=400, before=reply.seq + 1)
        assert cached.hits == hits + 1, f"turn {turn}: read from the store"
        assert page == await inner.list_messages(cid, limit=400, before=reply.seq + 1)
        assert (page.items[-1].content, page.items[-1].status) == (
            "답입니다",
            MessageStatus.COMPLETE,
        )


async def test_an_uncached_page_before_a_seq_is_answered_and_the_newest_kept() -> None:
    inner = MemoryStore()
    cached = CachedStore(inner, 4, max_messages=5)
    cid = await conversation(cached)
    for i in range(10):
        await say(cached, cid, f"메시지 {i}")
    # The newest five reach back far enough: answered from them, and they are kept.
    assert await cached.list_messages(cid, limit=2, before=9) == await inner.list_messages(
        cid, limit=2, before=9
    )
    assert cached.misses == 1
    assert await cached.list_messages(cid, limit=5) == await inner.list_messages(cid, limit=5)
    assert cached.hits == 1
    # Older than they reach: asked of the inner store, the cache left as it is.
    other = await conversation(cached)
    for i in range(10):
        await say(cached, other, f"글 {i}")
    assert await cached.list_messages(other, limit=3, before=4) == await inner.list_messages(
        other, limit=3, before=4
    )
    assert await cached.list_messages(other, limit=5) == await inner.list_messages(other, limit=5)
    assert cached.hits == 2


async def test_overlapping_updates_of_one_message_drop_the_conversation() -> None:
    # Two updates of one message at once may be answered in either order: the cache
    # cannot tell which is the store's, so the conversation is read again.
    inner = JitteryStore(seed=3)
    cached = CachedStore(inner, 4)
    cid = await conversation(cached)
    reply = await say(cached, cid, "", status=MessageStatus.STREAMING)
    await cached.list_messages(cid)
    await asyncio.gather(
        cached.update_message(reply.id, content="하나"),
        cached.update_message(reply.id, content="둘"),
    )
    misses = cached.misses
    assert await cached.list_messages(cid) == await inner.list_messages(cid)
    assert cached.misses == misses + 1
    # One update alone is put in place again.
    await cached.update_message(reply.id, content="셋")
    assert [m.content for m in (await cached.list_messages(cid)).items] == ["셋"]
    assert cached.misses == misses + 1


async def test_least_recently_used_conversation_is_evicted() -> None:
    cached = CachedStore(MemoryStore(), 2)
    ids = [await conversation(cached) for _ in range(3)]
    for cid in ids:
        await say(cached, cid, "안녕")
        await cached.list_messages(cid)
    misses = cached.misses
    await cached.list_messages(ids[2])
    await cached.list_messages(ids[1])
    assert cached.misses == misses
    await cached.list_messages(ids[0])
    assert cached.misses == misses + 1


class GatedStore(MemoryStore):
    """A memory store whose next list_messages waits, after reading, until released."""

    def __init__(self) -> None:
        super().__init__()
        self.read_done = asyncio.Event()
        self.release = asyncio.Event()
        self.gate = False

    async def list_messages(self, conversation_id: str, **kwargs: Any) -> Page[Message]:
        page = await super().list_messages(conversation_id, **kwargs)
        if self.gate:
            self.gate = False
            self.read_done.set()
            await self.release.wait()
        return page


async def test_a_read_racing_a_write_does_not_fill_a_stale_page() -> None:
    inner = GatedStore()
    cached = CachedStore(inner, 4)
    cid = await conversation(cached)
    await say(cached, cid, "첫째")
    inner.gate = True
    reading = asyncio.create_task(cached.list_messages(cid))
    await inner.read_done.wait()  # the read has its (soon old) snapshot
    second = await say(cached, cid, "둘째")
    inner.release.set()
    assert [m.content for m in (await reading).items] == ["첫째"]
    page = await cached.list_messages(cid)
    assert page.items[-1] == second


class JitteryStore(MemoryStore):
    """A memory store that yields to other tasks before and after every call."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.random = random.Random(seed)

    async def _jitter(self) -> None:
        for _ in range(self.random.randrange(6)):
            await asyncio.sleep(0)

    async def append_message(self, message: Message) -> Message:
        await self._jitter()
        stored = await super().append_message(message)
        await self._jitter()
        return stored

    async def update_message(self, message_id: str, **kwargs: Any) -> Message:
        await self._jitter()
        updated = await super().update_message(message_id, **kwargs)
        await self._jitter()
        return updated

    async def list_messages(
        self,
        conversation_id: str,
        *,
        limit: int = 50,
        before: int | None = None,
        since: datetime | None = None,
    ) -> Page[Message]:
        await self._jitter()
        page = await super().list_messages(conversation_id, limit=limit, before=before, since=since)
        await self._jitter()
        return page


async def _fuzz(seed: int) -> None:
    inner = JitteryStore(seed)
    cached = CachedStore(inner, 2)
    cid = await conversation(cached)
    newest_returned = 0

    written: list[Message] = []

    async def writer(n: int) -> None:
        nonlocal newest_returned
        message = await say(cached, cid, f"글 {n}")
        written.append(message)
        newest_returned = max(newest_returned, message.seq)
        if n % 7 == 0:
            await cached.update_message(message.id, content=f"고친 글 {n}")

    async def history_reader() -> None:
        # A turn's read: the page before a seq that exists already.
        for _ in range(10):
            floor = newest_returned
            if floor:
                page = await cached.list_messages(cid, limit=4, before=floor + 1)
                seqs = [m.seq for m in page.items]
                assert seqs == list(range(max(1, floor - 3), floor + 1)), f"seed {seed}: {seqs}"
            await asyncio.sleep(0)

    async def editor(n: int) -> None:
        # Updates of messages other tasks may be updating at the same time.
        for k in range(4):
            await asyncio.sleep(0)
            if written:
                target = written[(n * 5 + k) % len(written)]
                await cached.update_message(target.id, content=f"편집 {n}.{k}")

    async def reader() -> None:
        for _ in range(10):
            floor = newest_returned
            seqs = [m.seq for m in (await cached.list_messages(cid, limit=8)).items]
            # Contiguous, in order, and never older than an append already answered.
            if seqs:
                assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"seed {seed}: {seqs}"
            assert (seqs[-1] if seqs else 0) >= floor, f"seed {seed}: stale page {seqs}"

    await asyncio.gather(
        *(writer(n) for n in range(30)),
        *(reader() for _ in range(5)),
        *(history_reader() for _ in range(3)),
        *(editor(n) for n in range(4)),
    )
    for limit in (8, 50):
        expected = await inner.list_messages(cid, limit=limit)
        assert await cached.list_messages(cid, limit=limit) == expected, f"seed {seed}"


async def test_concurrent_appends_updates_and_reads_agree_with_the_store() -> None:
    for seed in range(40):
        await _fuzz(seed)
