"""Where daehwa's streaming CPU goes: profile areas and the micro-costs behind them.

``profile_summary`` turns a py-spy raw file (``bench.streaming --profile``) into
shares by area (store, content filter, upstream client, uvicorn, ...). The
command line measures, each in this process, the pieces the profile points at:

- ``store``: CPU per call of the SQLite store's per-turn operations through
  ``SqlStore`` (SQLAlchemy async + aiosqlite), against the same primary-key
  read through bare aiosqlite and bare sqlite3;
- ``filter``: CPU per streamed token of the output filter (``StreamFilter``)
  on the fake upstream's reply, with the benchmark's 100,000-word list and
  with one word;
- ``relay``: CPU per token of daehwa's relay with no sockets: a model that
  yields 200 chunks → ``ReplyStreamer`` (resilience wrapper, stall deadline)
  → run log → a follower that encodes SSE frames;
- ``upstream``: CPU of decoding one paced read of an OpenAI-compatible
  stream (five chat-completion events, as 0.1 s of a 50 tokens/s reply
  arrives): SSE decoding, each event's chunk, and joining them into one;
- ``hop``: one asyncio → thread → asyncio round trip (what aiosqlite does
  per DBAPI call);
- ``statements``: the SQL statements and transactions one SSE turn runs on
  the SQLite store, counted with sqlite3's trace callback on every connection
  the store opens (in-process app, the fake upstream's scenario of record);
- ``turn``: CPU per chat turn with no socket at all: ``POST
  /v1/conversations/{id}/messages`` (SSE) sent straight into the ASGI app, two
  turns per conversation, one after the other, the scripted model answering
  four words, on SQLite. What the turn's own code costs
  (HTTP routing, auth, the store, context, run, filter, SSE frames), against
  the ~2.5 ms a turn costs under ``bench.streaming`` (docs/performance.md).
  Then 60 turns in each of 20 conversations, without and with ``[store]
  cache_size``: what a long history costs a turn, and what the cache saves;
- ``runlog``: the time of a full collection of the cycle collector with the
  in-memory run logs of ``--runs`` replies of 45 events (meta, step, 42
  deltas, done) kept, once while they are still open and once finished;
- ``bursts``: from ``bench.streaming --replies FILE`` (``--file``), when the
  slowest first tokens were asked for, and, with ``--gc`` (a log of
  ``bench/gc_log``), the collections of 10 ms or more;
- ``wakes``: the CPU one wake-up of a sleeping process costs, by how long it
  slept: a thread in ``time.sleep``, and an event loop (uvloop) in
  ``asyncio.sleep`` doing nothing else. What a lightly loaded server pays per
  wake-up before its own work, and why its CPU per token rises as the load falls;
- ``pool``: the upstream client with 500 idle keep-alive connections to the fake
  upstream, and the CPU of the next request before and after they expire
  (``idle_timeout`` of 1 s): what a request pays for the pool's expired connections.

    python -m bench.streaming_costs store filter relay upstream hop statements turn runlog
    python -m bench.streaming_costs wakes pool
"""

from __future__ import annotations

import argparse
import asyncio
import queue
import re
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

# Where a profile sample's time goes: the leaf-most frame of a known area names it.
AREAS = (
    ("content filter", ("guard/",)),
    ("store", ("store/", "sqlalchemy/", "aiosqlite/", "asyncpg/", "sqlite3/")),
    ("auth", ("accounts.py", "api/deps.py")),
    ("context build", ("context/",)),
    ("upstream client, SSE decode, chunks", ("llm/http", "llm/sse.py", "llm/openai")),
    ("resilience wrapper", ("llm/resilience", "llm/bulkhead", "llm/breaker", "llm/upstreams")),
    ("run log", ("chat/runs.py",)),
    ("relay (generate, reply)", ("chat/generate.py", "chat/reply.py", "chat/stats.py")),
    ("turn set-up and answer (service)", ("chat/service.py", "chat/answer.py")),
    ("SSE response and encoder", ("api/sse.py",)),
    ("WebSocket endpoint", ("api/ws.py",)),
    ("other daehwa API", ("api/",)),
    ("uvicorn (HTTP parse, send)", ("uvicorn/", "websockets/")),
    ("starlette / fastapi layers", ("starlette/", "fastapi/")),
)


