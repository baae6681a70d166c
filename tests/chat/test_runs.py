import asyncio
import gc
from collections.abc import AsyncIterator

import pytest

from daehwa.chat.runs import MemoryRunLog, Run, RunLog, RunRegistry
from daehwa.errors import NotFound
from daehwa.events import Delta, Done, Envelope, Meta, Step


async def collect(registry: RunRegistry, run_id: str, after: int = 0) -> list[Envelope]:
    return [e async for e in registry.log.follow(run_id, after)]


async def test_followers_see_every_event_once_in_order() -> None:
    registry = RunRegistry(MemoryRunLog())
    gate = asyncio.Event()

    async def body(run: Run) -> None:
        for i in range(5):
            await run.emit(Delta(str(i)))
            if i == 1:
                await gate.wait()
        await run.emit(Done(run.id, "complete", "stop", {}))

    await registry.start("r1", "c1", body)
    early = asyncio.create_task(collect(registry, "r1"))
    await asyncio.sleep(0.01)
    late = asyncio.create_task(collect(registry, "r1", after=1))
    await asyncio.sleep(0.01)
    gate.set()
    first, second = await asyncio.gather(early, late)
    assert [e.seq for e in first] == [1, 2, 3, 4, 5, 6]
    assert [e.seq for e in second] == [2, 3, 4, 5, 6]
    assert first[-1].terminal


async def test_a_follower_leaving_does_not_stop_the_run() -> None:
    registry = RunRegistry(MemoryRunLog())

    async def body(run: Run) -> None:
        for i in range(20):
            await asyncio.sleep(0.001)
            await run.emit(Delta(str(i)))
        await run.emit(Done(run.id, "complete", "stop", {}))

    await registry.start("r1", "c1", body)
    stream = registry.log.follow("r1")
    await anext(stream)
    await stream.aclose()
    await registry.wait("r1")
    events = await collect(registry, "r1")
    assert len(events) == 21
    assert events[-1].type == "done"


async def test_runs_of_one_conversation_run_in_order() -> None:
    registry = RunRegistry(MemoryRunLog())
    order: list[str] = []

    def body_for(name: str, delay: float):  # type: ignore[no-untyped-def]
        async def body(run: Run) -> None:
            order.append(f"{name}-start")
            await asyncio.sleep(delay)
            order.append(f"{name}-end")
            await run.emit(Done(run.id, "complete", "stop", {}))

        return body

    await registry.start("a", "c1", body_for("a", 0.03))
    await registry.start("b", "c1", body_for("b", 0.0))
    await registry.wait("a")
    await registry.wait("b")
    assert order == ["a-start", "a-end", "b-start", "b-end"]


async def test_stop_cancels_the_run_and_sets_the_flag() -> None:
    registry = RunRegistry(MemoryRunLog())
    seen: list[bool] = []

    async def body(run: Run) -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            seen.append(run.stop_requested)
            await run.emit(Done(run.id, "stopped", None, {}))

    await registry.start("r1", "c1", body)
    await asyncio.sleep(0.01)
    assert registry.stop("r1")
    await registry.wait("r1")
    assert seen == [True]
    assert not registry.stop("r1")


async def test_unknown_log_is_not_found() -> None:
    log = MemoryRunLog()
    with pytest.raises(NotFound):
        await anext(log.follow("missing"))


def _reachable(root: object) -> tuple[int, int]:
    """The objects reachable from ``root`` (classes aside), and how many the collector walks."""
    seen: set[int] = set()
    todo, tracked = [root], 0
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, type):
            continue
        seen.add(id(obj))
        tracked += gc.is_tracked(obj)
        todo.extend(gc.get_referents(obj))
    return len(seen), tracked


