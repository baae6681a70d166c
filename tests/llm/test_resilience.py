"""ResilientModel against small in-repo models that fail on purpose."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import pytest

from daehwa.config import ResilienceSettings
from daehwa.errors import Busy, CircuitOpen, InvalidInput, ProviderError, RateLimited
from daehwa.llm.base import ChatModel, Chunk, GenerationParams
from daehwa.llm.breaker import BreakerState
from daehwa.llm.resilience import ResilientModel, UpstreamGuard
from daehwa.llm.retry import RetryPolicy
from daehwa.messages import Message, Role, ToolCall, Usage

MESSAGES = [Message(Role.USER, "안녕")]
PARAMS = GenerationParams()
FAST = RetryPolicy(max_attempts=3, backoff_base=0.001, backoff_max=0.002)


def unavailable() -> ProviderError:
    return ProviderError("503 from upstream", retryable=True, upstream_status=503)


@dataclass
class Call:
    """What one call of a PlannedModel does, in order."""

    error: BaseException | None = None  # raised before any chunk
    prelude: list[Chunk] = field(default_factory=list)  # chunks without content
    pieces: list[str] = field(default_factory=lambda: ["안녕", "하세요"])
    hang: float = 0.0  # seconds before the first chunk
    gap: float = 0.0  # seconds between pieces
    fail_after: BaseException | None = None  # raised after the pieces
    finish: bool = True


class PlannedModel:
    """Each call follows the next :class:`Call` of its plan (the last one repeats)."""

    def __init__(self, name: str, *plan: Call) -> None:
        self.name = name
        self.plan = list(plan) or [Call()]
        self.calls = 0
        self.log: list[str] = []  # "open N" / "close N", to check attempts never overlap
        self.open = 0
        self.closed_models = 0

    async def stream(
        self, messages: Sequence[Message], params: GenerationParams
    ) -> AsyncIterator[Chunk]:
        self.calls += 1
        number = self.calls
        call = self.plan[min(number, len(self.plan)) - 1]
        self.log.append(f"open {number}")
        self.open += 1
        try:
            if call.hang:
                await asyncio.sleep(call.hang)
            if call.error is not None:
                raise call.error
            for chunk in call.prelude:
                yield chunk
            for i, piece in enumerate(call.pieces):
                if i and call.gap:
                    await asyncio.sleep(call.gap)
                yield Chunk(text=piece)
            if call.fail_after is not None:
                raise call.fail_after
            if call.finish:
                yield Chunk(finish_reason="stop", usage=Usage(2, len(call.pieces)))
        finally:
            self.open -= 1
            self.log.append(f"close {number}")

    async def aclose(self) -> None:
        self.closed_models += 1


def wrap(
    model: ChatModel,
    *,
    fallbacks: Sequence[ChatModel] = (),
    guard: UpstreamGuard | None = None,
    policy: RetryPolicy = FAST,
    budget: float | None = None,
    attempt_timeout: float | None = None,
) -> ResilientModel:
    return ResilientModel(
        model,
        guard=guard or UpstreamGuard.create(model.name),
        policy=policy,
        fallbacks=fallbacks,
        budget=budget,
        attempt_timeout=attempt_timeout,
        rng=random.Random(1),
    )


async def collect(model: ChatModel) -> list[Chunk]:
    stream = model.stream(MESSAGES, PARAMS)
    try:
        return [chunk async for chunk in stream]
    finally:
        await stream.aclose()  # type: ignore[attr-defined]


def text(chunks: list[Chunk]) -> str:
    return "".join(c.text for c in chunks)


async def until(condition: Callable[[], bool]) -> None:
    """Let other tasks run until ``condition`` holds (bounded, so a bug fails the test)."""
    for _ in range(5000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition never held")


def idle(guard: UpstreamGuard) -> bool:
    return guard.bulkhead.in_flight == 0 and guard.bulkhead.waiting == 0


# -- the plain path ----------------------------------------------------------------


async def test_a_healthy_model_passes_through_unchanged() -> None:
    model = PlannedModel("a", Call(pieces=["하나", "둘", "셋"]))
    wrapped = wrap(model)
    chunks = await collect(wrapped)
    assert [c.text for c in chunks] == ["하나", "둘", "셋", ""]
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].usage == Usage(2, 3)
    assert wrapped.name == "a"
    assert idle(wrapped.guard)
    assert wrapped.guard.breaker.window_counts() == (1, 0)


async def test_an_empty_answer_is_a_success() -> None:
    wrapped = wrap(PlannedModel("a", Call(pieces=[])))
    chunks = await collect(wrapped)
    assert [c.finish_reason for c in chunks] == ["stop"]
    assert wrapped.guard.breaker.window_counts() == (1, 0)


async def test_reasoning_and_tool_calls_count_as_content() -> None:
    call = ToolCall("c1", "get_weather", '{"location": "서울"}')
    model = PlannedModel(
        "a",
        Call(prelude=[Chunk(reasoning="생각")], pieces=[], fail_after=unavailable()),
        Call(prelude=[Chunk(tool_calls=[call])], pieces=[]),
    )
    with pytest.raises(ProviderError):
        await collect(wrap(model))
    assert model.calls == 1  # reasoning was yielded: no retry after it
    model = PlannedModel("b", Call(prelude=[Chunk(tool_calls=[call])], pieces=[]))
    chunks = await collect(wrap(model))
    assert chunks[0].tool_calls == [call]


async def test_aclose_closes_the_primary_only() -> None:
    primary, fallback = PlannedModel("a"), PlannedModel("b")
    await wrap(primary, fallbacks=[fallback]).aclose()
    assert (primary.closed_models, fallback.closed_models) == (1, 0)


# -- retries -----------------------------------------------------------------------


async def test_transient_failures_are_retried_until_one_succeeds() -> None:
    model = PlannedModel("a", Call(error=unavailable()), Call(error=unavailable()), Call())
    wrapped = wrap(model)
    assert text(await collect(wrapped)) == "안녕하세요"
    assert model.calls == 3
    assert wrapped.guard.breaker.window_counts() == (3, 2)


async def test_each_attempt_is_closed_before_the_next_opens() -> None:
    model = PlannedModel(
        "a",
        Call(prelude=[Chunk()], pieces=[], error=None, fail_after=unavailable(), finish=False),
        Call(error=unavailable()),
        Call(),
    )
    await collect(wrap(model))
    assert model.log == ["open 1", "close 1", "open 2", "close 2", "open 3", "close 3"]


async def test_chunks_of_a_failed_attempt_are_not_passed_on() -> None:
    prelude = [Chunk(usage=Usage(9, 9))]
    model = PlannedModel("a", Call(prelude=prelude, pieces=[], fail_after=unavailable()), Call())
    chunks = await collect(wrap(model))
    assert all(c.usage != Usage(9, 9) for c in chunks)
    assert text(chunks) == "안녕하세요"


async def test_gives_up_after_max_attempts_with_the_last_error() -> None:
    model = PlannedModel("a", Call(error=unavailable()))
    wrapped = wrap(model, policy=RetryPolicy(4, 0.001, 0.001))
    with pytest.raises(ProviderError) as caught:
        await collect(wrapped)
    assert caught.value.upstream_status == 503
    assert model.calls == 4
    assert idle(wrapped.guard)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_client_errors_are_not_retried(status: int) -> None:
    model = PlannedModel("a", Call(error=ProviderError("no", upstream_status=status)), Call())
    wrapped = wrap(model)
    with pytest.raises(ProviderError) as caught:
        await collect(wrapped)
    assert caught.value.upstream_status == status
    assert model.calls == 1
    # A refusal is an answer: it does not count against the upstream's health.
    assert wrapped.guard.breaker.window_counts() == (1, 0)


async def test_insufficient_quota_is_not_retried() -> None:
    quota = RateLimited("insufficient_quota", retryable=False, code="insufficient_quota")
    model = PlannedModel("a", Call(error=quota), Call())
    with pytest.raises(RateLimited):
        await collect(wrap(model))
    assert model.calls == 1


async def test_a_rate_limit_is_retried_after_its_retry_after() -> None:
    model = PlannedModel("a", Call(error=RateLimited("slow down", retry_after=0.01)), Call())
    assert text(await collect(wrap(model))) == "안녕하세요"
    assert model.calls == 2


async def test_no_retry_that_would_wait_past_the_budget() -> None:
    limited = RateLimited("slow down", retry_after=30.0)
    model = PlannedModel("a", Call(error=limited), Call())
    with pytest.raises(RateLimited):
        await collect(wrap(model, budget=8.0))
    assert model.calls == 1


async def test_no_retry_once_content_was_sent() -> None:
    model = PlannedModel("a", Call(pieces=["부분"], fail_after=unavailable()), Call())
    fallback = PlannedModel("b")
    wrapped = wrap(model, fallbacks=[fallback])
    got: list[str] = []
    with pytest.raises(ProviderError):
        async for chunk in wrapped.stream(MESSAGES, PARAMS):
            got.append(chunk.text)
    assert got == ["부분"]
    assert (model.calls, fallback.calls) == (1, 0)
    assert idle(wrapped.guard)
    assert wrapped.guard.breaker.window_counts() == (1, 1)


async def test_a_bug_in_a_model_is_not_retried() -> None:
    model = PlannedModel("a", Call(error=KeyError("bug")), Call())
    fallback = PlannedModel("b")
    wrapped = wrap(model, fallbacks=[fallback])
    with pytest.raises(KeyError):
        await collect(wrapped)
    assert (model.calls, fallback.calls) == (1, 0)
    assert idle(wrapped.guard)
    assert wrapped.guard.breaker.window_counts() == (0, 0)


async def test_invalid_input_from_a_model_is_not_failed_over() -> None:
    model = PlannedModel("a", Call(error=InvalidInput("too long")))
    fallback = PlannedModel("b")
    with pytest.raises(InvalidInput):
        await collect(wrap(model, fallbacks=[fallback]))
    assert fallback.calls == 0


# -- failover ----------------------------------------------------------------------


async def test_fails_over_after_the_primary_gives_up() -> None:
    primary = PlannedModel("a", Call(error=unavailable()))
    fallback = PlannedModel("b", Call(pieces=["대체", " 답변"]))
    assert text(await collect(wrap(primary, fallbacks=[fallback]))) == "대체 답변"
    assert (primary.calls, fallback.calls) == (3, 1)


async def test_a_client_error_fails_over_without_retrying() -> None:
    primary = PlannedModel("a", Call(error=ProviderError("bad key", upstream_status=401)))
    fallback = PlannedModel("b")
    assert text(await collect(wrap(primary, fallbacks=[fallback]))) == "안녕하세요"
    assert primary.calls == 1


async def test_fallbacks_are_tried_in_order_and_the_last_error_is_raised() -> None:
    first = PlannedModel("a", Call(error=ProviderError("bad", upstream_status=400)))
    second = PlannedModel("b", Call(error=ProviderError("gone", upstream_status=404)))
    third = PlannedModel("c", Call(error=unavailable()))
    wrapped = wrap(first, fallbacks=[second, third])
    assert wrapped.route_names == ["a", "b", "c"]
    with pytest.raises(ProviderError) as caught:
        await collect(wrapped)
    assert caught.value.upstream_status == 503
    assert (first.calls, second.calls, third.calls) == (1, 1, 3)


async def test_an_open_circuit_fails_over_with_no_upstream_call() -> None:
    guard = UpstreamGuard.create("a", ResilienceSettings(breaker_min_calls=2))
    primary = PlannedModel("a", Call(error=unavailable()))
    single = RetryPolicy(1, 0.001, 0.001)
    with pytest.raises(ProviderError):
        await collect(wrap(primary, guard=guard, policy=single))
    with pytest.raises(ProviderError):
        await collect(wrap(primary, guard=guard, policy=single))
    assert guard.breaker.state is BreakerState.OPEN
    fallback = PlannedModel("b")
    wrapped = wrap(primary, guard=guard, fallbacks=[fallback])
    for _ in range(5):
        assert text(await collect(wrapped)) == "안녕하세요"
    assert primary.calls == 2  # none while open
    assert fallback.calls == 5


async def test_an_open_circuit_without_fallback_fails_at_once() -> None:
    guard = UpstreamGuard.create("a", ResilienceSettings(breaker_min_calls=3))
    model = PlannedModel("a", Call(error=unavailable()))
    wrapped = wrap(model, guard=guard)
    with pytest.raises(ProviderError):
        await collect(wrapped)  # three failed attempts open it
    assert guard.breaker.state is BreakerState.OPEN
    for _ in range(10):
        with pytest.raises(CircuitOpen):
            await collect(wrapped)
    assert model.calls == 3
    assert guard.breaker.rejected == 10


async def test_models_sharing_an_upstream_share_its_breaker() -> None:
    guard = UpstreamGuard.create("shared", ResilienceSettings(breaker_min_calls=3))
    glm = PlannedModel("glm", Call(error=unavailable()))
    air = PlannedModel("air")
    with pytest.raises(ProviderError):
        await collect(wrap(glm, guard=guard))
    with pytest.raises(CircuitOpen):
        await collect(wrap(air, guard=guard))
    assert air.calls == 0


async def test_a_wrapped_fallback_brings_its_own_guard_and_policy() -> None:
    fb_guard = UpstreamGuard.create("b")
    fallback = wrap(
        PlannedModel("b", Call(error=unavailable())),
        guard=fb_guard,
        policy=RetryPolicy(2, 0.001, 0.001),
    )
    primary = PlannedModel("a", Call(error=ProviderError("bad", upstream_status=400)))
    wrapped = wrap(primary, fallbacks=[fallback])
    with pytest.raises(ProviderError):
        await collect(wrapped)
    assert fallback.model.calls == 2  # type: ignore[attr-defined]
    assert fb_guard.breaker.window_counts() == (2, 2)


# -- bulkhead ----------------------------------------------------------------------


async def test_a_full_bulkhead_fails_with_busy() -> None:
    guard = UpstreamGuard.create("a", ResilienceSettings(max_concurrency=1, queue_timeout=0))
    model = PlannedModel("a", Call(pieces=["하나", "둘"]))
    wrapped = wrap(model, guard=guard)
    first = wrapped.stream(MESSAGES, PARAMS)
    assert (await anext(first)).text == "하나"  # holds the only slot
    with pytest.raises(Busy):
        await collect(wrapped)
    await first.aclose()  # type: ignore[attr-defined]
    assert idle(guard)
    assert text(await collect(wrapped)) == "하나둘"
    assert model.calls == 2  # the refused call never reached the model


async def test_a_full_bulkhead_fails_over() -> None:
    guard = UpstreamGuard.create("a", ResilienceSettings(max_concurrency=1, queue_timeout=0))
    fallback = PlannedModel("b", Call(pieces=["대체"]))
    wrapped = wrap(PlannedModel("a"), guard=guard, fallbacks=[fallback])
    first = wrapped.stream(MESSAGES, PARAMS)
    await anext(first)
    assert text(await collect(wrapped)) == "대체"
    await first.aclose()  # type: ignore[attr-defined]


async def test_the_bulkhead_bounds_concurrent_streams() -> None:
    guard = UpstreamGuard.create("a", ResilienceSettings(max_concurrency=3, queue_timeout=30))
    model = PlannedModel("a", Call(pieces=["a", "b", "c"], gap=0.005))
    wrapped = wrap(model, guard=guard)
    peak = 0

    async def one() -> None:
        nonlocal peak
        async for _ in wrapped.stream(MESSAGES, PARAMS):
            peak = max(peak, model.open)

    await asyncio.gather(*(one() for _ in range(12)))
    assert peak == 3
    assert model.calls == 12
    assert idle(guard)


# -- timeouts and cancellation -----------------------------------------------------


async def test_a_slow_primary_fails_over_within_the_budget() -> None:
    primary = PlannedModel("a", Call(hang=3600))
    fallback = PlannedModel("b", Call(pieces=["빠른 답"]))
    wrapped = wrap(primary, fallbacks=[fallback], attempt_timeout=0.05)
    assert text(await collect(wrapped)) == "빠른 답"
    assert primary.log == ["open 1", "close 1"]  # no retry of a slow model when a fallback waits
    assert wrapped.guard.breaker.window_counts() == (1, 1)


async def test_a_slow_single_model_is_retried() -> None:
    model = PlannedModel("a", Call(hang=3600), Call())
    wrapped = wrap(model, attempt_timeout=0.05)
    assert text(await collect(wrapped)) == "안녕하세요"
    assert model.calls == 2


async def test_the_last_attempt_has_no_attempt_timeout() -> None:
    # The caller's first-token deadline decides about the last attempt, not the wrapper.
    model = PlannedModel("a", Call(hang=0.2))
    wrapped = wrap(model, policy=RetryPolicy(1, 0.001, 0.001), attempt_timeout=0.01)
    assert text(await collect(wrapped)) == "안녕하세요"


async def test_a_caller_deadline_cancels_cleanly() -> None:
    # What ChatService does: one asyncio timeout around the whole iteration.
    model = PlannedModel("a", Call(hang=3600))
    wrapped = wrap(model)
    stream = wrapped.stream(MESSAGES, PARAMS)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            async for _ in stream:
                pass
    await stream.aclose()  # type: ignore[attr-defined]
    assert model.log == ["open 1", "close 1"]
    assert idle(wrapped.guard)
    assert wrapped.guard.breaker.window_counts() == (0, 0)  # not slow by its own measure


async def test_a_cancelled_slow_call_counts_as_a_failure() -> None:
    model = PlannedModel("a", Call(hang=3600))
    wrapped = wrap(model, policy=RetryPolicy(1, 0.001, 0.001), attempt_timeout=0.02)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await collect(wrapped)
    assert wrapped.guard.breaker.window_counts() == (1, 1)


async def test_cancelled_during_backoff() -> None:
    model = PlannedModel("a", Call(error=RateLimited("slow down", retry_after=3600)))
    wrapped = wrap(model)
    task = asyncio.create_task(collect(wrapped))
    await until(lambda: model.calls == 1 and idle(wrapped.guard))  # in the backoff sleep
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert model.calls == 1
    assert idle(wrapped.guard)


async def test_cancelled_mid_stream() -> None:
    model = PlannedModel("a", Call(pieces=["하나", "둘"], gap=3600))
    wrapped = wrap(model)
    got: list[str] = []

    async def consume() -> None:
        async for chunk in wrapped.stream(MESSAGES, PARAMS):
            got.append(chunk.text)

    task = asyncio.create_task(consume())
    await until(lambda: bool(got))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert model.log == ["open 1", "close 1"]
    assert idle(wrapped.guard)
    assert wrapped.guard.breaker.window_counts() == (0, 0)


async def test_a_cancelled_half_open_probe_frees_the_probe() -> None:
    class Clock:
        now = 0.0

        def __call__(self) -> float:
            return self.now

    clock = Clock()
    settings = ResilienceSettings(breaker_min_calls=1, breaker_cooldown=10)
    guard = UpstreamGuard.create("a", settings, clock=clock)
    model = PlannedModel("a", Call(error=unavailable()), Call(hang=3600), Call())
    wrapped = wrap(model, guard=guard, policy=RetryPolicy(1, 0.001, 0.001))
    with pytest.raises(ProviderError):
        await collect(wrapped)
    clock.now = 10.0
    task = asyncio.create_task(collect(wrapped))
    await until(lambda: model.calls == 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert guard.breaker.state is BreakerState.HALF_OPEN
    assert text(await collect(wrapped)) == "안녕하세요"  # the next probe may go
    assert guard.breaker.state is BreakerState.CLOSED


async def test_closing_after_the_finish_chunk_counts_as_success() -> None:
    wrapped = wrap(PlannedModel("a", Call(pieces=["끝"])))
    stream = wrapped.stream(MESSAGES, PARAMS)
    async for chunk in stream:
        if chunk.finish_reason:
            break
    await stream.aclose()  # type: ignore[attr-defined]
    assert wrapped.guard.breaker.window_counts() == (1, 0)
    assert idle(wrapped.guard)


def test_from_settings_takes_the_resilience_section() -> None:
    settings = ResilienceSettings(
        max_attempts=5, backoff_base=0.5, backoff_max=2, first_token_timeout=6, attempt_timeout=4
    )
    guard = UpstreamGuard.create("a", settings)
    wrapped = ResilientModel.from_settings(
        PlannedModel("a"), settings, guard=guard, fallbacks=[PlannedModel("b")]
    )
    assert wrapped.policy == RetryPolicy(5, 0.5, 2.0)
    assert (wrapped.budget, wrapped.attempt_timeout) == (6.0, 4.0)
    assert wrapped.guard is guard
    assert wrapped.route_names == ["a", "b"]


async def test_wrap_models_follows_the_configured_fallbacks() -> None:
    from daehwa.config import Settings
    from daehwa.llm.resilience import UpstreamGuards, wrap_models

    settings = Settings(
        models={
            "glm": {
                "provider": "openai",
                "base_url": "https://api.z.ai/v4",
                "fallbacks": ["air", "local"],
            },
            "air": {"provider": "openai", "base_url": "https://api.z.ai/v4/"},
            "local": {"provider": "scripted"},
        },
        chat={"default_model": "glm"},
        resilience={"max_attempts": 2, "first_token_timeout": 3},
    )
    bare = {name: PlannedModel(name, Call(error=unavailable())) for name in settings.models}
    bare["local"] = PlannedModel("local", Call(pieces=["로컬"]))
    guards = UpstreamGuards(settings.resilience)
    wrapped = wrap_models(bare, settings, guards)
    assert wrapped["glm"].route_names == ["glm", "air", "local"]
    assert wrapped["air"].route_names == ["air"]
    assert wrapped["glm"].guard is wrapped["air"].guard  # one upstream, one breaker
    assert wrapped["glm"].guard is not wrapped["local"].guard
    assert (wrapped["glm"].policy.max_attempts, wrapped["glm"].budget) == (2, 3.0)
    assert text(await collect(wrapped["glm"])) == "로컬"
    assert (bare["glm"].calls, bare["air"].calls, bare["local"].calls) == (2, 2, 1)
    assert guards.states() == {"https://api.z.ai/v4": "closed", "scripted": "closed"}
    for model in wrapped.values():
        await model.aclose()
    assert [bare[n].closed_models for n in ("glm", "air", "local")] == [1, 1, 1]