def _area(frames: list[str]) -> str:
    # Frames above the event loop's run() (the CLI, uvicorn's start-up) name no area.
    for index, frame in enumerate(frames):
        if frame.startswith("Runner.run ") or "_connection_worker_thread" in frame:
            frames = frames[index:]
            break
    for frame in reversed(frames):
        where = frame.rsplit("(", 1)[-1]
        for name, markers in AREAS:
            if where.startswith(markers):
                return name
    return "event loop (uvloop: epoll, socket I/O, callbacks)"


def profile_summary(path: Path, top: int = 20) -> str:
    """Sample shares by area and by function from a py-spy raw file (GIL holder only)."""
    own: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")[1:]  # the first is the thread
        if not frames:
            continue
        n = int(count)
        samples += n
        own[frames[-1].rsplit(":", 1)[0] + ")"] += n
        areas[_area(frames)] += n
    total = max(samples, 1)
    lines = [f"{samples} samples of the thread holding the GIL", "-- by area"]
    lines += [f"{100 * n / total:5.1f}%  {name}" for name, n in areas.most_common()]
    lines.append("-- by function (self time)")
    lines += [f"{100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    return "\n".join(lines)


# -- micro-costs ------------------------------------------------------------------
async def _per_call(fn: Callable[[], Awaitable[object]], n: int) -> float:
    """Median over 5 rounds of the CPU milliseconds per call (all threads of this process)."""
    rounds = []
    for _ in range(5):
        started = time.process_time()
        for _ in range(n):
            await fn()
        rounds.append(1e3 * (time.process_time() - started) / n)
    return statistics.median(rounds)


async def store_costs() -> None:
    """CPU per call of the per-turn store operations on SQLite."""
    import aiosqlite

    from daehwa.messages import Conversation, Message, MessageStatus, Role, User, new_id
    from daehwa.store.sql import SqlStore

    path = Path(tempfile.mkdtemp(prefix="daehwa-costs-")) / "store.db"
    store = await SqlStore.open(f"sqlite+aiosqlite:///{path}")
    user = await store.create_user(User(id=new_id(), name="bench"))
    conversation = await store.create_conversation(
        Conversation(id=new_id(), user_id=user.id, title="bench")
    )
    reply = await store.append_message(
        Message(Role.ASSISTANT, "", id=new_id(), conversation_id=conversation.id,
                status=MessageStatus.STREAMING)
    )  # fmt: skip
    cid = conversation.id

    def user_message() -> Message:
        return Message(Role.USER, "서울 날씨 알려줘", id=new_id(), conversation_id=cid)

    checkpoint = "안녕" * 200
    rows = [
        ("SqlStore.get_conversation", await _per_call(lambda: store.get_conversation(cid), 200)),
        (
            "SqlStore.append_message",
            await _per_call(lambda: store.append_message(user_message()), 100),
        ),
        (
            "SqlStore.update_message (a checkpoint)",
            await _per_call(lambda: store.update_message(reply.id, content=checkpoint), 200),
        ),
    ]
    short = await store.create_conversation(
        Conversation(id=new_id(), user_id=user.id, title="short")
    )
    for _ in range(6):
        await store.append_message(
            Message(Role.USER, "안녕", id=new_id(), conversation_id=short.id)
        )
    rows.append(
        (
            "SqlStore.list_messages, 6 messages",
            await _per_call(lambda: store.list_messages(short.id, limit=400), 100),
        )
    )
    count = len((await store.list_messages(cid, limit=400)).items)
    rows.append(
        (
            f"SqlStore.list_messages, {count} messages",
            await _per_call(lambda: store.list_messages(cid, limit=400), 20),
        )
    )
    await store.aclose()
    async with aiosqlite.connect(path) as db:

        async def bare_read() -> None:
            async with db.execute("SELECT * FROM conversations WHERE id = ?", (cid,)) as cursor:
                await cursor.fetchone()

        rows.append(("the same read, bare aiosqlite", await _per_call(bare_read, 200)))
    import sqlite3

    con = sqlite3.connect(path)
    started = time.process_time()
    for _ in range(2000):
        con.execute("SELECT * FROM conversations WHERE id = ?", (cid,)).fetchone()
    rows.append(("the same read, sqlite3 in the loop's thread",
                 1e3 * (time.process_time() - started) / 2000))  # fmt: skip
    con.close()
    print("store operation                                  CPU ms per call (all threads)")
    for name, ms in rows:
        print(f"  {name:46s} {ms:7.3f}")


def filter_costs() -> None:
    """CPU per token of the output filter on the fake upstream's reply."""
    from bench.guard_data import banned_words
    from tests.fakes.openai_upstream import DEFAULT_TEXT

    from daehwa.guard import ContentFilter, StreamFilter

    base = [DEFAULT_TEXT[i : i + 2] for i in range(0, len(DEFAULT_TEXT), 2)]
    pieces = [base[i % len(base)] for i in range(200)]
    for label, words in (("100,000 words", banned_words(100_000)), ("1 word", ["바보"])):
        content_filter = ContentFilter(words)
        rounds = []
        for _ in range(5):
            started = time.process_time()
            for _ in range(20):
                stream = StreamFilter(content_filter)
                for piece in pieces:
                    stream.feed(piece)
                stream.flush()
            rounds.append(1e6 * (time.process_time() - started) / (20 * len(pieces)))
        print(f"StreamFilter.feed, {label:14s} {statistics.median(rounds):6.1f} µs per token")


def upstream_costs(events: int = 5) -> None:
    """CPU of decoding one paced read of a chat-completion stream, and of its parts."""
    import orjson

    from daehwa.llm.base import joined_chunks, piece_chunks
    from daehwa.llm.openai_stream import ChunkReader
    from daehwa.llm.sse import SSEDecoder

    def event(n: int) -> bytes:
        chunk = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": "bench",
            "choices": [{"index": 0, "delta": {"content": f"토큰{n} "}, "finish_reason": None}],
        }
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    read = b"".join(event(n) for n in range(events))
    decoder, reader = SSEDecoder(), ChunkReader("bench")
    data = decoder.feed_data(read)
    chunks = [reader.read(d) for d in data]

    def whole() -> None:
        reader.read_events(decoder.feed_data(read))

    def one_by_one() -> None:
        list(piece_chunks(reader.read, decoder.feed_data(read), lambda: None))

    parts: list[tuple[str, Callable[[], object]]] = [
        ("the whole read", whole),
        ("  (each event read alone, then joined)", one_by_one),
        (f"  ChunkReader.read_events x{events}", lambda: reader.read_events(data)),
        ("  SSEDecoder.feed_data", lambda: decoder.feed_data(read)),
        ("  (SSEDecoder.feed, every field)", lambda: [e.data for e in decoder.feed(read)]),
        (f"  ChunkReader.read x{events}", lambda: [reader.read(d) for d in data]),
        (f"    of which orjson.loads x{events}", lambda: [orjson.loads(d) for d in data]),
        ("  joined_chunks", lambda: joined_chunks(chunks)),
    ]
    for label, fn in parts:
        rounds = []
        for _ in range(5):
            started = time.process_time()
            for _ in range(20_000):
                fn()
            rounds.append(1e6 * (time.process_time() - started) / 20_000)
        print(f"{label:34s} {statistics.median(rounds):6.1f} µs per read of {events} events")


