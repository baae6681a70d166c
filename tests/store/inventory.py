"""What a store holds, as a set of strings, to prove a deletion left nothing behind."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from daehwa.store import MemoryStore, SqlStore
from daehwa.store.tables import metadata


async def inventory(store: Any) -> set[str]:
    """Every record (SQL row, Redis key and member, in-memory entry) the store holds."""
    if hasattr(store, "inner"):  # CachedStore: what counts is what it wraps
        return await inventory(store.inner)
    if isinstance(store, MemoryStore):
        return {
            *(f"conversation {k}" for k in store._threads),
            *(f"message {k}" for k in store._messages),
            *(f"user {k}" for k in store._users),
            *(f"credential {k}" for k in store._credentials),
        }
    if isinstance(store, SqlStore):
        found: set[str] = set()
        async with store.engine.connect() as conn:
            for table in metadata.sorted_tables:
                key = next(iter(table.primary_key.columns))
                rows = (await conn.execute(select(key))).scalars().all()
                found.update(f"{table.name} {value}" for value in rows)
        return found
    if hasattr(store, "client"):  # RedisStore
        return await redis_inventory(store)
    raise TypeError(f"no inventory for {type(store).__name__}")


async def redis_inventory(store: Any) -> set[str]:
    """Each key under the store's prefix, and each member of its sets and hashes."""
    client = store.client
    found: set[str] = set()
    async for key in client.scan_iter(match=f"{store.prefix}:*", count=1000):
        kind = await client.type(key)
        if kind == "set":
            found.update(f"{key} {m}" for m in await client.smembers(key))
        elif kind == "zset":
            found.update(f"{key} {m}" for m in await client.zrange(key, 0, -1))
        elif kind == "hash":
            found.update(f"{key} {f}" for f in await client.hkeys(key))
        else:
            found.add(key)
    return found
