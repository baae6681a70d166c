"""The SQLite store's connections: short calls on the event loop, the rest in threads."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from daehwa.messages import Conversation, Message, Role, new_id
from daehwa.store import SqlStore, sqlite_threads
from daehwa.store.sqlite import SqliteDatabase
from daehwa.store.sqlite_threads import SqliteConnections


@pytest.fixture
async def store(sqlite_url: str) -> AsyncIterator[SqlStore]:
    opened = SqlStore(sqlite_url)
    yield opened
    await opened.aclose()


def database(store: SqlStore) -> SqliteDatabase:
    db = store._db
    assert isinstance(db, SqliteDatabase)
    return db


async def test_short_calls_do_not_wait_for_a_busy_writer_thread(store: SqlStore) -> None:
    db = database(store)
    gate = threading.Event()
    held = asyncio.create_task(db.run_on_writer(lambda _: gate.wait(10)))
    try:
        async with asyncio.timeout(5):
            conversation = await store.create_conversation(Conversation(id=new_id(), user_id="u1"))
            _, reply = await store.append_messages(
                [
                    Message(Role.USER, "안녕하세요", conversation_id=conversation.id),
                    Message(Role.ASSISTANT, "", conversation_id=conversation.id),
                ]
            )
            await store.update_message(reply.id, content="반갑습니다")
            page = await store.list_messages(conversation.id)
        assert [m.content for m in page.items] == ["안녕하세요", "반갑습니다"]
        # Deleting a conversation is a long job: it waits its turn on the writer thread.
        deleting = asyncio.create_task(store.delete_conversation(conversation.id))
        await asyncio.sleep(0.2)
        assert not deleting.done()
    finally:
        gate.set()
        await held
    await deleting
    assert await store.get_conversation(conversation.id) is None
    assert db.handed_over == 0


async def test_a_locked_database_sends_the_call_to_a_thread_and_loses_nothing(
    store: SqlStore,
) -> None:
    db = database(store)
    kept = await store.create_conversation(Conversation(id=new_id(), user_id="u1"))
    other = sqlite3.connect(db.path, isolation_level=None)  # another process's writer
    try:
        other.execute("BEGIN IMMEDIATE")
        writing = asyncio.create_task(
            store.append_message(Message(Role.USER, "잠긴 동안", conversation_id=kept.id))
        )
        # The loop is not stuck waiting for the lock: it reads and waits beside it.
        assert await store.get_conversation(kept.id) == kept
        await asyncio.sleep(0.2)
        assert not writing.done()
        other.execute("COMMIT")
    finally:
        other.close()
    stored = await writing
    assert db.handed_over == 1
    assert (await store.list_messages(kept.id)).items == [stored]


async def test_the_writer_thread_checkpoints_the_loops_commits(
    store: SqlStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_threads, "CHECKPOINT_EVERY", 4)
    db = database(store)

    def checkpointed_conversations() -> int:
        """Conversations in the database file itself, without its write-ahead log."""
        copy = tmp_path / f"copy-{new_id()}.db"
        shutil.copyfile(db.path, copy)
        with sqlite3.connect(copy) as connection:
            return int(connection.execute("SELECT count(*) FROM conversations").fetchone()[0])

    await db.run_on_writer(lambda c: c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall())
    for _ in range(3):
        await store.create_conversation(Conversation(id=new_id(), user_id="u1"))
    await db.run_on_writer(lambda _: None)  # whatever the writer had queued is done
    assert (db.checkpoints, checkpointed_conversations()) == (0, 0)
    await store.create_conversation(Conversation(id=new_id(), user_id="u1"))
    await db.run_on_writer(lambda _: None)
    assert (db.checkpoints, checkpointed_conversations()) == (1, 4)


async def test_an_in_memory_database_runs_every_call_in_its_thread() -> None:
    store = await SqlStore.open("sqlite:///:memory:")
    try:
        db = database(store)
        assert not db.on_loop
        conversation = await store.create_conversation(Conversation(id=new_id(), user_id="u1"))
        assert await store.get_conversation(conversation.id) == conversation
        assert db._loop_connection is None
    finally:
        await store.aclose()


async def test_a_database_locked_as_the_loops_connection_opens_is_read_by_a_thread(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "plain.db")
    other = sqlite3.connect(path, isolation_level=None)  # not in WAL mode yet
    connections = SqliteConnections(path)
    try:
        other.execute("CREATE TABLE t (x)")
        other.execute("BEGIN EXCLUSIVE")  # nobody else may even read
        reading = asyncio.create_task(
            connections.read(lambda c: c.execute("SELECT count(*) FROM t").fetchone()[0])
        )
        await asyncio.sleep(0.2)
        assert not reading.done()
        other.execute("INSERT INTO t VALUES (1)")
        other.execute("COMMIT")
        assert await reading == 1
        assert connections.handed_over == 1
        # The writer thread turns the file to WAL as it starts (the loop's connection
        # would not wait for that either); once it is done and the lock is gone, the
        # loop's connection opens, in WAL mode.
        await connections.run_on_writer(lambda _: None)
        mode = await connections.read(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0])
        assert (mode, connections.handed_over) == ("wal", 1)
        assert connections._loop_connection is not None
    finally:
        other.close()
        await connections.aclose()
