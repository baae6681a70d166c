"""When a paced upstream response is read: shared ticks instead of one timer each.

With ``[chat] delta_interval`` (the *pace*) a streaming response is read once
per pace after its first text (:class:`~daehwa.llm.http_connection.UpstreamResponse`).
If every stream kept its own rhythm, each read would be a wake-up of the event
loop of its own, and on a lightly loaded server each wake-up is the process
going to sleep and being resumed; reading many streams in one wake-up cut a
paced stream's CPU by about two fifths at 50 streams (docs/performance.md).
So the pace is cut into ticks of about
:data:`TICK` seconds, a stream is read on every ``phases``-th tick (its
*phase*), and each new stream joins the phase that already holds the most
streams, up to :data:`PER_PHASE`: one wake-up reads them all. The bound keeps
a tick's burst short (a hand-over costs roughly 0.1–0.2 ms of CPU, so 32 of
them a few milliseconds), so a new request's first token never waits long
behind one.
"""

from __future__ import annotations

import math

# About how long a tick is; the pace is a whole number of them.
TICK = 0.01
# At most this many streams share a phase while another phase has room.
PER_PHASE = 32


class Pacer:
    """The phases of one pace, and how many streams each holds (one event loop)."""

    __slots__ = ("_load", "pace", "phases", "tick")

    def __init__(self, pace: float) -> None:
        if pace <= 0:
            raise ValueError("a pacer needs a pace > 0")
        self.pace = pace
        self.phases = max(1, round(pace / TICK))
        self.tick = pace / self.phases
        self._load = [0] * self.phases

    def join(self) -> int:
        """A phase for a new stream: the fullest one with room, else the emptiest."""
        load = self._load
        best = -1
        for phase, streams in enumerate(load):
            if streams < PER_PHASE and (best < 0 or streams > load[best]):
                best = phase
        if best < 0:
            best = load.index(min(load))
        load[best] += 1
        return best

    def leave(self, phase: int) -> None:
        """A stream of ``phase`` ended."""
        self._load[phase] -= 1

    def load(self) -> list[int]:
        """How many streams each phase holds."""
        return list(self._load)

    def first_tick(self, phase: int, when: float) -> int:
        """The number of ``phase``'s first tick at or after loop time ``when``."""
        tick = math.ceil(when / self.tick)
        return tick + (phase - tick) % self.phases
