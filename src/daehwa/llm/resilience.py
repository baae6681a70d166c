"""The resilience wrapper every model call goes through.

:class:`ResilientModel` is a :class:`~daehwa.llm.base.ChatModel` around a
primary model and an ordered list of fallback models. Until the first content
chunk (text, reasoning or tool calls) it may:

- retry a transient failure (connect error, timeout, 429, 5xx) on the same
  model, with exponential backoff and full jitter (:mod:`daehwa.llm.retry`),
  never past its first-token budget;
- give up on a model whose first token takes longer than ``attempt_timeout``
  while another model or attempt is left;
- move to the next fallback model when a model fails for good, when its
  upstream's circuit breaker is open, or when its bulkhead is full.

Once a content chunk has been yielded the reply is committed to that one call:
a later failure propagates, with no retry and no switch. Every attempt's
stream is closed before the next starts.

The first-token deadline (fallback reply) and the mid-stream stall bound are
the caller's (:class:`~daehwa.chat.service.ChatService`), which cancels this
iterator at any point; cancelling is always safe here.

Each upstream (base URL) has one :class:`~daehwa.llm.upstreams.UpstreamGuard`
— a circuit breaker and a bulkhead — shared by every model that calls it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass

from daehwa.config import ResilienceSettings, Settings
from daehwa.errors import Busy, CircuitOpen, DaehwaError, ProviderError, ProviderTimeout
from daehwa.llm.base import ChatModel, Chunk, GenerationParams
from daehwa.llm.breaker import Permit
from daehwa.llm.retry import RetryPolicy, is_retryable
from daehwa.llm.upstreams import UpstreamGuard, UpstreamGuards, upstream_key
from daehwa.messages import Message

__all__ = ["ResilientModel", "UpstreamGuard", "UpstreamGuards", "upstream_key", "wrap_models"]

log = logging.getLogger(__name__)


@dataclass(slots=True, frozen=True)
class _Route:
    """One model to try, with its upstream's guard and its retry policy."""

    model: ChatModel
    guard: UpstreamGuard
    policy: RetryPolicy


# What an attempt tells its upstream's breaker.
_NEUTRAL, _SUCCESS, _FAILURE = 0, 1, 2


