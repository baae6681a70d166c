"""A circuit breaker for one upstream: closed → open → half-open → closed.

Closed, every call goes through and its outcome is counted in a rolling time
window. When at least ``min_calls`` calls ended in that window and the share of
failures reaches ``error_rate``, the breaker opens: for ``cooldown`` seconds
every call fails at once with :class:`~daehwa.errors.CircuitOpen`, and the
upstream sees nothing. After the cool-down it is half-open: ``probes`` calls go
through; if they all succeed it closes (with a fresh window), and the first
failure opens it again.

A call takes a :class:`Permit` and reports exactly one outcome on it. Outcomes
count only in the breaker generation (state period) the call started in, so a
slow call that started before the breaker opened cannot decide a later probe.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from daehwa.errors import CircuitOpen

__all__ = ["BreakerState", "CircuitBreaker", "Permit"]

log = logging.getLogger(__name__)


class BreakerState(StrEnum):
    """Where a breaker is in its cycle (the values appear in logs and /metrics)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Permit:
    """The right to make one call; report its outcome once (later reports are ignored)."""

    __slots__ = ("_breaker", "_done", "_generation", "probe")

    def __init__(self, breaker: CircuitBreaker, generation: int, probe: bool) -> None:
        self._breaker = breaker
        self._generation = generation
        self._done = False
        #: True when the call is a half-open probe.
        self.probe = probe

    def success(self) -> None:
        """The upstream answered (an answer that refuses the request counts too)."""
        self._report(True)

    def failure(self) -> None:
        """The upstream failed in a way that says it is unhealthy (5xx, timeout, reset)."""
        self._report(False)

    def release(self) -> None:
        """The call ended without telling anything about the upstream (e.g. cancelled)."""
        self._report(None)

    def _report(self, ok: bool | None) -> None:
        if not self._done:
            self._done = True
            self._breaker._settle(self._generation, self.probe, ok)


class CircuitBreaker:
    """Counts call outcomes for one upstream and refuses calls while it is open."""

    def __init__(
        self,
        name: str,
        *,
        error_rate: float = 0.5,
        min_calls: int = 10,
        window: float = 30.0,
        cooldown: float = 15.0,
        probes: int = 1,
        buckets: int = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.error_rate = error_rate
        self.min_calls = min_calls
        self.cooldown = cooldown
        self.probes = probes
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._generation = 0
        self._opened_at = 0.0
        self._probing = 0
        self._probe_ok = 0
        # The rolling window: ``buckets`` slots of ``width`` seconds; a slot whose
        # epoch is stale is reset before it is reused.
        self._width = window / buckets
        self._epochs = [-1] * buckets
        self._calls = [0] * buckets
        self._fails = [0] * buckets
        #: Calls refused while open or while the half-open probes were taken.
        self.rejected = 0
        #: How many times the breaker has opened.
        self.opened = 0

    @property
    def state(self) -> BreakerState:
        """The current state (an open breaker whose cool-down is over reads half-open)."""
        self._cool_down()
        return self._state

    def acquire(self) -> Permit:
        """A permit for one call, or :class:`CircuitOpen` without calling anything."""
        self._cool_down()
        if self._state is BreakerState.CLOSED:
            return Permit(self, self._generation, False)
        if self._state is BreakerState.HALF_OPEN and self._probing + self._probe_ok < self.probes:
            self._probing += 1
            return Permit(self, self._generation, True)
        self.rejected += 1
        raise CircuitOpen(
            f"upstream {self.name} is failing; not calling it for now", provider=self.name
        )

    def window_counts(self) -> tuple[int, int]:
        """``(calls, failures)`` that ended in the rolling window."""
        epoch = int(self._clock() // self._width)
        oldest = epoch - len(self._epochs)
        calls = fails = 0
        for slot, slot_epoch in enumerate(self._epochs):
            if slot_epoch > oldest:
                calls += self._calls[slot]
                fails += self._fails[slot]
        return calls, fails

    def snapshot(self) -> dict[str, Any]:
        """State and counts, for logs and /metrics."""
        state = self.state
        calls, fails = self.window_counts()
        return {
            "name": self.name,
            "state": state.value,
            "window_calls": calls,
            "window_failures": fails,
            "error_rate": fails / calls if calls else 0.0,
            "rejected_total": self.rejected,
            "opened_total": self.opened,
            "probes_in_flight": self._probing,
        }

    # -- internals ------------------------------------------------------------

    def _settle(self, generation: int, probe: bool, ok: bool | None) -> None:
        if generation != self._generation:
            return  # the call started in an earlier state period
        if self._state is BreakerState.HALF_OPEN:
            if probe:
                self._probing -= 1
            if ok is None:
                return
            if not ok:
                self._open("a probe call failed")
                return
            self._probe_ok += 1
            if self._probe_ok >= self.probes:
                self._close()
            return
        if ok is None or self._state is not BreakerState.CLOSED:
            return
        self._count(failed=not ok)
        if not ok:
            calls, fails = self.window_counts()
            if calls >= self.min_calls and fails >= self.error_rate * calls:
                self._open(f"{fails} of the last {calls} calls failed")

    def _count(self, *, failed: bool) -> None:
        epoch = int(self._clock() // self._width)
        slot = epoch % len(self._epochs)
        if self._epochs[slot] != epoch:
            self._epochs[slot] = epoch
            self._calls[slot] = self._fails[slot] = 0
        self._calls[slot] += 1
        if failed:
            self._fails[slot] += 1

    def _cool_down(self) -> None:
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.cooldown:
            self._move(BreakerState.HALF_OPEN, f"cool-down of {self.cooldown:g} s is over")
            self._probing = self._probe_ok = 0

    def _open(self, reason: str) -> None:
        self._opened_at = self._clock()
        self.opened += 1
        self._move(BreakerState.OPEN, reason)

    def _close(self) -> None:
        self._move(BreakerState.CLOSED, f"{self._probe_ok} probe call(s) succeeded")
        self._epochs = [-1] * len(self._epochs)

    def _move(self, state: BreakerState, reason: str) -> None:
        log.warning("circuit breaker %s: %s -> %s (%s)", self.name, self._state, state, reason)
        self._state = state
        self._generation += 1
