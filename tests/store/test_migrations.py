"""The packaged migrations build exactly the schema of store/tables.py, and keep data."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from daehwa.messages import Conversation, Message, Role, new_id
from daehwa.store import SqlStore
from daehwa.store.migrate import (
    alembic_config,
    at_head,
    current_revision,
    head_revisions,
    include_object,
)
from daehwa.store.tables import TRIGRAM_INDEX, metadata

pytestmark = pytest.mark.filterwarnings("error")


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection,
        opts={"compare_type": True, "include_object": include_object},
    )
    return list(compare_metadata(context, metadata))


def _head() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def _check_migrates_empty_to_head(url: str) -> SqlStore:
    store = SqlStore(url)
    async with store.engine.connect() as conn:
        assert await conn.run_sync(lambda c: inspect(c).get_table_names()) == []
        assert await conn.run_sync(current_revision) is None
    await store.migrate()
    async with store.engine.connect() as conn:
        assert await conn.run_sync(current_revision) == _head()
        assert await conn.run_sync(_differences) == []
        tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    assert tables == {"alembic_version", "users", "credentials", "conversations", "messages"}
    return store


async def _check_upgrade_keeps_data(store: SqlStore) -> None:
    conversation = await store.create_conversation(Conversation(id=new_id(), user_id="u"))
    message = await store.append_message(
        Message(Role.USER, "남아 있어야 해요", conversation_id=conversation.id)
    )
    await store.migrate()  # a second start-up: nothing to do, nothing lost
    assert await store.get_message(message.id) == message


async def test_sqlite_migrates_from_empty_to_head(tmp_path: Any) -> None:
    store = await _check_migrates_empty_to_head(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")
    try:
        await _check_upgrade_keeps_data(store)
        async with store.engine.connect() as conn:
            mode = (await conn.execute(text("PRAGMA journal_mode"))).scalar()
            timeout = (await conn.execute(text("PRAGMA busy_timeout"))).scalar()
        assert (mode, timeout) == ("wal", 10_000)
    finally:
        await store.aclose()


@pytest.mark.postgres
async def test_postgres_migrates_from_empty_to_head(empty_postgres_url: str) -> None:
    store = await _check_migrates_empty_to_head(empty_postgres_url)
    try:
        await _check_upgrade_keeps_data(store)
        async with store.engine.connect() as conn:
            indexes = (
                await conn.execute(
                    text("SELECT indexname FROM pg_indexes WHERE tablename = 'messages'")
                )
            ).scalars()
            extension = (
                await conn.execute(text("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'"))
            ).first()
        # The trigram index exists exactly when the extension could be installed.
        assert (TRIGRAM_INDEX in set(indexes)) == (extension is not None)
    finally:
        await store.aclose()


async def test_sqlite_at_head_is_read_without_alembic(tmp_path: Any) -> None:
    # Start-up skips Alembic when this says the schema is current: it must agree with Alembic.
    assert head_revisions() == set(ScriptDirectory.from_config(alembic_config()).get_heads())
    path = tmp_path / "m.db"
    with sqlite3.connect(path) as db:
        assert not at_head(db)  # never migrated
    store = await SqlStore.open(f"sqlite+aiosqlite:///{path}")
    await store.aclose()
    with sqlite3.connect(path) as db:
        assert at_head(db)
        db.execute("UPDATE alembic_version SET version_num = 'older'")
        assert not at_head(db)
