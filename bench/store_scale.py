"""History stores at scale: append and load-last-50 latency on a large dataset.

For each store (SQLite, PostgreSQL, Redis) the benchmark bulk-loads
``--messages`` messages spread evenly over ``--conversations`` conversations
of 100 users, then measures, one call at a time, on random conversations:

- ``append``: ``append_message`` of a new user message (seq, conversation
  ``updated_at`` and every index included);
- ``last 50``: ``list_messages(limit=50)``, what each turn and each page load does;
- ``list convs``: ``list_conversations(limit=20)`` of a random user.

Each is given as p50 and p99 latency, and as the CPU time of this process per
call (all its threads; a database server's own CPU is not included).

Loading takes the fast path of each backend (SQLite ``executemany`` in one
transaction, PostgreSQL ``COPY``, Redis the store's own append script
pipelined), so a million messages load in minutes. For the SQL stores the
plans of the store's own hot statements are printed, to show each one uses an
index.

Run from the repository root (PostgreSQL and Redis on 127.0.0.1)::

    .venv/bin/python -m bench.store_scale                       # 1,000,000 messages
    .venv/bin/python -m bench.store_scale --messages 100000 --stores sqlite

A fresh PostgreSQL database and a fresh Redis key prefix are made for the run
and removed at the end (``--keep`` leaves them).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson
from sqlalchemy.engine import make_url

from daehwa.messages import Message, Role, new_id
from daehwa.store import RedisStore, SqlStore, Store
from daehwa.store import redis_scripts as lua
from daehwa.store.paging import to_micros
from daehwa.store.tables import TRIGRAM_INDEX

USERS = 100
# Plain words of chat about weather, travel and code.
VOCABULARY = (
    "서울 부산 날씨 내일 오늘 추천 맛집 여행 일정 파이썬 최적화 데이터베이스 회의 "
    "자료 요약 번역 문법 설명 예시 코드 오류 해결 방법 가격 비교 주말 계획"
)
WORDS = tuple(VOCABULARY.split())
CHUNK = 20_000
START = datetime(2025, 1, 1, tzinfo=UTC)


def texts(count: int, seed: int = 7) -> list[str]:
    """``count`` Korean sentences of 3 to 40 words."""
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(3, 40))) + "." for _ in range(count)]


class Dataset:
    """The synthetic history: ids and times are derived from the numbers."""

    def __init__(self, messages: int, conversations: int) -> None:
        self.per_conversation = max(1, messages // conversations)
        self.conversations = conversations
        self.messages = self.per_conversation * conversations
        self.conversation_ids = [f"c{n:07d}{secrets.token_hex(4)}" for n in range(conversations)]
        self.user_ids = [f"u{n:04d}{secrets.token_hex(4)}" for n in range(USERS)]
        self.contents = texts(1000)

    def owner(self, n: int) -> str:
        return self.user_ids[n % USERS]

    def created(self, conversation: int, seq: int) -> datetime:
        # Conversations take turns, so updated_at differs across them.
        step = conversation * self.per_conversation + seq
        return START + timedelta(seconds=step)

    def message_rows(self) -> Iterator[list[tuple[Any, ...]]]:
        """Chunks of (id, conversation_id, seq, role, content, created_at)."""
        chunk: list[tuple[Any, ...]] = []
        for c, cid in enumerate(self.conversation_ids):
            for seq in range(1, self.per_conversation + 1):
                role = "user" if seq % 2 else "assistant"
                content = self.contents[(c * 31 + seq) % len(self.contents)]
                chunk.append((new_id(), cid, seq, role, content, self.created(c, seq)))
                if len(chunk) >= CHUNK:
                    yield chunk
                    chunk = []
        if chunk:
            yield chunk


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Samples(list[float]):
    """Milliseconds of each call, and the CPU milliseconds of this process per call."""

    cpu: float = 0.0


async def timed(calls: int, make: Callable[[int], Awaitable[object]]) -> Samples:
    """Milliseconds of each of ``calls`` sequential awaits."""
    spent = Samples()
    cpu = time.process_time()
    for n in range(calls):
        started = time.perf_counter()
        await make(n)
        spent.append((time.perf_counter() - started) * 1000)
    spent.cpu = (time.process_time() - cpu) * 1000 / calls
    return spent


# -- loading -------------------------------------------------------------------


def _sql_time(moment: datetime, dialect: str) -> Any:
    # SQLite keeps naive UTC text in SQLAlchemy's fixed-width format.
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f") if dialect == "sqlite" else moment


async def load_sql(store: SqlStore, data: Dataset) -> None:
    """Bulk-load through the raw driver: executemany on SQLite, COPY on PostgreSQL."""
    dialect = store.dialect
    empty = "{}"
    users = [
        (uid, f"user{n}", False, None, _sql_time(START, dialect))
        for n, uid in enumerate(data.user_ids)
    ]
    conversations = [
        (
            cid,
            data.owner(c),
            f"대화 {c}",
            None,
            empty,
            None,
            "",
            0,
            data.per_conversation,
            _sql_time(data.created(c, 0), dialect),
            _sql_time(data.created(c, data.per_conversation), dialect),
        )
        for c, cid in enumerate(data.conversation_ids)
    ]
    conversation_columns = [
        "id",
        "user_id",
        "title",
        "persona",
        "variables",
        "model",
        "summary",
        "summary_seq",
        "last_seq",
        "created_at",
        "updated_at",
    ]
    message_columns = [
        "id",
        "conversation_id",
        "seq",
        "role",
        "content",
        "status",
        "metadata",
        "created_at",
        "updated_at",
    ]

    def message_records(chunk: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        return [
            (mid, cid, seq, role, content, "complete", empty, t, t)
            for mid, cid, seq, role, content, created in chunk
            for t in (_sql_time(created, dialect),)
        ]

    async with store.engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None
        if dialect == "postgresql":
            # Building the trigram index once after the load beats updating it per row.
            trigram = await raw.fetchval(
                "SELECT indexdef FROM pg_indexes WHERE indexname = $1", TRIGRAM_INDEX
            )
            if trigram:
                await raw.execute(f"DROP INDEX {TRIGRAM_INDEX}")
            await raw.copy_records_to_table(
                "users",
                records=users,
                columns=["id", "name", "is_admin", "password_hash", "created_at"],
            )
            await raw.copy_records_to_table(
                "conversations", records=conversations, columns=conversation_columns
            )
            for chunk in data.message_rows():
                await raw.copy_records_to_table(
                    "messages", records=message_records(chunk), columns=message_columns
                )
            if trigram:
                await raw.execute(trigram)
            await raw.execute("ANALYZE")
        else:
            await raw.executemany(
                "INSERT INTO users (id, name, is_admin, password_hash, created_at) "
                "VALUES (?,?,?,?,?)",
                users,
            )
            await raw.executemany(
                f"INSERT INTO conversations ({', '.join(conversation_columns)}) "
                f"VALUES ({', '.join('?' * len(conversation_columns))})",
                conversations,
            )
            for chunk in data.message_rows():
                await raw.executemany(
                    f"INSERT INTO messages ({', '.join(message_columns)}) "
                    f"VALUES ({', '.join('?' * len(message_columns))})",
                    message_records(chunk),
                )
            await raw.commit()
            await raw.execute("ANALYZE")
            await raw.commit()


async def load_redis(store: RedisStore, data: Dataset) -> None:
    """Bulk-load with the store's own scripts, pipelined (same keys and TTLs as real use)."""
    client = store.client
    create = client.register_script(lua.PRELUDE + lua.CREATE_CONVERSATION)
    append = client.register_script(lua.PRELUDE + lua.APPEND_MESSAGE)
    head: list[str | int] = [store.ttl_ms, store.slack_ms, store.prefix]
    empty: dict[str, Any] = {"title": "", "persona": None, "variables": {}, "model": None}
    fields = [
        x
        for k, v in {**empty, "summary": "", "summary_seq": 0}.items()
        for x in (k, orjson.dumps(v).decode())
    ]
    for start in range(0, data.conversations, 1000):
        pipe = client.pipeline(transaction=False)
        for c in range(start, min(start + 1000, data.conversations)):
            cid = data.conversation_ids[c]
            await create(
                args=[*head, cid, data.owner(c), to_micros(data.created(c, 0)), *fields],
                client=pipe,
            )
        await pipe.execute()
    null, no_meta = "null", "{}"
    for chunk in data.message_rows():
        pipe = client.pipeline(transaction=False)
        for n, (mid, cid, _seq, role, content, created) in enumerate(chunk, 1):
            if n % 2000 == 0:  # keep each pipeline's request small
                await pipe.execute()
            await append(
                args=[
                    *head,
                    cid,
                    mid,
                    to_micros(created),
                    "",
                    "complete",
                    "id",
                    mid,
                    "role",
                    role,
                    "content",
                    content,
                    "usage",
                    null,
                    "tool_calls",
                    null,
                    "tool_call_id",
                    null,
                    "request_id",
                    null,
                    "model",
                    null,
                    "metadata",
                    no_meta,
                ],
                client=pipe,
            )
        await pipe.execute()


