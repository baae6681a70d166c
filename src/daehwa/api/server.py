"""The HTTP server: uvicorn, with its housekeeping woken on the paced ticks.

uvicorn wakes every 0.1 s for its housekeeping (the ``Date`` header, the exit
check), each time 0.1 s after the last round ended, so its wake-ups drift
against the ticks that paced upstream responses are read on
(:mod:`daehwa.llm.pacing`): on a lightly loaded server each is the process
going to sleep and being resumed once more. :class:`Server` sleeps to the next
multiple of its period instead, where the ticks of phase 0 fall, the phase the
pacer fills first: one wake-up serves both.
"""

from __future__ import annotations

import asyncio
import math

import uvicorn

from daehwa.llm.pacing import Pacer

# uvicorn's own housekeeping interval: how late an exit request may be seen.
HOUSEKEEPING = 0.1


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
        super().__init__(config)
        self.period = period

    async def main_loop(self) -> None:
        # uvicorn's main_loop, but sleeping to the next multiple of the period.
        loop = asyncio.get_running_loop()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            # on_tick refreshes the Date header when the counter is a multiple of 10.
            counter = (counter + 1) % 864000
            await asyncio.sleep(until_next(loop.time(), self.period))
            should_exit = await self.on_tick(counter)
