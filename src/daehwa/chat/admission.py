"""Admission control: at most so many replies running in this process.

A turn takes a slot before anything is stored and gives it back when its
reply's run ends, whatever the outcome. Beyond the bound a turn waits up to
``queue_timeout`` seconds for a slot and is then refused with
:class:`RepliesBusy`, so refusing costs no store write and no model call.
"""

from __future__ import annotations

import asyncio

from daehwa.errors import Busy
from daehwa.llm.bulkhead import Bulkhead

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
            owner.release()

    def hold_until_done(self, task: asyncio.Task[None] | None) -> None:
        """Hand the slot to the reply's run: it is given back when ``task`` ends."""
        owner, self._owner = self._owner, None
        if owner is None:
            return
        if task is None:
            owner.release()
        else:
            task.add_done_callback(lambda _: owner.release())


class ReplySlots(Bulkhead):
    """Bounds the replies running at once; ``admit`` a turn, release its slot when the run ends.

    At most ``limit`` turns wait at once; more are refused at once.
    """

    def __init__(self, limit: int, *, queue_timeout: float = 0.0) -> None:
        super().__init__("replies", limit=limit, queue_timeout=queue_timeout, max_waiting=limit)

    @property
    def running(self) -> int:
        """Replies holding a slot right now."""
        return self.in_flight

    async def admit(self) -> ReplySlot:
        """A slot, waiting up to ``queue_timeout``; raises :class:`RepliesBusy` after that."""
        await self.acquire()
        return ReplySlot(self)

    def busy(self) -> RepliesBusy:
        return RepliesBusy(
            f"the server is already generating {self.limit} replies; "
            f"try again in {RETRY_AFTER_SECONDS} s"
        )