# -- plans -----------------------------------------------------------------------


def _plan_statements(
    dialect: str, cid: str, uid: str, since: Any
) -> dict[str, tuple[str, tuple[Any, ...]]]:
    """The store's own hot statements, with arguments from the dataset."""
    if dialect == "postgresql":
        from daehwa.store import postgres as q

        empty: list[Any] = [None]
        return {
            "last 50 messages": (q._NEWEST, (cid, 51)),
            "messages since": (q._SINCE, (cid, since, q._NO_SEQ, 51)),
            "by request id": (q._BY_REQUEST_ID, (cid, "r")),
            "one message (get, update_message)": (q._GET_MESSAGE, ("m",)),
            "conversations of a user": (q._LIST_CONVERSATIONS, (uid, 21)),
            "append (one statement)": (
                q._APPEND,
                (cid, 1, START, ["m"], ["user"], ["x"], ["complete"], *[empty] * 5, ["{}"]),
            ),
            "streaming replies": (q._STREAMING_BEFORE, (START,)),
            "mark_interrupted()": (q._MARK_ALL, (START,)),
            "mark_interrupted(ids)": (q._MARK_THESE, (START, ["m"])),
            "search (substring)": (q._SEARCH, (uid, "%최적화 데이터%", 20)),
        }
    from daehwa.store import sqlite as q  # type: ignore[no-redef]

    return {
        "last 50 messages": (q._NEWEST, (cid, 51)),
        "messages since": (q._SINCE, (cid, since, q._NO_SEQ, 51)),
        "by request id": (q._BY_REQUEST_ID, (cid, "r")),
        "one message (get, update_message)": (q._GET_MESSAGE, ("m",)),
        "conversations of a user": (q._LIST_CONVERSATIONS, (uid, 21)),
        "append: seq counter": (q._BUMP_SEQ, (1, cid)),
        "streaming replies": (q._STREAMING_BEFORE, (since,)),
        "mark_interrupted()": (q._MARK_ALL, (since,)),
        "mark_interrupted(ids)": (q._MARK_THESE, (since, '["m"]')),
        "search (substring)": (q._SEARCH, (uid, "%최적화 데이터%", 20)),
    }