async def relay_costs(concurrency: int = 50, tokens: int = 200) -> None:
    """CPU per token of the relay, sockets excluded, against the bare model loop."""
    from daehwa.api.sse import encode_event
    from daehwa.chat.generate import ReplyStreamer
    from daehwa.chat.reply import Outcome
    from daehwa.chat.runs import MemoryRunLog, Run, RunRegistry
    from daehwa.chat.stats import TurnStats
    from daehwa.config import ModelSettings, Settings
    from daehwa.llm.base import Chunk, GenerationParams
    from daehwa.llm.resilience import ResilientModel
    from daehwa.messages import Message, Role, Usage

    class Model:
        name = "bench"

        async def stream(self, messages: object, params: object) -> AsyncIterator[Chunk]:
            for _ in range(tokens):
                await asyncio.sleep(0)  # each token arrives in its own loop iteration
                yield Chunk(text="안녕")
            yield Chunk(finish_reason="stop", usage=Usage(1, tokens))

        async def aclose(self) -> None:
            return None

    class Source:
        def __init__(self, model: Any) -> None:
            self.model = model

        def get(self, name: str) -> Any:
            return self.model

    settings = Settings(
        models={"bench": ModelSettings(provider="scripted")}, chat={"default_model": "bench"}
    )
    streamer = ReplyStreamer(settings, None, Source(ResilientModel(Model())), TurnStats())  # type: ignore[arg-type]
    history = [Message(Role.USER, "안녕")]

    async def one(runs: RunRegistry, number: int) -> None:
        async def body(run: Run) -> None:
            outcome = Outcome()
            await streamer.generate(run, "bench", history, GenerationParams(), outcome)
            await run.emit(outcome.terminal_event(run.id))

        run = await runs.start(f"r{number}", f"c{number}", body)
        async for envelope in runs.log.follow(run.id):
            encode_event(envelope)

    async def bare() -> None:
        async for _ in Model().stream(None, None):
            pass

    rounds, floors = [], []
    for _ in range(5):
        runs = RunRegistry(MemoryRunLog())
        started = time.process_time()
        await asyncio.gather(*(one(runs, n) for n in range(concurrency)))
        rounds.append(1e6 * (time.process_time() - started) / (concurrency * tokens))
        started = time.process_time()
        await asyncio.gather(*(bare() for _ in range(concurrency)))
        floors.append(1e6 * (time.process_time() - started) / (concurrency * tokens))
    relay, floor = statistics.median(rounds), statistics.median(floors)
    print(f"relay, no sockets: {relay:.1f} µs per token, of which the model loop {floor:.1f}")


