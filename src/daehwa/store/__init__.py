"""History stores: one protocol, several backends, chosen by ``[store] url``.

=============================  ==================================================
``sqlite+aiosqlite:///PATH``   :class:`SqlStore` on an SQLite file (the default)
``postgresql+asyncpg://...``   :class:`SqlStore` on PostgreSQL
``redis://...``                :class:`RedisStore` (every key expires, see TTL)
``memory://``                  :class:`MemoryStore`, gone at exit (tests, demos)
=============================  ==================================================
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daehwa.config import Settings
from daehwa.errors import ConfigError
from daehwa.store.base import HistoryStore, Page, Store, UserStore
from daehwa.store.cached import CachedStore
from daehwa.store.memory import MemoryStore
from daehwa.store.urls import sqlite_database

if TYPE_CHECKING:
    from daehwa.store.redis import RedisStore
    from daehwa.store.sql import SqlStore

# Backends load on first use: a server keeps only its own store's driver in memory
# (redis.asyncio, asyncpg, SQLAlchemy's async engine and Alembic cost ~70 MB together).
_LAZY = {"RedisStore": "daehwa.store.redis", "SqlStore": "daehwa.store.sql"}

__all__ = [
    "CachedStore",
    "HistoryStore",
    "MemoryStore",
    "Page",
    "RedisStore",
    "SqlStore",
    "Store",
    "UserStore",
    "open_store",
    "sql_url",
]

# Plain or sync driver names a user may write, and the async driver we use.
_SQL_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}


async def open_store(settings: Settings) -> Store:
    """Open the store named by ``settings.store_url``, ready to use.

    SQL stores get their data directory created and their schema migrated;
    with ``[store] cache_size`` above 0 the store is wrapped in a
    :class:`CachedStore`. The caller closes it with ``await store.aclose()``.
    """
    url = settings.store_url
    scheme = url.partition(":")[0].lower()
    store: Store
    if scheme == "memory":
        store = MemoryStore()
    elif scheme in ("redis", "rediss", "unix"):
        from daehwa.store.redis import RedisStore

        store = await RedisStore.open(
            url, prefix=settings.store.key_prefix, ttl_days=settings.store.ttl_days
        )
    elif scheme in _SQL_DRIVERS:
        from daehwa.store.sql import SqlStore

        store = await SqlStore.open(sql_url(url))
    else:
        raise ConfigError(
            f"store.url {_redacted(url)!r} has an unknown scheme {scheme!r}; use "
            "sqlite+aiosqlite:///FILE, postgresql+asyncpg://USER@HOST/DB, redis://HOST or memory://"
        )
    if settings.store.cache_size > 0:
        store = CachedStore(store, settings.store.cache_size)
    return store


def sql_url(url: str) -> str:
    """``url`` with an async driver, its SQLite directory created if missing."""
    database = sqlite_database(url)
    if database is not None:  # read without SQLAlchemy, which an SQLite store does not load
        driver, rest = url.split("://", 1)
        if database and database != ":memory:":
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        return f"{_SQL_DRIVERS.get(driver, driver)}://{rest}"
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"store.url {_redacted(url)!r} is not a valid database URL") from exc
    parsed = parsed.set(drivername=_SQL_DRIVERS.get(parsed.drivername, parsed.drivername))
    database = parsed.database
    if parsed.get_backend_name() == "sqlite" and database and database != ":memory:":
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    return parsed.render_as_string(hide_password=False)


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url.split("@")[-1]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
