"""A bulkhead: at most ``limit`` concurrent streams to one upstream.

A slow or hung upstream would otherwise soak up every connection and task the
process has; with a bulkhead, the excess waits up to ``queue_timeout`` seconds
for a slot and then fails with :class:`~daehwa.errors.Busy`, so other upstreams
(and the fallback models) keep working.
"""

from __future__ import annotations

import asyncio
from typing import Any

from daehwa.errors import Busy

__all__ = ["Bulkhead"]


class Bulkhead:
    """Bounds concurrent calls to one upstream; ``acquire`` then ``release`` once."""

    def __init__(
        self,
        name: str,
        *,
        limit: int = 100,
        queue_timeout: float = 5.0,
        max_waiting: int | None = None,
    ) -> None:
        self.name = name
        self.limit = limit
        self.queue_timeout = queue_timeout
        # Beyond this many waiting calls, more are refused at once (None: no bound).
        self.max_waiting = max_waiting
        self._slots = asyncio.Semaphore(limit)
        #: Calls waiting for a slot right now.
        self.waiting = 0
        #: Calls refused because no slot freed up in time.
        self.refused = 0
        #: Calls holding a slot right now.
        self.in_flight = 0

    async def acquire(self) -> None:
        """Take a slot, waiting up to ``queue_timeout``; raises :class:`Busy` after that."""
        if not self._slots.locked():
            # The common case: a free slot, no timer, no suspension.
            await self._slots.acquire()
            self.in_flight += 1
            return
        if self.queue_timeout <= 0 or (
            self.max_waiting is not None and self.waiting >= self.max_waiting
        ):
            self._refuse()
        self.waiting += 1
        try:
            async with asyncio.timeout(self.queue_timeout):
                await self._slots.acquire()
        except TimeoutError:
            self._refuse()
        finally:
            self.waiting -= 1
        self.in_flight += 1

    def release(self) -> None:
        """Give the slot back."""
        self.in_flight -= 1
        self._slots.release()

    def snapshot(self) -> dict[str, Any]:
        """Occupancy and refusals, for /metrics."""
        return {
            "limit": self.limit,
            "in_flight": self.in_flight,
            "waiting": self.waiting,
            "refused_total": self.refused,
        }

    def _refuse(self) -> None:
        self.refused += 1
        raise self.busy()

    def busy(self) -> Busy:
        """The error a refused call gets."""
        return Busy(
            f"upstream {self.name} already has {self.limit} requests in flight; "
            "try again in a moment"
        )