async def hop_costs(n: int = 2000) -> None:
    """One asyncio → worker thread → asyncio round trip, as aiosqlite makes per call."""
    loop = asyncio.get_running_loop()
    jobs: queue.SimpleQueue[Callable[[], object] | None] = queue.SimpleQueue()

    def worker() -> None:
        while (job := jobs.get()) is not None:
            job()

    thread = threading.Thread(target=worker)
    thread.start()
    started = time.process_time()
    for _ in range(n):
        done = loop.create_future()
        jobs.put_nowait(lambda done=done: loop.call_soon_threadsafe(done.set_result, None))
        await done
    print(f"thread hop: {1e6 * (time.process_time() - started) / n:.0f} µs CPU per round trip")
    jobs.put(None)
    thread.join()


async def _app_with_user(model: str, store: str = "") -> tuple[Any, Any, str]:
    """The app on a SQLite store in a new directory, one model (``model``: its TOML
    keys) as the default, and the API key of a new user; ``store``: [store] keys."""
    from daehwa.accounts import Accounts
    from daehwa.api.app import create_app
    from daehwa.config import load_settings
    from daehwa.store import open_store

    folder = Path(tempfile.mkdtemp(prefix="daehwa-costs-"))
    config = folder / "daehwa.toml"
    config.write_text(
        f'[server]\ndata_dir = "{folder}"\nbootstrap_user = ""\n[models.bench]\n{model}'
        f'[chat]\ndefault_model = "bench"\n[context]\nrecall = false\n[store]\n{store}',
        encoding="utf-8",
    )
    settings = load_settings(config)
    store = await open_store(settings)
    key = (await Accounts(store).create_user("bench")).api_key
    return create_app(settings, store=store), store, key


