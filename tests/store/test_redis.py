"""Redis-only promises: every key has a TTL, use refreshes it, expiry is clean."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from daehwa.errors import StoreError
from daehwa.messages import Conversation, Message, MessageStatus, Role, User, new_id, utcnow
from daehwa.store import RedisStore

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