async def print_plans(store: SqlStore, data: Dataset) -> None:
    """The plans of the store's own hot statements, with the dataset's real ids."""
    cid, uid = data.conversation_ids[len(data.conversation_ids) // 2], data.owner(0)
    since = _sql_time(data.created(1, 1), store.dialect)
    statements = _plan_statements(store.dialect, cid, uid, since)
    async with store.engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None
        for name, (sql, args) in statements.items():
            if store.dialect == "postgresql":
                plan = [str(r[0]) for r in await raw.fetch(f"EXPLAIN {sql}", *args)]
            else:
                async with raw.execute(f"EXPLAIN QUERY PLAN {sql}", args) as cursor:
                    plan = [str(r[-1]) for r in await cursor.fetchall()]
            print(f"  {name}:")
            for line in plan:
                print(f"      {line}")


# -- running -------------------------------------------------------------------


async def measure(name: str, store: Store, data: Dataset, samples: int) -> dict[str, Any]:
    rng = random.Random(11)
    pick = [rng.randrange(data.conversations) for _ in range(samples)]
    contents = texts(64, seed=3)

    async def append(n: int) -> object:
        cid = data.conversation_ids[pick[n]]
        return await store.append_message(Message(Role.USER, contents[n % 64], conversation_id=cid))

    async def last50(n: int) -> object:
        return await store.list_messages(data.conversation_ids[pick[-n - 1]], limit=50)

    async def conversations(n: int) -> object:
        return await store.list_conversations(data.user_ids[pick[n] % USERS], limit=20)

    await timed(50, last50)  # warm connections and caches of the process, not the data
    results = {
        "append": await timed(samples, append),
        "last 50": await timed(samples, last50),
        "list convs": await timed(samples, conversations),
    }
    page = await store.list_messages(data.conversation_ids[pick[0]], limit=50)
    assert len(page.items) == 50, f"{name}: expected a full page, got {len(page.items)}"
    return results


async def run_sql(url: str, data: Dataset, samples: int, keep: bool) -> dict[str, Any]:
    store = await SqlStore.open(url)
    try:
        started = time.perf_counter()
        await load_sql(store, data)
        loaded = time.perf_counter() - started
        name = store.dialect
        print(f"\n{name}: loaded {data.messages:,} messages in {loaded:.1f} s; plans:")
        await print_plans(store, data)
        results = await measure(name, store, data, samples)
        return {"load": loaded, **results}
    finally:
        await store.aclose()


async def run_redis(url: str, data: Dataset, samples: int, keep: bool) -> dict[str, Any]:
    prefix = f"daehwa-bench-{secrets.token_hex(4)}"
    store = await RedisStore.open(url, prefix=prefix)
    try:
        started = time.perf_counter()
        await load_redis(store, data)
        loaded = time.perf_counter() - started
        memory = (await store.client.info("memory"))["used_memory_human"]
        print(f"\nredis: loaded {data.messages:,} messages in {loaded:.1f} s; used_memory {memory}")
        print("  every call is one Lua script: O(log n) zset ranges + one GET per message")
        results = await measure("redis", store, data, samples)
        return {"load": loaded, **results}
    finally:
        if not keep:
            await drop_redis_prefix(store)
        await store.aclose()


async def drop_redis_prefix(store: RedisStore) -> None:
    batch: list[str] = []
    async for key in store.client.scan_iter(match=f"{store.prefix}:*", count=5000):
        batch.append(key)
        if len(batch) >= 5000:
            await store.client.unlink(*batch)
            batch = []
    if batch:
        await store.client.unlink(*batch)


async def postgres_database(server_url: str, name: str, *, drop: bool = False) -> str:
    import asyncpg

    url = make_url(server_url)
    conn = await asyncpg.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        database=url.database or "postgres",
    )
    try:
        if drop:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        else:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return url.set(drivername="postgresql+asyncpg", database=name).render_as_string(
        hide_password=False
    )