class _Attempt:
    """One call of one model: its stream, its breaker permit and bulkhead slot."""

    __slots__ = ("buffer", "ended", "exhausted", "iterator", "permit", "route")

    def __init__(self, route: _Route, permit: Permit) -> None:
        self.route = route
        self.permit = permit
        self.iterator: AsyncIterator[Chunk] | None = None
        # Chunks up to and including the first one with content.
        self.buffer: list[Chunk] = []
        self.exhausted = False
        self.ended = False

    async def read_first(self, messages: Sequence[Message], params: GenerationParams) -> None:
        """Read until the first content chunk (or the end of an empty answer)."""
        self.iterator = self.route.model.stream(messages, params)
        next_chunk = self.iterator.__anext__
        while True:
            try:
                chunk = await next_chunk()
            except StopAsyncIteration:
                self.exhausted = True
                return
            self.buffer.append(chunk)
            if chunk.text or chunk.reasoning or chunk.tool_calls:
                return

    async def end(self, outcome: int) -> None:
        """Close the stream, free the bulkhead slot and report to the breaker (once)."""
        if self.ended:
            return
        self.ended = True
        try:
            aclose = getattr(self.iterator, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            self.route.guard.bulkhead.release()
            if outcome == _SUCCESS:
                self.permit.success()
            elif outcome == _FAILURE:
                self.permit.failure()
            else:
                self.permit.release()


def _outcome_of(error: ProviderError) -> int:
    # Transient errors say the upstream is unhealthy; a refusal (4xx) is an answer.
    return _FAILURE if is_retryable(error) else _SUCCESS


class ResilientModel:
    """A :class:`ChatModel` that retries, fails over and respects its upstreams' guards.

    ``fallbacks`` are tried in order after ``model``; a fallback that is itself
    a ResilientModel contributes its own model, guard and retry policy (not its
    own fallbacks), while a bare one gets a private guard with default limits.
    ``budget`` is the first-token budget: no retry is started that would wait
    past it. ``attempt_timeout`` bounds one attempt's wait for its first
    content chunk whenever another attempt or model is left to try.
    :meth:`aclose` closes ``model`` only; fallbacks are closed by their owner.
    """

    def __init__(
        self,
        model: ChatModel,
        *,
        guard: UpstreamGuard | None = None,
        policy: RetryPolicy | None = None,
        fallbacks: Sequence[ChatModel] = (),
        budget: float | None = None,
        attempt_timeout: float | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.name = model.name
        self.model = model
        self.guard = guard or UpstreamGuard.create(model.name)
        self.policy = policy or RetryPolicy()
        self.budget = budget
        self.attempt_timeout = attempt_timeout
        self._rng = rng
        self._routes = [_Route(model, self.guard, self.policy)]
        for fallback in fallbacks:
            if isinstance(fallback, ResilientModel):
                self._routes.append(_Route(fallback.model, fallback.guard, fallback.policy))
            else:
                private = UpstreamGuard.create(fallback.name)
                self._routes.append(_Route(fallback, private, self.policy))

    @classmethod
    def from_settings(
        cls,
        model: ChatModel,
        settings: ResilienceSettings,
        *,
        guard: UpstreamGuard,
        fallbacks: Sequence[ChatModel] = (),
    ) -> ResilientModel:
        """A wrapper configured by the ``[resilience]`` settings."""
        return cls(
            model,
            guard=guard,
            policy=RetryPolicy(settings.max_attempts, settings.backoff_base, settings.backoff_max),
            fallbacks=fallbacks,
            budget=settings.first_token_timeout,
            attempt_timeout=settings.attempt_timeout,
        )

    @property
    def route_names(self) -> list[str]:
        """The models this wrapper tries, in order."""
        return [route.model.name for route in self._routes]

    async def stream(
        self, messages: Sequence[Message], params: GenerationParams
    ) -> AsyncIterator[Chunk]:
        """Stream from the first model that produces content; see the class docstring."""
        attempt = await self._first_content(messages, params)
        outcome = _NEUTRAL
        finished = False
        try:
            for chunk in attempt.buffer:
                finished = chunk.finish_reason is not None
                yield chunk
            if not attempt.exhausted and attempt.iterator is not None:
                # The per-token path: one check and one yield, nothing else.
                async for chunk in attempt.iterator:
                    if chunk.finish_reason is not None:
                        finished = True
                    yield chunk
            outcome = _SUCCESS
        except ProviderError as exc:
            outcome = _outcome_of(exc)
            raise
        finally:
            # Closed early by the caller: a reply that had finished still counts as a success.
            await attempt.end(_SUCCESS if finished and outcome == _NEUTRAL else outcome)

    async def aclose(self) -> None:
        """Close the primary model."""
        await self.model.aclose()

    # -- before the first token -----------------------------------------------

    async def _first_content(
        self, messages: Sequence[Message], params: GenerationParams
    ) -> _Attempt:
        """The first attempt that produced content, after retries and failover."""
        loop = asyncio.get_running_loop()
        deadline = None if self.budget is None else loop.time() + self.budget
        last_route = len(self._routes) - 1
        error: DaehwaError | None = None
        for index, route in enumerate(self._routes):
            if index:
                log.warning(
                    "%s failed before its first token (%s); failing over to %s",
                    self._routes[index - 1].model.name,
                    error.code if error else "?",
                    route.model.name,
                )
            attempts = route.policy.max_attempts
            for number in range(1, attempts + 1):
                final = index == last_route and number == attempts
                try:
                    return await self._attempt(
                        route, messages, params, None if final else self.attempt_timeout
                    )
                except (CircuitOpen, Busy) as exc:
                    error = exc  # nothing was called: the next model at once
                    break
                except ProviderError as exc:
                    error = exc
                    if not is_retryable(exc) or number == attempts:
                        break
                    if isinstance(exc, ProviderTimeout) and index < last_route:
                        break  # a slow upstream: spend the budget on the next model
                    delay = route.policy.delay(number, exc, self._rng)
                    if deadline is not None and loop.time() + delay >= deadline:
                        break  # the wait alone would overrun the first-token budget
                    log.info(
                        "%s: %s (%s); retry %d in %.2f s",
                        route.model.name,
                        exc.code,
                        exc.message,
                        number,
                        delay,
                    )
                    await asyncio.sleep(delay)
        assert error is not None
        raise error

    async def _attempt(
        self,
        route: _Route,
        messages: Sequence[Message],
        params: GenerationParams,
        first_token_within: float | None,
    ) -> _Attempt:
        """One call of ``route``'s model, read up to its first content chunk."""
        permit = route.guard.breaker.acquire()
        try:
            await route.guard.bulkhead.acquire()
        except BaseException:
            permit.release()
            raise
        attempt = _Attempt(route, permit)
        loop = asyncio.get_running_loop()
        started = loop.time()
        timer = asyncio.timeout(first_token_within)
        try:
            async with timer:
                await attempt.read_first(messages, params)
        except ProviderError as exc:
            await attempt.end(_outcome_of(exc))
            raise
        except TimeoutError:
            if not timer.expired():
                await attempt.end(_NEUTRAL)
                raise
            await attempt.end(_FAILURE)
            raise ProviderTimeout(
                f"{route.model.name}: no first token within {first_token_within:g} s",
                provider=route.model.name,
            ) from None
        except BaseException:
            # Cancelled (the caller's deadline or a stop): slowness still counts against it.
            slow = self.attempt_timeout is not None and (
                loop.time() - started >= self.attempt_timeout
            )
            await attempt.end(_FAILURE if slow else _NEUTRAL)
            raise
        return attempt


def wrap_models(
    models: Mapping[str, ChatModel], settings: Settings, guards: UpstreamGuards
) -> dict[str, ResilientModel]:
    """Wrap every configured model, with the fallbacks its ``[models.NAME]`` section lists.

    Models on one upstream (see :func:`upstream_key`) share one guard from
    ``guards``. Closing each wrapper closes each bare model exactly once.
    """
    config = settings.resilience
    alone = {
        name: ResilientModel.from_settings(
            model, config, guard=guards.get(upstream_key(settings.models[name]))
        )
        for name, model in models.items()
    }
    wrapped: dict[str, ResilientModel] = {}
    for name, model in alone.items():
        fallbacks = [alone[other] for other in settings.models[name].fallbacks]
        wrapped[name] = (
            ResilientModel.from_settings(
                model.model, config, guard=model.guard, fallbacks=fallbacks
            )
            if fallbacks
            else model
        )
    return wrapped
