"""Redis-only promises: every key has a TTL, use refreshes it, expiry is clean."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from datetime import timedelta

import orjson
import pytest

from daehwa.errors import StoreError
from daehwa.messages import (
    Conversation,
    Message,
    MessageStatus,
    Role,
    ToolCall,
    Usage,
    User,
    new_id,
    utcnow,
)
from daehwa.store import RedisStore
from daehwa.store import redis_scripts as lua
from daehwa.store.paging import to_micros

pytestmark = pytest.mark.redis

_numbers = itertools.count(1)


@pytest.fixture
async def redis_store(redis_url: str, redis_prefix: str) -> AsyncIterator[RedisStore]:
    store = await RedisStore.open(redis_url, prefix=f"{redis_prefix}-r{next(_numbers)}")
    try:
        yield store
    finally:
        await store.aclose()


async def keys_of(store: RedisStore) -> list[str]:
    return [k async for k in store.client.scan_iter(match=f"{store.prefix}:*", count=1000)]


async def workload(store: RedisStore) -> dict[str, str]:
    """A bit of everything the API does, leaving some of each kind of key."""
    user = await store.create_user(User(id=new_id(), name="테스트"))
    await store.add_key(user.id, "api-hash")
    await store.add_key(
        user.id, "session-hash", kind="session", expires_at=utcnow() + timedelta(hours=1)
    )
    await store.add_key(user.id, "revoked-hash")
    await store.revoke_key("revoked-hash")
    await store.user_for_key("session-hash", kind="session")
    conversations = [
        await store.create_conversation(Conversation(id=new_id(), user_id=user.id))
        for _ in range(4)
    ]
    for conversation in conversations:
        question = await store.append_message(
            Message(Role.USER, "서울 날씨", conversation_id=conversation.id, request_id=new_id())
        )
        reply = await store.append_message(
            Message(
                Role.ASSISTANT, "", conversation_id=conversation.id, status=MessageStatus.STREAMING
            )
        )
        await store.update_message(reply.id, content="맑음", status=MessageStatus.COMPLETE)
        await store.find_by_request_id(conversation.id, question.request_id or "")
    streaming = await store.append_message(
        Message(
            Role.ASSISTANT, "", conversation_id=conversations[0].id, status=MessageStatus.STREAMING
        )
    )
    await store.update_conversation(conversations[0].id, title="제목", summary="요약")
    await store.clear_conversation(conversations[1].id)
    await store.append_message(Message(Role.USER, "다시", conversation_id=conversations[1].id))
    await store.delete_conversation(conversations[2].id)
    await store.list_conversations(user.id)
    await store.list_messages(conversations[0].id, since=utcnow() - timedelta(hours=1))
    await store.search_messages(user.id, "서울")
    await store.list_users()
    return {
        "user": user.id,
        "conversation": conversations[0].id,
        "streaming": streaming.id,
    }


async def test_every_key_has_a_ttl(redis_store: RedisStore) -> None:
    ids = await workload(redis_store)
    keys = await keys_of(redis_store)
    assert len(keys) >= 15
    limit = redis_store.ttl_ms + redis_store.slack_ms
    for key in keys:
        ttl = await redis_store.client.pttl(key)
        assert 0 < ttl <= limit, f"{key} has TTL {ttl}"
    # A credential that expires in an hour lives no longer than that.
    session_ttl = await redis_store.client.pttl(f"{redis_store.prefix}:key:session-hash")
    assert 0 < session_ttl <= 3_600_000
    # The streaming index is kept alive too, and marking empties it.
    assert await redis_store.client.sismember(f"{redis_store.prefix}:streaming", ids["streaming"])
    assert await redis_store.mark_interrupted() == 1
    for key in await keys_of(redis_store):
        assert await redis_store.client.pttl(key) > 0, key


async def test_ttl_follows_the_setting(redis_url: str, redis_prefix: str) -> None:
    store = await RedisStore.open(redis_url, prefix=f"{redis_prefix}-ttl", ttl_days=1)
    try:
        user = await store.create_user(User(id=new_id(), name="하루"))
        conversation = await store.create_conversation(Conversation(id=new_id(), user_id=user.id))
        await store.append_message(Message(Role.USER, "안녕", conversation_id=conversation.id))
        day = 86_400_000
        for key in await keys_of(store):
            assert day - 60_000 < await store.client.pttl(key) <= day + day // 30, key
    finally:
        await store.aclose()


async def _age(store: RedisStore, keys: list[str], ms: int) -> None:
    for key in keys:
        await store.client.pexpire(key, ms)


async def test_use_refreshes_every_key_of_a_conversation(redis_store: RedisStore) -> None:
    ids = await workload(redis_store)
    group = [
        k
        for k in await keys_of(redis_store)
        if k.startswith(f"{redis_store.prefix}:conv:{ids['conversation']}")
        or k.startswith(f"{redis_store.prefix}:msg:")
    ]
    # Pretend most of the TTL has passed without use.
    await _age(redis_store, group, 60_000)
    page = await redis_store.list_messages(ids["conversation"])
    assert page.items
    for key in group:
        ttl = await redis_store.client.pttl(key)
        if key.startswith(f"{redis_store.prefix}:msg:") and not any(
            key.endswith(m.id) for m in page.items
        ):
            continue  # a message of another conversation, not refreshed by this read
        assert ttl > redis_store.ttl_ms, f"{key} not refreshed: {ttl}"


async def test_use_refreshes_a_user(redis_store: RedisStore) -> None:
    ids = await workload(redis_store)
    user_keys = [
        f"{redis_store.prefix}:user:{ids['user']}",
        f"{redis_store.prefix}:username:테스트",
        f"{redis_store.prefix}:key:api-hash",
    ]
    await _age(redis_store, user_keys, 60_000)
    assert await redis_store.user_for_key("api-hash") is not None
    for key in user_keys:
        assert await redis_store.client.pttl(key) > redis_store.ttl_ms, key


async def test_an_expired_conversation_leaves_the_listing(redis_store: RedisStore) -> None:
    user_id = new_id()
    kept = await redis_store.create_conversation(Conversation(id=new_id(), user_id=user_id))
    gone = await redis_store.create_conversation(Conversation(id=new_id(), user_id=user_id))
    message = await redis_store.append_message(
        Message(Role.USER, "곧 사라짐", conversation_id=gone.id)
    )
    # What Redis does when the group's deadline passes.
    for key in await keys_of(redis_store):
        if gone.id in key or message.id in key:
            await redis_store.client.delete(key)
    page = await redis_store.list_conversations(user_id)
    assert [c.id for c in page.items] == [kept.id]
    index = f"{redis_store.prefix}:user:{user_id}:convs"
    assert await redis_store.client.zrange(index, 0, -1) == [kept.id]
    assert await redis_store.get_message(message.id) is None


async def test_unreachable_server_is_a_store_error() -> None:
    with pytest.raises(StoreError):
        await RedisStore.open("redis://127.0.0.1:1/0")


async def test_every_field_of_a_message_comes_back_as_stored(redis_store: RedisStore) -> None:
    conversation = await redis_store.create_conversation(Conversation(id=new_id(), user_id="u"))
    sent = Message(
        Role.TOOL,
        '따옴표 " 역슬래시 \\ 슬래시 / 줄\n바꿈 \u0007 🍜',
        id="m-" + new_id(),
        conversation_id=conversation.id,
        status=MessageStatus.STREAMING,
        usage=Usage(3, 4),
        tool_calls=[ToolCall("call_1", "weather", {"city": "서울", "days": [1, 2.5]})],
        tool_call_id="call_0",
        request_id="req-1",
        model="model-a",
        metadata={"tokens": 7, "embedding": [0.1, -2.5e-08, 1 / 3]},
    )
    stored = await redis_store.append_message(sent)
    for found in (
        stored,
        await redis_store.get_message(sent.id),
        (await redis_store.list_messages(conversation.id)).items[0],
    ):
        assert found is not None
        assert (found.role, found.content, found.id, found.conversation_id) == (
            sent.role,
            sent.content,
            sent.id,
            sent.conversation_id,
        )
        assert (found.status, found.seq, found.created_at) == (
            MessageStatus.STREAMING,
            1,
            stored.created_at,
        )
        assert (found.usage, found.tool_calls, found.tool_call_id) == (
            sent.usage,
            sent.tool_calls,
            sent.tool_call_id,
        )
        assert (found.request_id, found.model, found.metadata) == (
            sent.request_id,
            sent.model,
            sent.metadata,
        )
    # What the store returns shares nothing with what the caller passed in.
    sent.metadata["tokens"] = 8
    assert stored.metadata["tokens"] == 7


def _old_hash(message: Message) -> dict[str, str]:
    """A message's fields as versions before JSON records stored them (one hash)."""

    def dumps(value: object) -> str:
        return orjson.dumps(value).decode()

    return {
        "conversation_id": message.conversation_id,
        "seq": str(message.seq),
        "created_us": str(to_micros(message.created_at)),
        "status": message.status.value,
        "id": message.id,
        "role": message.role.value,
        "content": message.content,
        "usage": dumps(message.usage.to_dict() if message.usage else None),
        "tool_calls": dumps(
            [c.to_dict() for c in message.tool_calls] if message.tool_calls is not None else None
        ),
        "tool_call_id": dumps(message.tool_call_id),
        "request_id": dumps(message.request_id),
        "model": dumps(message.model),
        "metadata": dumps(message.metadata),
    }


