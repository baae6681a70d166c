"""Shared fixtures: the real PostgreSQL and Redis servers, and every store.

- ``postgres_url`` (session): a fresh database ``daehwa_test_<random>`` on
  127.0.0.1:5432, as a ``postgresql+asyncpg://`` URL; dropped at the end.
- ``empty_postgres_url``: another empty database, for one test (migrations).
- ``redis_url`` (session) and ``redis_prefix`` (session): the Redis server and
  a key prefix unique to this run; every key under it is deleted at the end.
- ``store``: each built-in store in turn (memory, sqlite, postgres, redis,
  cached), fresh and empty for the test.
- ``sqlite_url``: a fresh, migrated SQLite file for this test.
- ``memory_store``: a fresh :class:`MemoryStore`.

Without a server its tests are skipped with the reason, unless ``CI=true``,
where they fail instead.
"""

from __future__ import annotations

import asyncio
import getpass
import itertools
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import pytest

from daehwa.store import MemoryStore, SqlStore, Store

T = TypeVar("T")

POSTGRES_HOST = os.environ.get("DAEHWA_TEST_POSTGRES_HOST", "127.0.0.1")
POSTGRES_PORT = int(os.environ.get("DAEHWA_TEST_POSTGRES_PORT", "5432"))
REDIS_URL = os.environ.get("DAEHWA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _unavailable(what: str, marker: str, exc: BaseException) -> NoReturn:
    reason = (
        f"{what} is not reachable ({type(exc).__name__}: {exc}); start it, or deselect "
        f"these tests with -m 'not {marker}'"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to the end on its own loop, in a thread (safe inside any loop)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


# -- PostgreSQL ---------------------------------------------------------------


async def _pg_admin() -> tuple[Any, str]:
    import asyncpg

    users = [os.environ.get("PGUSER"), getpass.getuser(), "postgres"]
    last: BaseException = RuntimeError("no user to try")
    for user in dict.fromkeys(u for u in users if u):
        for database in ("postgres", "test"):
            try:
                conn = await asyncpg.connect(
                    host=POSTGRES_HOST, port=POSTGRES_PORT, user=user, database=database, timeout=5
                )
            except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
                last = exc
                continue
            return conn, user
    raise last


async def _create_database(name: str) -> str:
    conn, user = await _pg_admin()
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return user


async def _drop_database(name: str) -> None:
    conn, _ = await _pg_admin()
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this run, as an SQLAlchemy async URL."""
    name = f"daehwa_test_{secrets.token_hex(6)}"
    try:
        user = _run(_create_database(name))
    except Exception as exc:
        _unavailable(f"PostgreSQL on {POSTGRES_HOST}:{POSTGRES_PORT}", "postgres", exc)
    try:
        yield f"postgresql+asyncpg://{user}@{POSTGRES_HOST}:{POSTGRES_PORT}/{name}"
    finally:
        _run(_drop_database(name))


@pytest.fixture
def empty_postgres_url(postgres_url: str) -> Iterator[str]:
    """Another fresh, empty PostgreSQL database, for this test alone."""
    name = f"daehwa_test_{secrets.token_hex(6)}"
    user = _run(_create_database(name))
    try:
        yield f"postgresql+asyncpg://{user}@{POSTGRES_HOST}:{POSTGRES_PORT}/{name}"
    finally:
        _run(_drop_database(name))


# -- Redis --------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis server's URL (database 0); tests keep to ``redis_prefix``."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        _unavailable(f"Redis at {REDIS_URL}", "redis", exc)
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture(scope="session")
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix unique to this run; everything under it is deleted at the end."""
    import redis

    prefix = f"daehwa-test-{secrets.token_hex(6)}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        batch = [key for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        for start in range(0, len(batch), 500):
            client.delete(*batch[start : start + 500])
    finally:
        client.close()


# -- stores -------------------------------------------------------------------

_migrated: set[str] = set()
_sequence = itertools.count(1)

STORE_KINDS = [
    "memory",
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("redis", marks=pytest.mark.redis),
    "cached",
]


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    """Which store the ``store`` fixture builds (one test run per kind)."""
    return str(request.param)


async def _empty_postgres(url: str) -> SqlStore:
    from sqlalchemy import text

    if url in _migrated:
        sql = SqlStore(url, pool_size=10, max_overflow=50)
    else:
        sql = await SqlStore.open(url, pool_size=10, max_overflow=50)
        _migrated.add(url)
    async with sql.engine.begin() as conn:
        await conn.execute(text("TRUNCATE messages, conversations, credentials, users"))
    return sql


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite file migrated to the newest schema, copied by each test that needs one."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"

    async def build() -> None:
        sql = await SqlStore.open(f"sqlite+aiosqlite:///{path}")
        await sql.aclose()

    _run(build())
    return path


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    """A fresh, migrated SQLite database file for this test."""
    path = tmp_path / "store.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture
async def store(
    store_kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Store]:
    """A fresh, empty store of each kind (see ``STORE_KINDS``)."""
    built: Store
    if store_kind == "memory":
        built = MemoryStore()
    elif store_kind == "sqlite":
        built = SqlStore(request.getfixturevalue("sqlite_url"))
    elif store_kind == "postgres":
        built = await _empty_postgres(request.getfixturevalue("postgres_url"))
    elif store_kind == "redis":
        from daehwa.store.redis import RedisStore

        url = request.getfixturevalue("redis_url")
        prefix = f"{request.getfixturevalue('redis_prefix')}-s{next(_sequence)}"
        built = await RedisStore.open(url, prefix=prefix, ttl_days=30)
    elif store_kind == "cached":
        from daehwa.store.cached import CachedStore

        built = CachedStore(MemoryStore(), 8)
    else:  # pragma: no cover - a typo in STORE_KINDS
        raise AssertionError(store_kind)
    try:
        yield built
    finally:
        await built.aclose()


@pytest.fixture
def memory_store() -> MemoryStore:
    """A fresh in-memory store."""
    return MemoryStore()