async def statement_counts(turns: int = 3) -> None:
    """The SQL statements each SSE turn runs on SQLite, by kind."""
    import sqlite3

    import httpx
    from tests.fakes.openai_upstream import FakeOpenAIUpstream

    seen: Counter[str] = Counter()
    seen_lock = threading.Lock()

    def count(statement: str) -> None:
        verb = statement.split(None, 1)[0].upper() if statement.strip() else "?"
        if verb in ("BEGIN", "COMMIT", "ROLLBACK", "PRAGMA"):
            kind = verb
        else:
            table = re.search(r"\b(?:FROM|UPDATE|INTO)\s+\"?(\w+)", statement, re.IGNORECASE)
            what = ", ".join(re.findall(r"\bSET\s+\"?(\w+)", statement, re.IGNORECASE)) or "-"
            kind = f"{verb} {table.group(1) if table else '?'} ({what})"
        with seen_lock:  # the store's worker threads call this
            seen[kind] += 1

    connect = sqlite3.connect

    def traced(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        connection = connect(*args, **kwargs)
        connection.set_trace_callback(count)
        return connection

    sqlite3.connect = traced  # every connection the store opens from here on

    scenario = "text tokens=200 delay=0.02 ttft=0.05"
    async with FakeOpenAIUpstream(default=scenario) as upstream:
        model = f'provider = "openai"\nbase_url = "{upstream.base_url}"\nmodel = "bench"\n'
        app, store, key = await _app_with_user(model)
        headers = {"Authorization": f"Bearer {key}"}
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://bench", headers=headers
            ) as client,
        ):
            created = await client.post("/v1/conversations", json={})
            path = f"/v1/conversations/{created.json()['id']}/messages"
            for turn in range(turns):
                seen.clear()
                async with client.stream(
                    "POST", path, json={"content": "안녕"}, headers={"Accept": "text/event-stream"}
                ) as response:
                    async for _ in response.aiter_bytes():
                        pass
                await asyncio.sleep(1.0)  # the after-turn upkeep runs in the background
                control = ("BEGIN", "COMMIT", "ROLLBACK", "PRAGMA")
                statements = sum(n for kind, n in seen.items() if kind not in control)
                print(f"turn {turn + 1}: {statements} statements, {seen['BEGIN']} transactions")
                for kind, n in sorted(seen.items()):
                    print(f"  {n:3d}  {kind}")
        await store.aclose()


async def turn_costs(conversations: int = 300, turns: int = 2, cache_size: int = 0) -> None:
    """CPU per SSE turn sent straight into the app: no socket, no upstream client.

    ``turns`` per conversation, round by round; the CPU of the last round is also
    given apart (the turn with the longest history).
    """
    import orjson

    from daehwa import collector

    app, store, key = await _app_with_user(
        'provider = "scripted"\nreply = "안녕하세요, 오늘 날씨는 맑습니다."\n',
        f"cache_size = {cache_size}\n",
    )
    headers = [
        (b"host", b"bench"),
        (b"authorization", f"Bearer {key}".encode()),
        (b"content-type", b"application/json"),
        (b"accept", b"text/event-stream"),
    ]

    async def call(path: str, body: bytes) -> list[dict[str, Any]]:
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
            "query_string": b"", "root_path": "", "headers": headers,
            "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2), "state": {},
        }  # fmt: skip
        ended = asyncio.Event()
        requests = [{"type": "http.request", "body": body, "more_body": False}]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            if requests:
                return requests.pop()
            await ended.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                ended.set()

        await app(scope, receive, send)
        return sent

    async def conversation() -> str:
        sent = await call("/v1/conversations", b"{}")
        return str(orjson.loads(sent[1]["body"])["id"])

    body = '{"content": "안녕, 오늘 날씨 어때?"}'.encode()
    async with app.router.lifespan_context(app):
        for _ in range(20):  # warm up
            await call(f"/v1/conversations/{await conversation()}/messages", body)
        ids = [await conversation() for _ in range(conversations)]
        collector.settle()  # as `daehwa serve` does once started
        await asyncio.sleep(0.5)  # the warm-up's after-turn upkeep
        started = time.process_time()
        for _ in range(turns):
            last = time.process_time()
            for conversation_id in ids:
                sent = await call(f"/v1/conversations/{conversation_id}/messages", body)
                assert b"event: done" in sent[-1]["body"], sent[-1]
            await asyncio.sleep(0.05)  # the upkeep of the round's turns
        now = time.process_time()
    await store.aclose()
    every = (now - started) / (turns * conversations) * 1e6
    print(
        f"SSE turns in-process (SQLite, cache_size {cache_size}), {turns} per conversation: "
        f"{every:.0f} µs CPU each, {(now - last) / conversations * 1e6:.0f} µs in the last round"
    )


