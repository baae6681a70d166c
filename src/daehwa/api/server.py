"""The HTTP server: uvicorn, with its housekeeping once a second, on the paced ticks.

uvicorn wakes every 0.1 s for its housekeeping (the ``Date`` header, which changes
once a second, and the exit check), each time 0.1 s after the last round ended. On
an idle or lightly loaded server each of those rounds is the process being resumed
from sleep, and a resumed process runs cold: about 0.3 ms of CPU a round here, 3.3
ms a second for nothing (docs/performance.md, change 18). :class:`Server` does its
housekeeping once a second instead, and is woken at once when it is asked to exit
(a signal, or ``should_exit`` set from any thread). It wakes on multiples of its
period on the loop's clock, where the ticks of phase 0 fall, the phase the pacer
fills first (:mod:`daehwa.llm.pacing`): under load one wake-up serves both.
"""

from __future__ import annotations

import asyncio
import math

import uvicorn

from daehwa.llm.pacing import Pacer

# Seconds between two rounds of housekeeping: how stale the Date header may be.
HOUSEKEEPING = 1.0


def housekeeping_period(pace: float) -> float:
    """The multiple of the pace's tick nearest :data:`HOUSEKEEPING` (that interval if unpaced).

    Its multiples are ticks of the pace, among them all of phase 0's.
    """
    if pace <= 0:
        return HOUSEKEEPING
    tick = Pacer(pace).tick
    return tick * max(1, round(HOUSEKEEPING / tick))


def until_next(now: float, period: float) -> float:
    """Seconds from loop time ``now`` to the next multiple of ``period`` after it."""
    return (math.floor(now / period) + 1) * period - now


class Server(uvicorn.Server):
    """uvicorn's server, its housekeeping on multiples of ``period`` of the loop's clock."""

    def __init__(self, config: uvicorn.Config, period: float = HOUSEKEEPING) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._asleep: asyncio.Future[None] | None = None
        super().__init__(config)
        self.period = period

    # uvicorn sets should_exit from its signal handler; tests and embedders set it
    # from other threads. Either way the housekeeping's sleep ends at once.
    @property
    def should_exit(self) -> bool:
        return self._should_exit

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self._should_exit = value
        loop = self._loop
        if value and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        asleep = self._asleep
        if asleep is not None and not asleep.done():
            asleep.set_result(None)

    async def main_loop(self) -> None:
        # uvicorn's main_loop, but sleeping to the next multiple of the period.
        loop = self._loop = asyncio.get_running_loop()
        should_exit = await self.on_tick(0)
        while not should_exit:
            asleep = self._asleep = loop.create_future()
            timer = loop.call_later(until_next(loop.time(), self.period), self._wake)
            try:
                await asleep
            finally:
                timer.cancel()
                self._asleep = None
            # uvicorn refreshes the Date header when the counter is a multiple of 10.
            should_exit = await self.on_tick(0)
