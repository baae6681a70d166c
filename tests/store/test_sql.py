"""SqlStore beyond the contract: data written by SQLAlchemy, queueing, failures."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from daehwa.errors import StoreError
from daehwa.messages import Conversation, Message, MessageStatus, Role, ToolCall, Usage, new_id
from daehwa.store import SqlStore
from daehwa.store.tables import conversations, messages


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def sql_store(request: pytest.FixtureRequest) -> SqlStore:
    if request.param == "sqlite":
        return SqlStore(request.getfixturevalue("sqlite_url"))
    from tests.conftest import _empty_postgres

    return await _empty_postgres(request.getfixturevalue("postgres_url"))


async def test_rows_written_through_sqlalchemy_read_the_same(sql_store: SqlStore) -> None:
    """Databases written by earlier versions (through SQLAlchemy's types) stay readable."""
    store = sql_store
    try:
        cid, mid = new_id(), new_id()
        moment = datetime(2025, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
        async with store.engine.begin() as conn:
            await conn.execute(
                insert(conversations).values(
                    id=cid, user_id="u1", title="예전 대화", persona=None,
                    variables={"도시": "부산"}, model=None, summary="", summary_seq=0,
                    last_seq=1, created_at=moment, updated_at=moment,
                )
            )  # fmt: skip
            await conn.execute(
                insert(messages).values(
                    id=mid, conversation_id=cid, seq=1, role="assistant", content="안녕하세요",
                    status="streaming", usage={"prompt_tokens": 3, "completion_tokens": 4},
                    tool_calls=[{"id": "c1", "name": "날씨", "arguments": {"도시": "부산"}}],
                    tool_call_id=None, request_id="r1", model="m", metadata={"tokens": 9},
                    created_at=moment, updated_at=moment,
                )
            )  # fmt: skip
        conversation = await store.get_conversation(cid)
        assert conversation is not None
        assert (conversation.variables, conversation.created_at) == ({"도시": "부산"}, moment)
        message = await store.get_message(mid)
        assert message == Message(
            Role.ASSISTANT, "안녕하세요", mid, cid, MessageStatus.STREAMING, 1, moment,
            Usage(3, 4), [ToolCall("c1", "날씨", {"도시": "부산"})], None, "r1", "m", {"tokens": 9},
        )  # fmt: skip
        # Times compare as times: an older streaming reply is found, a newer one is not.
        assert await store.streaming_replies(created_before=moment) == []
        later = datetime(2025, 3, 1, 12, 30, 15, 123457, tzinfo=UTC)
        assert await store.streaming_replies(created_before=later) == [mid]
        # And what the store writes, SQLAlchemy reads back as the same values.
        appended = await store.append_message(
            Message(Role.USER, "새 질문", conversation_id=cid, metadata={"출처": ["웹"]})
        )
        assert appended.seq == 2
        assert appended.created_at > moment
        async with store.engine.connect() as conn:
            row = (await conn.execute(select(messages).where(messages.c.id == appended.id))).one()
            head = (
                await conn.execute(select(conversations).where(conversations.c.id == cid))
            ).one()
        assert (row.seq, row.content, row.metadata, row.usage) == (
            2,
            "새 질문",
            {"출처": ["웹"]},
            None,
        )
        assert row.created_at == appended.created_at
        assert (head.last_seq, head.updated_at) == (2, appended.created_at)
    finally:
        await store.aclose()


async def test_far_more_callers_than_connections_queue_and_all_succeed(
    request: pytest.FixtureRequest, sql_store: SqlStore
) -> None:
    store = sql_store
    if store.dialect == "postgresql":
        await store.aclose()
        store = SqlStore(request.getfixturevalue("postgres_url"), pool_size=1, max_overflow=1)
    try:
        conversation = await store.create_conversation(Conversation(id=new_id(), user_id="u1"))

        async def turn(n: int) -> int:
            stored = await store.append_messages(
                [
                    Message(Role.USER, f"질문 {n}", conversation_id=conversation.id),
                    Message(Role.ASSISTANT, "", conversation_id=conversation.id),
                ]
            )
            await store.update_message(stored[1].id, content=f"답 {n}")
            page = await store.list_messages(conversation.id, limit=5)
            assert page.items
            return stored[0].seq

        seqs = await asyncio.gather(*(turn(n) for n in range(150)))
        assert sorted(seqs) == list(range(1, 300, 2))
        page = await store.list_messages(conversation.id, limit=300)
        assert [m.seq for m in page.items] == list(range(1, 301))
        assert all(m.content for m in page.items)
    finally:
        await store.aclose()


async def test_an_unusable_sqlite_file_is_a_store_error(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite:///{tmp_path / 'missing' / 'store.db'}")
    try:
        with pytest.raises(StoreError):
            await store.get_conversation("c1")
        with pytest.raises(StoreError):
            await store.create_conversation(Conversation(id=new_id(), user_id="u1"))
    finally:
        await store.aclose()


@pytest.mark.postgres
async def test_an_unreachable_postgres_is_a_store_error() -> None:
    store = SqlStore("postgresql://nobody@127.0.0.1:1/none")
    try:
        with pytest.raises(StoreError):
            await store.get_conversation("c1")
    finally:
        await store.aclose()


async def test_a_closed_store_refuses_calls(sql_store: SqlStore) -> None:
    await sql_store.get_conversation("c1")
    await sql_store.aclose()
    with pytest.raises(StoreError):
        await sql_store.get_conversation("c1")


async def test_an_in_memory_sqlite_database_keeps_its_data() -> None:
    store = await SqlStore.open("sqlite:///:memory:")
    try:
        conversation = await store.create_conversation(Conversation(id=new_id(), user_id="u1"))
        said = await store.append_message(
            Message(Role.USER, "안녕", conversation_id=conversation.id)
        )
        assert (await store.list_messages(conversation.id)).items == [said]
    finally:
        await store.aclose()


@pytest.mark.postgres
async def test_postgres_recovers_from_dropped_connections(postgres_url: str) -> None:
    import asyncpg

    from tests.conftest import _empty_postgres

    store = await _empty_postgres(postgres_url)
    try:
        conversation = await store.create_conversation(Conversation(id=new_id(), user_id="u1"))
        database = store.url.database
        admin = await asyncpg.connect(host=store.url.host, port=store.url.port, user="postgres")
        try:
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                database,
            )
        finally:
            await admin.close()
        assert killed >= 1
        # Every pooled connection is dead now; reads find live ones without an error.
        for _ in range(12):
            assert await store.get_conversation(conversation.id) == conversation
        assert (await store.list_messages(conversation.id)).items == []
    finally:
        await store.aclose()


@pytest.mark.postgres
async def test_postgres_settings_in_the_url_apply_to_the_store_sessions(postgres_url: str) -> None:
    import asyncpg

    name = f"daehwa-{new_id()[:8]}"
    store = await SqlStore.open(f"{postgres_url}?application_name={name}&synchronous_commit=off")
    try:
        await store.get_conversation("c1")
        admin = await asyncpg.connect(host=store.url.host, port=store.url.port, user="postgres")
        try:
            sessions = await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", name
            )
        finally:
            await admin.close()
        assert sessions >= 1
        with pytest.raises(StoreError):
            await SqlStore.open(f"{postgres_url}?no_such_setting=1")
    finally:
        await store.aclose()


async def test_cancelled_callers_leave_no_gap_and_no_broken_connection(sql_store: SqlStore) -> None:
    store = sql_store
    try:
        conversation = await store.create_conversation(Conversation(id=new_id(), user_id="u1"))
        calls = [
            asyncio.create_task(
                store.append_message(
                    Message(Role.USER, f"메시지 {n}", conversation_id=conversation.id)
                )
            )
            for n in range(40)
        ]
        await asyncio.sleep(0)
        for call in calls[::2]:
            call.cancel()
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(o, Message | asyncio.CancelledError) for o in outcomes)
        # Whatever was stored took consecutive seqs; the store goes on working.
        page = await store.list_messages(conversation.id, limit=100)
        seqs = [m.seq for m in page.items]
        assert seqs == list(range(1, len(seqs) + 1))
        assert {m.seq for m in outcomes if isinstance(m, Message)} <= set(seqs)
        after = await store.append_message(
            Message(Role.USER, "다음", conversation_id=conversation.id)
        )
        assert after.seq == len(seqs) + 1
    finally:
        await store.aclose()
