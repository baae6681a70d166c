"""The HTTP server's housekeeping wakes on the ticks paced reads are made on."""

from __future__ import annotations

import asyncio

import pytest
import uvicorn

from daehwa.api.server import HOUSEKEEPING, Server, housekeeping_period, until_next
from daehwa.llm.pacing import Pacer


@pytest.mark.parametrize("pace", [0.02, 0.05, 0.1, 0.15, 0.3, 1.0, 0.013])
def test_the_period_is_a_whole_number_of_the_paces_ticks_near_a_tenth(pace: float) -> None:
    period = housekeeping_period(pace)
    ticks = period / Pacer(pace).tick
    assert ticks == pytest.approx(round(ticks)) and round(ticks) >= 1
    assert abs(period - HOUSEKEEPING) <= Pacer(pace).tick / 2 + 1e-12


def test_unpaced_the_period_is_uvicorns() -> None:
    assert housekeeping_period(0) == HOUSEKEEPING


def test_phase_zeros_ticks_fall_on_the_periods_multiples() -> None:
    pacer = Pacer(0.1)
    period = housekeeping_period(0.1)
    for when in (0.0, 12.345, 1000.07):
        tick = pacer.first_tick(0, when) * pacer.tick
        assert tick / period == pytest.approx(round(tick / period))


@pytest.mark.parametrize("now", [0.0, 0.03, 0.0999, 0.1, 5.55, 123456.789])
def test_until_next_reaches_the_next_multiple(now: float) -> None:
    delay = until_next(now, 0.1)
    assert 0 < delay <= 0.1 + 1e-9
    assert (now + delay) / 0.1 == pytest.approx(round((now + delay) / 0.1), abs=1e-6)


async def test_housekeeping_sleeps_to_the_next_multiple_and_stops_on_exit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop = asyncio.get_running_loop()
    server = Server(uvicorn.Config(app=lambda *_: None), period=0.1)
    counters: list[int] = []
    targets: list[float] = []
    real_sleep = asyncio.sleep

    async def on_tick(counter: int) -> bool:
        counters.append(counter)
        return len(counters) == 12

    async def sleep(delay: float) -> None:
        targets.append(loop.time() + delay)
        await real_sleep(0)

    monkeypatch.setattr(server, "on_tick", on_tick)
    monkeypatch.setattr(asyncio, "sleep", sleep)
    await server.main_loop()
    assert counters == list(range(12)), "uvicorn's counter: the Date header every 10th"
    assert len(targets) == 11
    for target in targets:  # within 0.2 ms: the clock moves on between two reads
        assert target / 0.1 == pytest.approx(round(target / 0.1), abs=2e-3)