async def runlog_costs(runs: int) -> None:
    """A full collection's time with ``runs`` replies' logs kept, open and then finished."""
    import gc

    from daehwa.chat.runs import MemoryRunLog
    from daehwa.events import Delta, Done, Envelope, Meta, Step

    log = MemoryRunLog()
    for n in range(runs):
        run_id = f"run-{n}"
        await log.open(run_id)
        events = [
            Meta("conversation", "message", run_id, "up"),
            Step("context", {"messages": 3, "input_tokens": 120}),
            *(Delta("안녕하세요, 오늘 ") for _ in range(42)),
            Done(run_id, "complete", "stop", {"prompt_tokens": 120, "completion_tokens": 200}),
        ]
        for seq, event in enumerate(events, 1):
            await log.append(run_id, Envelope.of(seq, event))

    def full_collection() -> tuple[float, int]:
        gc.collect()
        times = []
        for _ in range(3):
            started = time.perf_counter()
            gc.collect()
            times.append(1e3 * (time.perf_counter() - started))
        return statistics.median(times), len(gc.get_objects())

    open_ms, open_objects = full_collection()
    for n in range(runs):
        await log.finish(f"run-{n}")
    finished_ms, finished_objects = full_collection()
    print(f"{runs:,} replies' run logs of 45 events, a full collection (median of 3):")
    print(f"  open      {open_ms:8.1f} ms, {open_objects:,} objects tracked")
    print(f"  finished  {finished_ms:8.1f} ms, {finished_objects:,} objects tracked")


