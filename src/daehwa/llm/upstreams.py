"""The guards of one upstream: its circuit breaker and its bulkhead.

Every model that calls the same upstream (the same base URL) shares one
:class:`UpstreamGuard`, so failures seen through one model open the breaker
for all of them, and the concurrency bound holds for the upstream as a whole.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from daehwa.config import ModelSettings, ResilienceSettings
from daehwa.llm.breaker import CircuitBreaker
from daehwa.llm.bulkhead import Bulkhead

__all__ = ["UpstreamGuard", "UpstreamGuards", "upstream_key"]


def upstream_key(settings: ModelSettings) -> str:
    """The upstream a configured model calls: its base URL, else its provider.

    Credentials and query strings are dropped: the key shows up in logs and /metrics.
    """
    if not settings.base_url:
        return settings.provider
    parts = urlsplit(settings.base_url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


@dataclass(slots=True)
class UpstreamGuard:
    """The circuit breaker and bulkhead of one upstream."""

    name: str
    breaker: CircuitBreaker
    bulkhead: Bulkhead

    @classmethod
    def create(
        cls,
        name: str,
        settings: ResilienceSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> UpstreamGuard:
        """A guard configured from ``settings`` (defaults when None)."""
        s = settings or ResilienceSettings()
        breaker = CircuitBreaker(
            name,
            error_rate=s.breaker_error_rate,
            min_calls=s.breaker_min_calls,
            window=s.breaker_window,
            cooldown=s.breaker_cooldown,
            probes=s.breaker_probes,
            clock=clock,
        )
        return cls(
            name, breaker, Bulkhead(name, limit=s.max_concurrency, queue_timeout=s.queue_timeout)
        )

    def snapshot(self) -> dict[str, Any]:
        """Breaker state and counts plus bulkhead occupancy, for logs and /metrics."""
        return {**self.breaker.snapshot(), "bulkhead": self.bulkhead.snapshot()}


class UpstreamGuards:
    """One :class:`UpstreamGuard` per upstream key, created on first use."""

    def __init__(
        self, settings: ResilienceSettings, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._guards: dict[str, UpstreamGuard] = {}

    def get(self, key: str) -> UpstreamGuard:
        """The guard of upstream ``key`` (see :func:`upstream_key`)."""
        guard = self._guards.get(key)
        if guard is None:
            guard = self._guards[key] = UpstreamGuard.create(key, self.settings, clock=self._clock)
        return guard

    def snapshot(self) -> list[dict[str, Any]]:
        """Every guard's snapshot, sorted by upstream."""
        return [self._guards[key].snapshot() for key in sorted(self._guards)]

    def states(self) -> dict[str, str]:
        """``{upstream: breaker state}`` (``closed``, ``half_open`` or ``open``)."""
        return {key: guard.breaker.state.value for key, guard in self._guards.items()}
