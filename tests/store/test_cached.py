"""CachedStore: hits, eviction, isolation, and no stale page under concurrent writes."""

from __future__ import annotations

import asyncio
import random
from datetime import datetime
from typing import Any

import pytest

from daehwa.errors import Conflict
from daehwa.messages import Conversation, Message, MessageStatus, Role, new_id
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
    await say(cached, cid, "원문", metadata={"tags": ["a"]})
    page = await cached.list_messages(cid)
    page.items[0].content = "바뀜"
    page.items[0].metadata["tags"].append("b")
    [again] = (await cached.list_messages(cid)).items
    assert (again.content, again.metadata) == ("원문", {"tags": ["a"]})


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

    async def writer(n: int) -> None:
        nonlocal newest_returned
        message = await say(cached, cid, f"글 {n}")
        newest_returned = max(newest_returned, message.seq)
        if n % 7 == 0:
            await cached.update_message(message.id, content=f"고친 글 {n}")

    async def reader() -> None:
        for _ in range(10):
            floor = newest_returned
            seqs = [m.seq for m in (await cached.list_messages(cid, limit=8)).items]
            # Contiguous, in order, and never older than an append already answered.
            if seqs:
                assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"seed {seed}: {seqs}"
            assert (seqs[-1] if seqs else 0) >= floor, f"seed {seed}: stale page {seqs}"

    await asyncio.gather(*(writer(n) for n in range(30)), *(reader() for _ in range(5)))
    for limit in (8, 50):
        expected = await inner.list_messages(cid, limit=limit)
        assert await cached.list_messages(cid, limit=limit) == expected, f"seed {seed}"


async def test_concurrent_appends_updates_and_reads_agree_with_the_store() -> None:
    for seed in range(40):
        await _fuzz(seed)