async def test_messages_stored_as_hashes_by_earlier_versions_still_work(
    redis_store: RedisStore,
) -> None:
    user = await redis_store.create_user(User(id=new_id(), name="예전"))
    conversation = await redis_store.create_conversation(Conversation(id=new_id(), user_id=user.id))
    stored = [
        await redis_store.append_message(
            Message(
                Role.USER,
                '옛날 "서울" / 날씨\\',
                conversation_id=conversation.id,
                request_id="r1",
                metadata={"tokens": 5},
            )
        ),
        await redis_store.append_message(
            Message(
                Role.ASSISTANT,
                "맑음",
                conversation_id=conversation.id,
                status=MessageStatus.STREAMING,
                usage=Usage(1, 2),
                tool_calls=[ToolCall("c1", "날씨", {"도시": "서울"})],
                model="m",
            )
        ),
    ]
    for message in stored:
        key = f"{redis_store.prefix}:msg:{message.id}"
        ttl = await redis_store.client.pttl(key)
        await redis_store.client.delete(key)
        await redis_store.client.hset(key, mapping=_old_hash(message))
        await redis_store.client.pexpire(key, ttl - 5000)
    ttls = [await redis_store.client.pttl(f"{redis_store.prefix}:msg:{m.id}") for m in stored]

    page = await redis_store.list_messages(conversation.id)
    assert page.items == stored
    for message, ttl in zip(stored, ttls, strict=True):
        key = f"{redis_store.prefix}:msg:{message.id}"
        # Read once, now a record, with the deadline it had.
        assert await redis_store.client.type(key) == "string"
        assert 0 < await redis_store.client.pttl(key) <= ttl
    assert await redis_store.get_message(stored[1].id) == stored[1]

    # Each other path reads an old hash as well.
    await redis_store.client.delete(f"{redis_store.prefix}:msg:{stored[0].id}")
    await redis_store.client.hset(
        f"{redis_store.prefix}:msg:{stored[0].id}", mapping=_old_hash(stored[0])
    )
    assert await redis_store.find_by_request_id(conversation.id, "r1") == stored[0]
    for make_old in (True, False):
        if make_old:
            key = f"{redis_store.prefix}:msg:{stored[1].id}"
            await redis_store.client.delete(key)
            await redis_store.client.hset(key, mapping=_old_hash(stored[1]))
        assert await redis_store.last_message(conversation.id) == stored[1]
    found = await redis_store.search_messages(user.id, '"서울" /')
    assert [m.id for m in found] == [stored[0].id]
    old_key = f"{redis_store.prefix}:msg:{stored[1].id}"
    await redis_store.client.delete(old_key)
    await redis_store.client.hset(old_key, mapping=_old_hash(stored[1]))
    assert await redis_store.streaming_replies(created_before=utcnow()) == [stored[1].id]
    await redis_store.client.delete(old_key)
    await redis_store.client.hset(old_key, mapping=_old_hash(stored[1]))
    assert await redis_store.mark_interrupted() == 1
    interrupted = await redis_store.get_message(stored[1].id)
    assert interrupted is not None and interrupted.status is MessageStatus.INCOMPLETE
    await redis_store.client.delete(old_key)
    await redis_store.client.hset(old_key, mapping=_old_hash(stored[1]))
    updated = await redis_store.update_message(stored[1].id, content="흐림")
    assert (updated.content, updated.usage, updated.model) == ("흐림", Usage(1, 2), "m")
    for key in await keys_of(redis_store):
        assert await redis_store.client.pttl(key) > 0, key


