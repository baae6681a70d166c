"""The circuit breaker's state machine, the bulkhead and the retry policy, on a fake clock."""

from __future__ import annotations

import asyncio
import logging
import random

import pytest

from daehwa.config import ModelSettings, ResilienceSettings
from daehwa.errors import Busy, CircuitOpen, ProviderError, ProviderTimeout, RateLimited
from daehwa.llm.breaker import BreakerState, CircuitBreaker
from daehwa.llm.bulkhead import Bulkhead
from daehwa.llm.retry import RetryPolicy, is_retryable
from daehwa.llm.upstreams import UpstreamGuards, upstream_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, **kw: float) -> CircuitBreaker:
    options: dict[str, float] = {
        "error_rate": 0.5,
        "min_calls": 4,
        "window": 10.0,
        "cooldown": 5.0,
        "probes": 1,
    }
    options.update(kw)
    return CircuitBreaker(
        "up",
        error_rate=options["error_rate"],
        min_calls=int(options["min_calls"]),
        window=options["window"],
        cooldown=options["cooldown"],
        probes=int(options["probes"]),
        clock=clock,
    )


def run(b: CircuitBreaker, outcomes: str) -> None:
    """``s`` success, ``f`` failure, ``n`` neutral, one call each."""
    for outcome in outcomes:
        permit = b.acquire()
        {"s": permit.success, "f": permit.failure, "n": permit.release}[outcome]()


def test_stays_closed_below_the_minimum_number_of_calls() -> None:
    b = breaker(Clock())
    run(b, "fff")
    assert b.state is BreakerState.CLOSED


def test_opens_when_the_error_rate_reaches_the_threshold() -> None:
    b = breaker(Clock())
    run(b, "ssf")
    assert b.state is BreakerState.CLOSED
    run(b, "f")  # 2 of 4 = 50 %
    assert b.state is BreakerState.OPEN
    assert b.opened == 1


def test_stays_closed_below_the_threshold() -> None:
    b = breaker(Clock())
    run(b, "sssfsssf")
    assert b.state is BreakerState.CLOSED


def test_neutral_outcomes_are_not_counted() -> None:
    b = breaker(Clock())
    run(b, "nnnnff")
    assert b.state is BreakerState.CLOSED
    assert b.window_counts() == (2, 2)


def test_failures_older_than_the_window_are_forgotten() -> None:
    clock = Clock()
    b = breaker(clock)
    run(b, "fff")
    clock.now += 11.0
    run(b, "sf")
    assert b.window_counts() == (2, 1)
    assert b.state is BreakerState.CLOSED


def test_an_open_breaker_refuses_calls_at_once() -> None:
    b = breaker(Clock())
    run(b, "ffff")
    for _ in range(3):
        with pytest.raises(CircuitOpen) as caught:
            b.acquire()
    assert caught.value.code == "circuit_open"
    assert b.rejected == 3


def test_after_the_cooldown_one_probe_closes_it() -> None:
    clock = Clock()
    b = breaker(clock)
    run(b, "ffff")
    clock.now += 5.0
    assert b.state is BreakerState.HALF_OPEN
    probe = b.acquire()
    assert probe.probe
    with pytest.raises(CircuitOpen):
        b.acquire()  # only one probe at a time
    probe.success()
    assert b.state is BreakerState.CLOSED
    assert b.window_counts() == (0, 0)  # a fresh window


def test_a_failed_probe_opens_it_again_for_a_full_cooldown() -> None:
    clock = Clock()
    b = breaker(clock)
    run(b, "ffff")
    clock.now += 5.0
    b.acquire().failure()
    assert b.state is BreakerState.OPEN
    clock.now += 4.9
    with pytest.raises(CircuitOpen):
        b.acquire()
    clock.now += 0.1
    assert b.state is BreakerState.HALF_OPEN
    assert b.opened == 2


def test_several_probes_must_all_succeed() -> None:
    clock = Clock()
    b = breaker(clock, probes=2)
    run(b, "ffff")
    clock.now += 5.0
    first, second = b.acquire(), b.acquire()
    with pytest.raises(CircuitOpen):
        b.acquire()
    first.success()
    assert b.state is BreakerState.HALF_OPEN
    second.success()
    assert b.state is BreakerState.CLOSED


def test_a_cancelled_probe_frees_its_slot() -> None:
    clock = Clock()
    b = breaker(clock)
    run(b, "ffff")
    clock.now += 5.0
    b.acquire().release()
    assert b.state is BreakerState.HALF_OPEN
    b.acquire().success()
    assert b.state is BreakerState.CLOSED


def test_outcomes_of_calls_from_an_earlier_period_are_ignored() -> None:
    clock = Clock()
    b = breaker(clock)
    early = b.acquire()
    run(b, "ffff")
    clock.now += 5.0
    probe = b.acquire()
    early.failure()  # started while closed: must not decide the probe
    assert b.state is BreakerState.HALF_OPEN
    probe.success()
    assert b.state is BreakerState.CLOSED


def test_a_permit_reports_once() -> None:
    b = breaker(Clock())
    permit = b.acquire()
    permit.failure()
    permit.failure()
    assert b.window_counts() == (1, 1)