def bursts(replies: Path, gc_log: Path | None, target: str = "sse") -> None:
    """The slowest 2% of first tokens by send time, and the long collections beside them."""
    rows = [line.split() for line in replies.read_text(encoding="utf-8").splitlines()]
    sent = sorted(((float(t), float(ms)) for kind, t, ms in rows if kind == target))
    if not sent:
        print(f"no {target} replies in {replies}")
        return
    start = sent[0][0]
    slowest = sorted(sent, key=lambda row: -row[1])[: max(1, len(sent) // 50)]
    windows: Counter[float] = Counter(round((t - start) // 0.2 * 0.2, 1) for t, _ in slowest)
    print(f"{len(sent)} {target} replies; the slowest {len(slowest)} first tokens "
          f"({min(ms for _, ms in slowest):.0f}–{max(ms for _, ms in slowest):.0f} ms), "
          "by 0.2-s window of their send (s after the first send): count")  # fmt: skip
    for window, count in sorted(windows.items()):
        print(f"  {window:6.1f}  {count}")
    if gc_log is None:
        return
    print("collections of 10 ms or more (s after the first send, generation, wall / CPU ms):")
    for line in gc_log.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):  # a census (DAEHWA_GC_CENSUS)
            continue
        end, generation, wall, cpu, _ = line.split()
        if float(wall) >= 10 and float(end) >= start:
            print(f"  {float(end) - start:6.2f}  gen{generation}  {wall} / {cpu}")


WAKE_INTERVALS = (0.1, 0.02, 0.005, 0.001, 0.0)


async def pool_costs(connections: int = 500, idle_timeout: float = 1.0) -> None:
    """CPU of one request when the pool holds ``connections`` idle ones, fresh and expired."""
    import orjson
    from tests.fakes.openai_upstream import FakeOpenAIUpstream

    from daehwa.llm.http import UpstreamClient

    body = orjson.dumps(
        {
            "model": "scenario:text tokens=3 delay=0 ttft=0",
            "stream": True,
            "messages": [{"role": "user", "content": "안녕"}],
        }
    )

    async def fetch(client: UpstreamClient) -> None:
        async with await client.request("POST", "/v1/chat/completions", body=body) as response:
            await response.read()

    async with FakeOpenAIUpstream(record=0) as fake:
        client = UpstreamClient(fake.base_url, idle_timeout=idle_timeout)
        await asyncio.gather(*(fetch(client) for _ in range(connections)))
        for label, wait in (("fresh", idle_timeout / 5), ("expired", idle_timeout * 1.5)):
            await asyncio.sleep(wait)
            idle = client.idle_connections
            started, cpu = time.perf_counter(), time.process_time()
            await fetch(client)
            print(
                f"pool: one request with {idle} idle connections ({label}, after {wait:g} s): "
                f"{1000 * (time.process_time() - cpu):.2f} ms CPU, "
                f"{1000 * (time.perf_counter() - started):.2f} ms wall",
                flush=True,
            )
        await client.aclose()


def wake_costs(seconds: float = 2.0) -> None:
    """CPU per wake-up of a process that sleeps ``interval`` between wake-ups."""
    import uvloop

    async def loop_sleeps(interval: float, count: int) -> int:
        started = time.process_time_ns()
        for _ in range(count):
            await asyncio.sleep(interval)
        return time.process_time_ns() - started

    for interval in WAKE_INTERVALS:
        count = int(seconds / interval) if interval else 20_000
        started = time.process_time_ns()
        for _ in range(count):
            time.sleep(interval)
        thread = (time.process_time_ns() - started) / count / 1000
        in_loop = uvloop.run(loop_sleeps(interval, count)) / count / 1000
        print(
            f"asleep {1000 * interval:5.1f} ms between wake-ups: time.sleep {thread:6.1f} µs CPU "
            f"per wake-up, uvloop asyncio.sleep {in_loop:6.1f} µs",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "what",
        nargs="+",
        choices=[
            "store", "filter", "relay", "upstream", "hop", "statements", "turn", "runlog",
            "bursts", "wakes", "pool", "profile",
        ],
    )  # fmt: skip
    parser.add_argument("--file", help="profile: a py-spy raw file; bursts: a --replies file")
    parser.add_argument("--gc", help="bursts: a log of bench/gc_log")
    parser.add_argument("--runs", type=int, default=75_000, help="runlog: replies kept")
    args = parser.parse_args()
    import uvloop  # as under uvicorn

    for what in args.what:
        if what == "store":
            uvloop.run(store_costs())
        elif what == "filter":
            filter_costs()
        elif what == "relay":
            uvloop.run(relay_costs())
        elif what == "upstream":
            upstream_costs()
        elif what == "hop":
            uvloop.run(hop_costs())
        elif what == "statements":
            uvloop.run(statement_counts())
        elif what == "turn":
            uvloop.run(turn_costs())
            for cache_size in (0, 64):  # a long conversation: 120 messages by the last round
                uvloop.run(turn_costs(20, 60, cache_size))
        elif what == "runlog":
            uvloop.run(runlog_costs(args.runs))
        elif what == "bursts":
            bursts(Path(args.file), Path(args.gc) if args.gc else None)
        elif what == "wakes":
            wake_costs()
        elif what == "pool":
            uvloop.run(pool_costs())
        elif args.file:
            print(profile_summary(Path(args.file)))


if __name__ == "__main__":
    main()