async def test_a_finished_log_replays_every_event_and_keeps_none_in_the_collectors_sight() -> None:
    # As sent: (seq, type, data).
    sent = [
        (1, "meta", Meta("c", "u", "r", "up", None).data()),
        (2, "step", Step("context", {"messages": 3, "steps": {"recalled": [1, 2]}}).data()),
        *((seq, "delta", {"text": f"토큰 {seq}"}) for seq in range(3, 1003)),
        (1003, "done", Done("r", "complete", "stop", {"prompt_tokens": 7}).data()),
    ]
    log = MemoryRunLog()
    await log.open("r")
    for seq, kind, data in sent[:500]:
        await log.append("r", Envelope(seq, kind, data))
    live = log.follow("r")
    assert [(e.seq, e.type, e.data) for e in [await anext(live) for _ in range(10)]] == sent[:10]
    for seq, kind, data in sent[500:]:
        await log.append("r", Envelope(seq, kind, data))
    entry = log._logs["r"]
    assert _reachable(entry)[1] > 1003  # an Envelope per event while the run goes on
    await log.finish("r")
    await log.finish("r")  # twice: the same log

    # A follower from before the end reads the rest; new ones read any part.
    assert [(e.seq, e.type, e.data) async for e in live] == sent[10:]
    assert [(e.seq, e.type, e.data) async for e in log.follow("r")] == sent
    assert [(e.seq, e.type, e.data) async for e in log.follow("r", 990)] == sent[990:]
    assert [e async for e in log.follow("r", 1003)] == []

    # 1,003 events, and the finished log holds a few objects, not one (or more) per event.
    objects, tracked = _reachable(entry)
    assert objects < 20
    assert tracked < 5


async def test_an_event_after_the_end_is_kept() -> None:
    log = MemoryRunLog()
    await log.open("r")
    await log.append("r", Envelope.of(1, Delta("a")))
    await log.finish("r")
    await log.append("r", Envelope.of(2, Done("r", "complete", "stop", {})))
    assert [(e.seq, e.data) async for e in log.follow("r")] == [
        (1, {"text": "a"}),
        (2, {"message_id": "r", "status": "complete", "finish_reason": "stop", "usage": {}}),
    ]


async def test_finished_logs_expire() -> None:
    log = MemoryRunLog(ttl=0.0)
    await log.open("old")
    await log.append("old", Envelope.of(1, Done("old", "complete", "stop", {})))
    await log.finish("old")
    await asyncio.sleep(0.001)
    await log.open("new")
    assert not await log.exists("old")
    assert await log.exists("new")


async def test_only_logs_finished_longer_than_the_ttl_ago_expire(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1000.0]
    monkeypatch.setattr("daehwa.chat.runs.time.monotonic", lambda: clock[0])
    log = MemoryRunLog(ttl=10.0)
    for run_id in ("a", "b", "running"):
        await log.open(run_id)
    await log.finish("a")
    clock[0] += 5
    await log.finish("b")
    await log.finish("b")  # twice: still one log, expired once
    clock[0] += 6  # "a" finished 11 s ago, "b" 6 s ago
    await log.open("c")
    assert [await log.exists(r) for r in ("a", "b", "running", "c")] == [False, True, True, True]
    clock[0] += 60
    await log.open("d")
    assert [await log.exists(r) for r in ("b", "running", "c", "d")] == [False, True, True, True]


@pytest.fixture(params=["memory", "redis"])
async def run_log(request: pytest.FixtureRequest) -> AsyncIterator[RunLog]:
    if request.param == "memory":
        log: RunLog = MemoryRunLog()
    else:
        from daehwa.chat.redis_runs import RedisRunLog

        redis_url = request.getfixturevalue("redis_url")
        log = await RedisRunLog.connect(redis_url, prefix=request.getfixturevalue("redis_prefix"))
    try:
        yield log
    finally:
        await log.aclose()


async def test_a_reader_behind_gets_what_it_missed_in_one_batch(run_log: RunLog) -> None:
    await run_log.open("r1")
    for seq in range(1, 4):
        await run_log.append("r1", Envelope.of(seq, Delta(str(seq))))
    batches = run_log.follow_batches("r1", after=1)
    assert [e.seq for e in await anext(batches)] == [2, 3]
    # Then live: each event as it comes, up to and including the terminal one.
    await run_log.append("r1", Envelope.of(4, Delta("4")))
    assert [e.seq for e in await anext(batches)] == [4]
    await run_log.append("r1", Envelope.of(5, Done("r1", "complete", "stop", {})))
    await run_log.append("r1", Envelope.of(6, Delta("after the end")))
    assert [e.seq for e in await anext(batches)] == [5]
    with pytest.raises(StopAsyncIteration):
        await anext(batches)
    # A late reader gets the whole log at once, cut at the terminal event.
    whole = [batch async for batch in run_log.follow_batches("r1")]
    assert [[e.seq for e in batch] for batch in whole] == [[1, 2, 3, 4, 5]]
    assert [e.seq async for e in run_log.follow("r1", after=3)] == [4, 5]