async def main(args: argparse.Namespace) -> None:
    data = Dataset(args.messages, args.conversations)
    print(
        f"dataset: {data.messages:,} messages in {data.conversations:,} conversations "
        f"({data.per_conversation} each) of {USERS} users; {args.samples} samples per figure"
    )
    report: dict[str, dict[str, Any]] = {}
    metrics = ("append", "last 50", "list convs")

    def row(name: str, figures: dict[str, Any]) -> str:
        cells = [f"{figures['load']:.0f}"]
        for metric in metrics:
            samples = figures[metric]
            cells += [f"{percentile(samples, 0.5):.2f}", f"{percentile(samples, 0.99):.2f}"]
        cells += [f"{figures[metric].cpu:.2f}" for metric in metrics]
        return f"| {name} | " + " | ".join(cells) + " |"

    for kind in args.stores.split(","):
        if kind == "sqlite":
            with tempfile.TemporaryDirectory() as folder:
                url = f"sqlite+aiosqlite:///{folder}/bench.db"
                report["SQLite"] = await run_sql(url, data, args.samples, args.keep)
                print(row("SQLite", report["SQLite"]), flush=True)
        elif kind == "postgres":
            name = f"daehwa_bench_{secrets.token_hex(4)}"
            url = await postgres_database(args.postgres, name)
            try:
                report["PostgreSQL"] = await run_sql(url, data, args.samples, args.keep)
                print(row("PostgreSQL", report["PostgreSQL"]), flush=True)
            finally:
                if not args.keep:
                    await postgres_database(args.postgres, name, drop=True)
        elif kind == "redis":
            report["Redis"] = await run_redis(args.redis, data, args.samples, args.keep)
            print(row("Redis", report["Redis"]), flush=True)
        else:
            raise SystemExit(f"unknown store {kind!r}; use sqlite, postgres, redis")

    print(f"\n{data.messages:,} messages, {data.conversations:,} conversations, ms per call:")
    header = " | ".join(f"{m} p{q}" for m in metrics for q in (50, 99))
    cpu = " | ".join(f"{m} CPU" for m in metrics)
    print(f"| store | load (s) | {header} | {cpu} |")
    print("|---|" + "---:|" * 10)
    for name, figures in report.items():
        print(row(name, figures))


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--stores", default="sqlite,postgres,redis")
    parser.add_argument(
        "--postgres",
        default="postgresql://127.0.0.1:5432/postgres",
        help="a server URL; the benchmark makes and drops its own database there",
    )
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--keep", action="store_true", help="leave the data behind")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
