"""When a failed upstream call may be tried again, and how long to wait first.

The policy is exponential backoff with full jitter: the n-th retry waits a
uniformly random time in ``[0, min(backoff_max, backoff_base * 2**(n-1))]``,
which spreads a burst of failing clients over time instead of having them
retry in lockstep. A 429's ``Retry-After`` is a floor: we never come back
sooner than the upstream asked.

Why not ``tenacity``: its retry loop wraps a call, while a streamed reply is an
async generator that may only be retried until its first content chunk, with
failover and breaker accounting interleaved; the loop in
:mod:`daehwa.llm.resilience` is a dozen lines and this module is its policy.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from daehwa.errors import ProviderError, RateLimited

__all__ = ["NEVER_RETRY_STATUSES", "RetryPolicy", "is_retryable"]

#: Upstream answers that the same request can never turn into a success.
NEVER_RETRY_STATUSES = frozenset({400, 401, 403, 404, 405, 413, 422})


def is_retryable(error: BaseException) -> bool:
    """True if ``error`` is transient: a connect error, timeout, 429 or 5xx.

    Providers mark each :class:`ProviderError` (``retryable``); a client-error
    status overrides the flag, so a misclassified 4xx is still never retried.
    Anything that is not a ProviderError (a bug, a cancellation) is not retried.
    """
    if not isinstance(error, ProviderError):
        return False
    if error.upstream_status in NEVER_RETRY_STATUSES:
        return False
    return error.retryable


@dataclass(slots=True, frozen=True)
class RetryPolicy:
    """How many attempts one model gets, and the backoff between them."""

    max_attempts: int = 3
    backoff_base: float = 0.25
    backoff_max: float = 4.0

    def backoff(self, retry: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry)."""
        ceiling = min(self.backoff_max, self.backoff_base * (2 ** (retry - 1)))
        return (rng or random).uniform(0.0, ceiling)

    def delay(self, retry: int, error: ProviderError, rng: random.Random | None = None) -> float:
        """The wait before ``retry``: the jittered backoff, at least the upstream's Retry-After."""
        wait = self.backoff(retry, rng)
        if isinstance(error, RateLimited) and error.retry_after is not None:
            wait = max(wait, error.retry_after)
        return wait