async def test_field_value_pairs_of_the_hash_layout_still_append(redis_store: RedisStore) -> None:
    """Bulk loaders written against the hash layout pass the fields as pairs."""
    conversation = await redis_store.create_conversation(Conversation(id=new_id(), user_id="u"))
    mid = new_id()
    pairs = _old_hash(Message(Role.USER, '쌍 "pairs"', id=mid, metadata={"tokens": 2}))
    fields = [
        item
        for name, value in pairs.items()
        if name not in ("conversation_id", "seq", "created_us", "status")
        for item in (name, value)
    ]
    now = to_micros(utcnow())
    result = await redis_store._run(
        lua.APPEND_MESSAGE, conversation.id, mid, now, "", "complete", *fields
    )
    assert result[0] == 1
    found = await redis_store.get_message(mid)
    assert found is not None
    assert (found.content, found.seq, found.metadata, found.usage) == (
        '쌍 "pairs"',
        1,
        {"tokens": 2},
        None,
    )


async def test_concurrent_updates_of_one_message_all_land(redis_store: RedisStore) -> None:
    conversation = await redis_store.create_conversation(Conversation(id=new_id(), user_id="u"))
    reply = await redis_store.append_message(
        Message(Role.ASSISTANT, "", conversation_id=conversation.id, status=MessageStatus.STREAMING)
    )
    # Each update reads the record before any of them writes it back.
    await asyncio.gather(
        redis_store.update_message(reply.id, content="다 됐어요"),
        redis_store.update_message(reply.id, status=MessageStatus.COMPLETE),
        redis_store.update_message(reply.id, usage=Usage(10, 20)),
        redis_store.update_message(reply.id, metadata={"finish_reason": "stop"}),
        redis_store.update_message(reply.id, tool_calls=[ToolCall("c", "t", {})]),
    )
    found = await redis_store.get_message(reply.id)
    assert found is not None
    assert found.content == "다 됐어요"
    assert found.status is MessageStatus.COMPLETE
    assert found.usage == Usage(10, 20)
    assert found.metadata == {"finish_reason": "stop"}
    assert found.tool_calls == [ToolCall("c", "t", {})]
    assert not await redis_store.client.sismember(f"{redis_store.prefix}:streaming", reply.id)


