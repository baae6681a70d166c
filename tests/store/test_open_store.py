"""open_store picks the store from [store] url, prepares it and wraps the cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from daehwa.config import ServerSettings, Settings, StoreSettings
from daehwa.errors import ConfigError
from daehwa.messages import Conversation, Message, Role, new_id
from daehwa.store import CachedStore, MemoryStore, RedisStore, SqlStore, Store, open_store


def settings(url: str = "", *, data_dir: Path | None = None, **store: object) -> Settings:
    server = ServerSettings(data_dir=data_dir) if data_dir else ServerSettings()
    return Settings(server=server, store=StoreSettings(url=url, **store))


async def usable(store: Store) -> None:
    conversation = await store.create_conversation(Conversation(id=new_id(), user_id="u"))
    message = await store.append_message(
        Message(Role.USER, "열림", conversation_id=conversation.id)
    )
    assert (await store.list_messages(conversation.id)).items == [message]


async def test_memory() -> None:
    store = await open_store(settings("memory://"))
    assert isinstance(store, MemoryStore)
    await usable(store)
    await store.aclose()


async def test_default_is_an_sqlite_file_in_a_new_data_directory(tmp_path: Path) -> None:
    data_dir = tmp_path / "does" / "not" / "exist"
    store = await open_store(settings(data_dir=data_dir))
    try:
        assert isinstance(store, SqlStore)
        await usable(store)
        assert (data_dir / "daehwa.db").is_file()
    finally:
        await store.aclose()


async def test_plain_sqlite_url_and_cache(tmp_path: Path) -> None:
    store = await open_store(settings(f"sqlite:///{tmp_path}/sub/x.db", cache_size=16))
    try:
        assert isinstance(store, CachedStore)
        assert isinstance(store.inner, SqlStore)
        assert store.size == 16
        await usable(store)
    finally:
        await store.aclose()


async def test_unknown_scheme_names_the_setting_and_hides_the_password() -> None:
    with pytest.raises(ConfigError) as caught:
        await open_store(settings("mongodb://admin:hunter2@db/x"))
    assert "store.url" in caught.value.message
    assert "hunter2" not in caught.value.message


@pytest.mark.postgres
async def test_postgres(postgres_url: str) -> None:
    plain = postgres_url.replace("postgresql+asyncpg://", "postgresql://")
    store = await open_store(settings(plain))
    try:
        assert isinstance(store, SqlStore)
        assert store.dialect == "postgresql"
        await usable(store)
    finally:
        await store.aclose()


@pytest.mark.redis
async def test_redis(redis_url: str, redis_prefix: str) -> None:
    prefix = f"{redis_prefix}-open"
    store = await open_store(settings(redis_url, key_prefix=prefix, ttl_days=2))
    try:
        assert isinstance(store, RedisStore)
        assert (store.prefix, store.ttl_ms) == (prefix, 2 * 86_400_000)
        await usable(store)
    finally:
        await store.aclose()
