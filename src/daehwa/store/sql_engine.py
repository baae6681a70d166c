"""How :class:`~daehwa.store.sql.SqlStore` reaches its database beyond the store's own calls.

The driver's connection options read from the store's URL, the SQLAlchemy
engine that migrations and tools use, and the migration itself. SQLAlchemy
and Alembic are imported only when an engine is made or a migration has to
run: an SQLite server whose database is current never loads them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from daehwa.errors import StoreError
from daehwa.store.migrate import at_head, head_revisions, upgrade
from daehwa.store.sqlite import SqliteDatabase
from daehwa.store.sqlite_threads import BUSY_TIMEOUT_MS

if TYPE_CHECKING:
    from sqlalchemy.engine import URL
    from sqlalchemy.ext.asyncio import AsyncEngine

    from daehwa.store.postgres import PostgresDatabase

log = logging.getLogger(__name__)

# The SQLAlchemy driver of each dialect the store supports.
_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}

# URL query parameters that are asyncpg's own connection arguments; any other
# is a PostgreSQL setting for the store's sessions (``?synchronous_commit=off``).
_CONNECT_QUERY = frozenset({"ssl", "host", "port", "user", "password", "database"})


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def engine_for(url: URL, dialect: str) -> AsyncEngine:
    """An SQLAlchemy engine on the store's database, with the store's session settings."""
    from sqlalchemy import event
    from sqlalchemy.ext.asyncio import create_async_engine

    url = url.set(drivername=_DRIVERS[dialect])
    options: dict[str, Any] = {}
    if dialect == "postgresql" and (settings := server_settings(url)):
        url = url.difference_update_query(settings)
        options["connect_args"] = {"server_settings": settings}
    engine = create_async_engine(
        url, json_serializer=_dumps, json_deserializer=orjson.loads, **options
    )
    if dialect == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


async def migrate_database(
    db: SqliteDatabase | PostgresDatabase, engine: Callable[[], AsyncEngine]
) -> None:
    """Bring ``db``'s schema up to the newest migration, through ``engine()`` if it must."""
    if isinstance(db, SqliteDatabase) and db.memory:
        await db.run_on_writer(_migrate_sqlite_connection)
        return
    if await _at_head(db):
        # Already current: no engine and no Alembic loaded (together ~40 MB at rest).
        return
    from sqlalchemy.exc import SQLAlchemyError

    migrating = engine()
    try:
        async with migrating.begin() as conn:
            await conn.run_sync(upgrade)
    except (SQLAlchemyError, OSError) as exc:
        log.warning("sql store migration failed: %s", exc)
        raise StoreError("the history store cannot be migrated; the log says why") from exc
    finally:
        # Give the migration's connections back; the store has its own.
        await migrating.dispose()


async def _at_head(db: SqliteDatabase | PostgresDatabase) -> bool:
    if isinstance(db, SqliteDatabase):
        return await db.run_on_writer(at_head)
    return await db.schema_revisions() == head_revisions()


def server_settings(url: URL) -> dict[str, str]:
    """The PostgreSQL settings given as query parameters of the URL."""
    return {
        name: value if isinstance(value, str) else value[-1]
        for name, value in url.query.items()
        if name not in _CONNECT_QUERY
    }


def asyncpg_options(url: URL) -> dict[str, Any]:
    """asyncpg's ``connect()`` arguments for a ``postgresql://`` URL."""
    options: dict[str, Any] = url.translate_connect_args(username="user", database="database")
    for name in _CONNECT_QUERY:
        value = url.query.get(name)
        if value is not None:
            options[name] = value if isinstance(value, str) else value[-1]
    if "port" in options:
        options["port"] = int(options["port"])
    settings = server_settings(url)
    if settings:
        options["server_settings"] = settings
    return options


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # The engine's connections wait for the store's writer like the store's own do.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _migrate_sqlite_connection(connection: Any) -> None:
    """Migrate the one connection of an in-memory database, through SQLAlchemy."""
    from sqlalchemy import create_engine as create_sync_engine
    from sqlalchemy.pool import StaticPool

    engine = create_sync_engine("sqlite://", creator=lambda: connection, poolclass=StaticPool)
    with engine.connect() as conn:
        conn.exec_driver_sql("BEGIN")
        upgrade(conn)
        conn.exec_driver_sql("COMMIT")
