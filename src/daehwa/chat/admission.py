"""Admission control: at most so many replies running in this process.

A turn takes a slot before anything is stored and gives it back when its
reply's run ends, whatever the outcome. Beyond the bound a turn waits up to
``queue_timeout`` seconds for a slot and is then refused with
:class:`RepliesBusy`, so refusing costs no store write and no model call.
"""

from __future__ import annotations

import asyncio
from typing import Any

from daehwa.errors import Busy

__all__ = ["RepliesBusy", "ReplySlot", "ReplySlots"]

# What a refused client is told to wait before trying again, in seconds.
RETRY_AFTER_SECONDS = 1


class RepliesBusy(Busy):
    """The process already runs as many replies as it may; ``retry_after`` is in seconds."""

    def __init__(self, message: str, *, retry_after: int = RETRY_AFTER_SECONDS) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ReplySlot:
    """One admitted reply's place; given back once, however often it is released."""

    __slots__ = ("_owner",)

    def __init__(self, owner: ReplySlots) -> None:
        self._owner: ReplySlots | None = owner

    def release(self) -> None:
        """Give the slot back now, unless a run already holds it."""
        owner, self._owner = self._owner, None
        if owner is not None:
            owner._release()

    def hold_until_done(self, task: asyncio.Task[None] | None) -> None:
        """Hand the slot to the reply's run: it is given back when ``task`` ends."""
        owner, self._owner = self._owner, None
        if owner is None:
            return
        if task is None:
            owner._release()
        else:
            task.add_done_callback(lambda _: owner._release())


class ReplySlots:
    """Bounds the replies running at once; ``acquire`` a slot, ``release`` it when the run ends."""

    def __init__(self, limit: int, *, queue_timeout: float = 0.0) -> None:
        self.limit = limit
        self.queue_timeout = queue_timeout
        self._slots = asyncio.Semaphore(limit)
        #: Replies holding a slot right now.
        self.running = 0
        #: Turns waiting for a slot right now.
        self.waiting = 0
        #: Turns refused because no slot freed up in time.
        self.refused = 0

    async def acquire(self) -> ReplySlot:
        """A slot, waiting up to ``queue_timeout``; raises :class:`RepliesBusy` after that.

        At most ``limit`` turns wait at once; more are refused at once.
        """
        if not self._slots.locked():
            # The common case: a free slot, no timer, no suspension.
            await self._slots.acquire()
        elif self.queue_timeout <= 0 or self.waiting >= self.limit:
            self._refuse()
        else:
            self.waiting += 1
            try:
                async with asyncio.timeout(self.queue_timeout):
                    await self._slots.acquire()
            except TimeoutError:
                self._refuse()
            finally:
                self.waiting -= 1
        self.running += 1
        return ReplySlot(self)

    def _release(self) -> None:
        self.running -= 1
        self._slots.release()

    def snapshot(self) -> dict[str, Any]:
        """Occupancy and refusals, for /metrics."""
        return {
            "limit": self.limit,
            "running": self.running,
            "waiting": self.waiting,
            "refused_total": self.refused,
        }

    def _refuse(self) -> None:
        self.refused += 1
        raise RepliesBusy(
            f"the server is already generating {self.limit} replies; "
            f"try again in {RETRY_AFTER_SECONDS} s"
        )
