"""Which replies count as orphans: runs that are alive are never marked incomplete."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from daehwa.chat.recovery import mark_orphans
from daehwa.chat.redis_runs import RedisRunLog
from daehwa.chat.runs import MemoryRunLog
from daehwa.events import Delta, Envelope
from daehwa.messages import Conversation, Message, MessageStatus, Role, new_id
from daehwa.store.memory import MemoryStore


async def test_a_memory_log_knows_its_running_runs() -> None:
    runs = MemoryRunLog()
    await runs.open("running")
    await runs.open("done")
    await runs.append("done", Envelope.of(1, Delta("끝")))
    await runs.finish("done")
    assert await runs.alive(["running", "done", "never-opened"]) == {"running"}
    assert await runs.alive([]) == set()


async def streaming_reply(store: MemoryStore, conversation: Conversation) -> str:
    reply = await store.append_message(
        Message(
            Role.ASSISTANT,
            "반쯤",
            id=new_id(),
            conversation_id=conversation.id,
            status=MessageStatus.STREAMING,
        )
    )
    return reply.id


async def test_only_replies_without_a_live_run_are_marked() -> None:
    store = MemoryStore()
    conversation = await store.create_conversation(Conversation(id=new_id(), user_id="u1"))
    live = await streaming_reply(store, conversation)
    orphan = await streaming_reply(store, conversation)
    runs = MemoryRunLog()
    await runs.open(live)

    assert await mark_orphans(store, runs, grace=timedelta(0)) == 1

    assert (await store.get_message(live)).status is MessageStatus.STREAMING  # type: ignore[union-attr]
    stored = await store.get_message(orphan)
    assert stored is not None
    assert (stored.status, stored.content) == (MessageStatus.INCOMPLETE, "반쯤")
    # Nothing left to do: a second pass changes nothing.
    assert await mark_orphans(store, runs, grace=timedelta(0)) == 0


async def test_young_replies_are_left_for_their_run_to_open() -> None:
    store = MemoryStore()
    conversation = await store.create_conversation(Conversation(id=new_id(), user_id="u1"))
    young = await streaming_reply(store, conversation)
    assert await mark_orphans(store, MemoryRunLog(), grace=timedelta(minutes=1)) == 0
    assert (await store.get_message(young)).status is MessageStatus.STREAMING  # type: ignore[union-attr]


@pytest.fixture
async def two_instances(redis_url: str, redis_prefix: str) -> AsyncIterator[list[RedisRunLog]]:
    first = await RedisRunLog.connect(redis_url, prefix=redis_prefix, heartbeat=1.0)
    second = await RedisRunLog.connect(redis_url, prefix=redis_prefix, heartbeat=1.0)
    try:
        yield [first, second]
    finally:
        await first.aclose()
        await second.aclose()


@pytest.mark.redis
async def test_a_run_is_alive_while_its_instance_beats(two_instances: list[RedisRunLog]) -> None:
    first, second = two_instances
    await first.open("r-live")
    await first.open("r-done")
    await first.finish("r-done")
    # Longer than the heartbeat's lifetime: the beating keeps the owner alive.
    await asyncio.sleep(1.5)
    assert await second.alive(["r-live", "r-done", "r-unknown"]) == {"r-live"}
    assert await first.alive(["r-live"]) == {"r-live"}


@pytest.mark.redis
async def test_a_run_dies_with_its_instance(two_instances: list[RedisRunLog]) -> None:
    _, second = two_instances
    # An instance that beat once and then crashed: no more beats, nobody cleans up.
    crashed = RedisRunLog(second.client, prefix=second.prefix, heartbeat=0.3)
    await crashed.beat()
    await crashed.open("r-orphan")
    assert await second.alive(["r-orphan"]) == {"r-orphan"}
    await asyncio.sleep(0.5)
    assert await second.alive(["r-orphan"]) == set()
    # The run's state still says running: only the heartbeat tells it is dead.
    assert await second.client.get(f"{second.prefix}:run:r-orphan:state") == b"running"


@pytest.mark.redis
async def test_a_clean_shutdown_ends_the_heartbeat_at_once(
    redis_url: str, redis_prefix: str
) -> None:
    first = await RedisRunLog.connect(redis_url, prefix=redis_prefix, heartbeat=60)
    second = await RedisRunLog.connect(redis_url, prefix=redis_prefix, heartbeat=60)
    try:
        await first.open("r1")
        assert await second.alive(["r1"]) == {"r1"}
        await first.aclose()
        assert await second.alive(["r1"]) == set()
    finally:
        await second.aclose()