async def test_search_decodes_content_before_matching(redis_store: RedisStore) -> None:
    user_id = new_id()
    conversation = await redis_store.create_conversation(Conversation(id=new_id(), user_id=user_id))
    texts = ['그가 "안녕"이라고', "C:\\temp\\파일", "a/b 경로", "첫 줄\n둘째 줄", "평범한 말"]
    stored = [
        await redis_store.append_message(Message(Role.USER, t, conversation_id=conversation.id))
        for t in texts
    ]

    async def search(needle: str) -> list[str]:
        return [m.content for m in await redis_store.search_messages(user_id, needle)]

    assert await search('"안녕"') == [texts[0]]
    assert await search("\\temp") == [texts[1]]
    assert await search("a/b") == [texts[2]]
    assert await search("줄\n둘") == [texts[3]]
    # Names and values of the record's other members are not content.
    for needle in ("role", "status", "complete", "metadata", stored[4].id[:8], "user"):
        assert await search(needle) == [], needle


async def test_more_concurrent_calls_than_connections_wait_for_one(
    redis_url: str, redis_prefix: str
) -> None:
    store = await RedisStore.open(f"{redis_url}?max_connections=2", prefix=f"{redis_prefix}-pool")
    try:
        conversation = await store.create_conversation(Conversation(id=new_id(), user_id="u"))
        appended = await asyncio.gather(
            *(
                store.append_message(Message(Role.USER, f"{n}", conversation_id=conversation.id))
                for n in range(40)
            )
        )
        assert sorted(m.seq for m in appended) == list(range(1, 41))
    finally:
        await store.aclose()


async def test_a_script_the_server_forgot_is_loaded_again(redis_store: RedisStore) -> None:
    conversation = await redis_store.create_conversation(Conversation(id=new_id(), user_id="u"))
    sent = await redis_store.append_message(
        Message(Role.USER, "안녕", conversation_id=conversation.id)
    )
    assert (await redis_store.list_messages(conversation.id)).items == [sent]
    for body in (lua.LIST_MESSAGES, lua.APPEND_MESSAGE):
        # What a restarted server (or SCRIPT FLUSH) does to a script it knew.
        redis_store._scripts[body].sha = "0" * 40
    assert (await redis_store.list_messages(conversation.id)).items == [sent]
    again = await redis_store.append_message(
        Message(Role.USER, "또", conversation_id=conversation.id)
    )
    assert again.seq == 2
