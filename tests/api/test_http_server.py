"""The HTTP server's housekeeping: once a second, on the paced ticks, woken to exit."""

from __future__ import annotations

import asyncio
import signal
import threading

import pytest
import uvicorn

from daehwa.api import server as server_module
from daehwa.api.server import HOUSEKEEPING, Server, housekeeping_period, until_next
from daehwa.llm.pacing import Pacer


@pytest.mark.parametrize("pace", [0.02, 0.05, 0.1, 0.15, 0.3, 1.0, 0.013])
def test_the_period_is_a_whole_number_of_the_paces_ticks_near_a_second(pace: float) -> None:
    period = housekeeping_period(pace)
    ticks = period / Pacer(pace).tick
    assert ticks == pytest.approx(round(ticks)) and round(ticks) >= 1
    assert abs(period - HOUSEKEEPING) <= Pacer(pace).tick / 2 + 1e-12
    assert HOUSEKEEPING == 1.0, "the Date header's resolution: one round a second"


def test_unpaced_the_period_is_the_housekeeping_interval() -> None:
    assert housekeeping_period(0) == HOUSEKEEPING


def test_the_periods_multiples_are_ticks_of_phase_zero() -> None:
    pacer = Pacer(0.1)
    period = housekeeping_period(0.1)
    for multiple in (1, 7, 12345):
        when = multiple * period
        first = pacer.first_tick(0, when - pacer.tick / 2) * pacer.tick
        assert first == pytest.approx(when)


@pytest.mark.parametrize("now", [0.0, 0.03, 0.0999, 0.1, 5.55, 123456.789])
def test_until_next_reaches_the_next_multiple(now: float) -> None:
    delay = until_next(now, 0.1)
    assert 0 < delay <= 0.1 + 1e-9
    assert (now + delay) / 0.1 == pytest.approx(round((now + delay) / 0.1), abs=1e-6)


async def test_housekeeping_wakes_on_the_periods_multiples_and_refreshes_the_date(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop = asyncio.get_running_loop()
    server = Server(uvicorn.Config(app=lambda *_: None), period=0.1)
    counters: list[int] = []
    targets: list[float] = []

    async def on_tick(counter: int) -> bool:
        counters.append(counter)
        return len(counters) == 12

    def until(now: float, period: float) -> float:
        targets.append(loop.time() + until_next(now, period))
        return 0.0  # no real wait

    monkeypatch.setattr(server, "on_tick", on_tick)
    monkeypatch.setattr(server_module, "until_next", until)
    await server.main_loop()
    assert counters == [0] * 12, "uvicorn refreshes the Date header on a counter of 0"
    assert len(targets) == 11
    for target in targets:  # within 0.2 ms: the clock moves on between two reads
        assert target / 0.1 == pytest.approx(round(target / 0.1), abs=2e-3)


async def _asleep_until_told(server: Server) -> asyncio.Task[None]:
    ticked = asyncio.Event()

    async def on_tick(counter: int) -> bool:
        ticked.set()  # the round ends without a pause: the sleep starts before a waiter runs
        return server.should_exit

    server.on_tick = on_tick  # type: ignore[method-assign]
    task = asyncio.create_task(server.main_loop())
    await ticked.wait()
    assert server._asleep is not None
    return task


async def test_an_exit_set_from_another_thread_ends_the_sleep_at_once() -> None:
    server = Server(uvicorn.Config(app=lambda *_: None), period=3600)
    task = await _asleep_until_told(server)
    setter = threading.Thread(target=setattr, args=(server, "should_exit", True))
    setter.start()
    setter.join()
    await asyncio.wait_for(task, 5)  # not an hour
    assert server.should_exit


async def test_a_signal_ends_the_sleep_at_once() -> None:
    server = Server(uvicorn.Config(app=lambda *_: None), period=3600)
    task = await _asleep_until_told(server)
    server.handle_exit(signal.SIGTERM, None)  # what uvicorn's signal handler calls
    await asyncio.wait_for(task, 5)
    assert server.should_exit and not server.force_exit


def test_an_exit_before_the_loop_runs_is_kept() -> None:
    server = Server(uvicorn.Config(app=lambda *_: None))
    assert server.should_exit is False
    server.should_exit = True
    assert server.should_exit is True