def test_transitions_are_logged_as_warnings(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    b = breaker(clock)
    with caplog.at_level(logging.WARNING, logger="daehwa.llm.breaker"):
        run(b, "ffff")
        clock.now += 5.0
        b.acquire().success()
    moves = [r.getMessage() for r in caplog.records]
    assert len(moves) == 3
    assert "closed -> open" in moves[0]
    assert "open -> half_open" in moves[1]
    assert "half_open -> closed" in moves[2]
    assert all(r.levelno == logging.WARNING for r in caplog.records)


def test_snapshot_shows_state_and_counts() -> None:
    b = breaker(Clock())
    run(b, "sfff")
    with pytest.raises(CircuitOpen):
        b.acquire()
    snap = b.snapshot()
    assert snap == {
        "name": "up",
        "state": "open",
        "window_calls": 4,
        "window_failures": 3,
        "error_rate": 0.75,
        "rejected_total": 1,
        "opened_total": 1,
        "probes_in_flight": 0,
    }


# -- bulkhead ----------------------------------------------------------------------


async def test_bulkhead_refuses_at_once_without_a_queue() -> None:
    bulkhead = Bulkhead("up", limit=2, queue_timeout=0)
    await bulkhead.acquire()
    await bulkhead.acquire()
    with pytest.raises(Busy) as caught:
        await bulkhead.acquire()
    assert caught.value.status == 503
    assert bulkhead.snapshot() == {"limit": 2, "in_flight": 2, "waiting": 0, "refused_total": 1}


async def test_bulkhead_waiter_gets_a_freed_slot() -> None:
    bulkhead = Bulkhead("up", limit=1, queue_timeout=30)
    await bulkhead.acquire()
    waiter = asyncio.create_task(bulkhead.acquire())
    await asyncio.sleep(0)
    assert bulkhead.waiting == 1
    bulkhead.release()
    await waiter
    assert (bulkhead.in_flight, bulkhead.waiting) == (1, 0)


async def test_bulkhead_waiter_gives_up_after_the_queue_timeout() -> None:
    bulkhead = Bulkhead("up", limit=1, queue_timeout=0.01)
    await bulkhead.acquire()
    with pytest.raises(Busy):
        await bulkhead.acquire()
    assert (bulkhead.in_flight, bulkhead.waiting, bulkhead.refused) == (1, 0, 1)
    bulkhead.release()
    await bulkhead.acquire()  # the timed-out waiter left no phantom claim behind


async def test_a_cancelled_waiter_leaves_no_trace() -> None:
    bulkhead = Bulkhead("up", limit=1, queue_timeout=30)
    await bulkhead.acquire()
    waiter = asyncio.create_task(bulkhead.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert (bulkhead.in_flight, bulkhead.waiting) == (1, 0)


# -- retry policy ------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_client_errors_are_never_retried_whatever_the_flag(status: int) -> None:
    error = ProviderError("no", retryable=True, upstream_status=status)
    assert not is_retryable(error)


def test_transient_errors_are_retried() -> None:
    assert is_retryable(ProviderError("boom", retryable=True, upstream_status=503))
    assert is_retryable(ProviderError("reset", retryable=True))
    assert is_retryable(ProviderTimeout("slow"))
    assert is_retryable(RateLimited("slow down", retry_after=1.0))
    assert not is_retryable(RateLimited("quota", retryable=False))
    assert not is_retryable(CircuitOpen("open"))
    assert not is_retryable(ValueError("a bug"))


def test_backoff_is_full_jitter_under_a_growing_capped_ceiling() -> None:
    policy = RetryPolicy(max_attempts=10, backoff_base=0.5, backoff_max=3.0)
    rng = random.Random(7)
    for retry, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (8, 3.0)]:
        waits = [policy.backoff(retry, rng) for _ in range(300)]
        assert all(0.0 <= w <= ceiling for w in waits)
        # Full jitter spreads over the whole range, not just near the ceiling.
        assert min(waits) < ceiling * 0.1
        assert max(waits) > ceiling * 0.9


def test_retry_after_is_a_floor() -> None:
    policy = RetryPolicy(backoff_base=0.1, backoff_max=0.2)
    limited = RateLimited("slow down", retry_after=2.5)
    assert all(policy.delay(1, limited, random.Random(i)) == 2.5 for i in range(20))
    plain = ProviderError("boom", retryable=True, upstream_status=500)
    assert policy.delay(1, plain, random.Random(1)) <= 0.1


# -- guards ------------------------------------------------------------------------


def test_models_on_one_base_url_share_a_guard() -> None:
    guards = UpstreamGuards(ResilienceSettings(breaker_min_calls=3, max_concurrency=7))
    glm = ModelSettings(provider="openai", base_url="https://api.z.ai/api/paas/v4/")
    air = ModelSettings(provider="openai", base_url="https://api.z.ai/api/paas/v4")
    other = ModelSettings(provider="openai", base_url="http://127.0.0.1:9000/v1")
    assert guards.get(upstream_key(glm)) is guards.get(upstream_key(air))
    assert guards.get(upstream_key(glm)) is not guards.get(upstream_key(other))
    guard = guards.get(upstream_key(other))
    assert (guard.breaker.min_calls, guard.bulkhead.limit) == (3, 7)
    assert [s["name"] for s in guards.snapshot()] == [
        "http://127.0.0.1:9000/v1",
        "https://api.z.ai/api/paas/v4",
    ]


def test_upstream_key_hides_credentials() -> None:
    secret = ModelSettings(provider="openai", base_url="https://user:s3cret@host.example/v1?k=x")
    assert upstream_key(secret) == "https://host.example/v1"
    assert upstream_key(ModelSettings(provider="local")) == "local"


def test_states_for_metrics() -> None:
    guards = UpstreamGuards(ResilienceSettings(breaker_min_calls=1))
    guards.get("a")
    guards.get("b").breaker.acquire().failure()
    assert guards.states() == {"a": "closed", "b": "open"}
