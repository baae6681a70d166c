"""The embedded model: llama.cpp's server run in-process through ``xllamacpp``.

No network and no key: the GGUF file comes from PyPI part packages
(:mod:`daehwa.llm.modelfiles`). llama.cpp's own server threads do the work and
release the GIL, so the event loop stays free while a reply is generated. Its
slots keep each conversation's prompt in the KV cache and its host-memory prompt
cache restores a conversation that lost its slot, so a follow-up turn reads only
its new tokens. A stop takes effect at the next token, or at the next
``batch`` of prompt tokens while the prompt is being read.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import aclosing, suppress
from pathlib import Path
from typing import Any

from daehwa.config import ModelSettings, Settings
from daehwa.errors import Busy, ConfigError, ContextOverflow, DaehwaError, ProviderError
from daehwa.llm.base import Chunk, GenerationParams
from daehwa.llm.modelfiles import (
    KnownModel,
    LocalOptions,
    ensure_model_file,
    known_model,
    local_options,
    log_progress,
    model_file,
)
from daehwa.messages import Message, Role, ToolCall, Usage

log = logging.getLogger(__name__)

_DONE = object()


def default_threads() -> int:
    """Threads for generation: one core less than the process may use (at least 1, at most 8).

    llama.cpp's threads spin while they wait for each other, so when another process
    (or this server's own event loop) takes a core they all stall: on 2 cores, 2
    threads under load decoded 3-4x slower than 1 (docs/local-model.md).
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(8, (cores or 1) - 1))


def wire_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Messages in the OpenAI chat shape llama.cpp's server reads."""
    out: list[dict[str, Any]] = []
    for message in messages:
        item: dict[str, Any] = {"role": message.role.value, "content": message.content}
        if message.role is Role.ASSISTANT and message.tool_calls:
            item["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
                }
                for call in message.tool_calls
            ]
        if message.role is Role.TOOL and message.tool_call_id:
            item["tool_call_id"] = message.tool_call_id
        out.append(item)
    return out


def error_from(body: dict[str, Any], provider: str) -> DaehwaError:
    """Translate an error object of llama.cpp's server into daehwa's tree."""
    kind = str(body.get("type", ""))
    message = str(body.get("message", "the local model failed"))
    status = int(body.get("code", 500) or 500)
    if kind == "exceed_context_size_error":
        return ContextOverflow(f"the conversation is too long for the local model: {message}")
    return ProviderError(
        f"local model: {message}",
        code="local_model_error",
        retryable=status >= 500,
        upstream_status=status,
        provider=provider,
    )


class _ToolCallJoiner:
    """Joins streamed tool-call pieces by index (OpenAI's delta shape)."""

    def __init__(self) -> None:
        self._calls: dict[int, dict[str, str]] = {}

    def add(self, pieces: list[dict[str, Any]]) -> None:
        for piece in pieces:
            call = self._calls.setdefault(
                int(piece.get("index", 0)), {"id": "", "name": "", "args": ""}
            )
            function = piece.get("function") or {}
            call["id"] = piece.get("id") or call["id"]
            call["name"] += function.get("name") or ""
            call["args"] += function.get("arguments") or ""

    def calls(self) -> list[ToolCall]:
        out: list[ToolCall] = []
        for index, call in sorted(self._calls.items()):
            try:
                arguments = json.loads(call["args"]) if call["args"] else {}
            except ValueError:
                arguments = {"_raw": call["args"]}
            out.append(ToolCall(call["id"] or f"call_{index}", call["name"], arguments))
        return out


class _SlotPool:
    """The server's slots, handed out so a conversation gets its previous slot back.

    ``give_back`` may be called from any thread (a worker gives its slot back the
    moment llama.cpp returns), and wakes the next waiter on that waiter's own loop.
    """

    def __init__(self, size: int) -> None:
        self._lock = threading.Lock()
        self._free = list(range(size))
        self._owner: dict[str, int] = {}
        self._waiters: deque[asyncio.Future[int]] = deque()

    async def take(self, key: str | None) -> int:
        with self._lock:
            if self._free:
                preferred = self._owner.get(key) if key else None
                slot = preferred if preferred in self._free else self._free[0]
                assert slot is not None
                self._free.remove(slot)
                self._remember(key, slot)
                return slot
            waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
        try:
            slot = await waiter
        except asyncio.CancelledError:
            with self._lock:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
            if waiter.done() and not waiter.cancelled():
                self.give_back(waiter.result())  # handed over just as we were cancelled
            raise
        with self._lock:
            self._remember(key, slot)
        return slot

    def _remember(self, key: str | None, slot: int) -> None:
        if key:
            self._owner.pop(key, None)
            self._owner[key] = slot
            if len(self._owner) > 10_000:  # forget the oldest conversations
                self._owner.pop(next(iter(self._owner)))

    def give_back(self, slot: int) -> None:
        with self._lock:
            while self._waiters:
                waiter = self._waiters.popleft()
                try:
                    waiter.get_loop().call_soon_threadsafe(self._hand_over, waiter, slot)
                    return
                except RuntimeError:  # that waiter's event loop is gone
                    continue
            self._free.append(slot)

    def _hand_over(self, waiter: asyncio.Future[int], slot: int) -> None:
        if waiter.done():  # cancelled while the slot was on its way
            self.give_back(slot)
        else:
            waiter.set_result(slot)


class LocalModel:
    """A GGUF model run in-process by llama.cpp (implements ``ChatModel``)."""

    def __init__(
        self,
        name: str,
        path: Path | Callable[[], Path],
        *,
        options: LocalOptions | None = None,
        context_window: int = 4096,
        temperature: float | None = None,
        known: KnownModel | None = None,
    ) -> None:
        self.name = name
        self._path = path
        self.options = options or LocalOptions()
        self.context_window = context_window
        self.temperature = temperature
        self.known = known
        self.last_timings: dict[str, Any] | None = None
        self._server: Any = None
        self._load_lock = asyncio.Lock()
        self._slots = _SlotPool(self.options.slots)
        self._pending = 0
        self._closed = False
        self._running: set[threading.Event] = set()
        self._executor = ThreadPoolExecutor(self.options.slots, thread_name_prefix="daehwa-local")

    @classmethod
    def from_settings(cls, settings: Settings, name: str) -> LocalModel:
        """Build from ``[models.NAME]``; the file is assembled (once) when the model starts."""
        config: ModelSettings = settings.models[name]
        model_file(settings, name)  # fails fast on an unknown model or bad options
        return cls(
            name,
            lambda: ensure_model_file(settings, name, log_progress),
            options=local_options(name, config),
            context_window=config.context_window,
            temperature=config.temperature,
            known=known_model(config),
        )

    @property
    def loaded(self) -> bool:
        """Whether the weights are in memory."""
        return self._server is not None

    @property
    def pending(self) -> int:
        """Requests generating or waiting for a slot."""
        return self._pending

    async def start(self) -> None:
        """Assemble the file if needed and load the model (idempotent; runs in a thread)."""
        async with self._load_lock:
            if self._server is None:
                self._server = await asyncio.to_thread(self._load)

    def _load(self) -> Any:
        import xllamacpp

        path = self._path() if callable(self._path) else self._path
        opts = self.options
        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        params.n_parallel = opts.slots
        params.n_ctx = self.context_window * opts.slots
        params.n_batch = opts.batch
        params.n_ubatch = opts.batch
        threads = opts.threads or default_threads()
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        params.cache_ram_mib = opts.cache_ram_mib
        params.ctx_shift = False
        params.endpoint_metrics = True
        params.verbosity = -1 if log.getEffectiveLevel() > logging.DEBUG else 3
        # The in-process server also listens on a loopback port; a random key closes it.
        params.api_keys = [os.urandom(24).hex()]
        log.info(
            "loading %s (%d threads, %d slots, n_ctx %d)", path, threads, opts.slots, params.n_ctx
        )
        try:
            return xllamacpp.Server(params)
        except Exception as exc:  # the binding raises plain exceptions
            raise ProviderError(
                f"cannot load local model {path}: {exc}", provider=self.name
            ) from exc

    def request(self, messages: Sequence[Message], params: GenerationParams) -> dict[str, Any]:
        """The chat-completions body sent to llama.cpp for one generation."""
        sampling = dict(self.known.sampling) if self.known else {}
        for key in ("top_p", "top_k", "min_p", "repeat_penalty"):
            value = getattr(self.options, key)
            if value is not None:
                sampling[key] = value
        temperature = params.temperature if params.temperature is not None else self.temperature
        if temperature is not None:
            sampling["temperature"] = temperature
        body: dict[str, Any] = {
            "messages": wire_messages(messages),
            "max_tokens": params.max_new_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
            # Progress chunks while the prompt is read: each one is a chance to stop.
            "return_progress": True,
            "cache_prompt": True,
            **sampling,
        }
        if params.stop:
            body["stop"] = list(params.stop)
        if params.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    },
                }
                for t in params.tools
            ]
        return body

    async def stream(
        self, messages: Sequence[Message], params: GenerationParams
    ) -> AsyncIterator[Chunk]:
        """Stream a reply; closing the iterator stops generation at the next token."""
        if self._closed:
            raise ProviderError("the local model was closed", provider=self.name)
        limit = self.options.slots + self.options.queue
        if self._pending >= limit:
            raise Busy(
                f"the local model is busy ({self._pending} requests running or waiting); "
                "try again shortly"
            )
        self._pending += 1
        try:
            try:
                await self.start()
            except ConfigError as exc:  # e.g. the model file is missing or damaged
                raise ProviderError(
                    exc.message, code="model_unavailable", provider=self.name
                ) from exc
            slot = await self._slots.take(params.cache_key)
            async with aclosing(self._generate(slot, messages, params)) as chunks:
                async for chunk in chunks:
                    yield chunk
        finally:
            self._pending -= 1

    async def _generate(
        self, slot: int, messages: Sequence[Message], params: GenerationParams
    ) -> AsyncGenerator[Chunk, None]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()
        body = self.request(messages, params)
        body["id_slot"] = slot
        server = self._server

        def on_chunk(chunk: Any) -> bool:
            loop.call_soon_threadsafe(queue.put_nowait, chunk)
            return stop.is_set()  # True tells llama.cpp to stop this task

        def finished(_: Future[None]) -> None:
            # The slot is free only once llama.cpp has really stopped; give it back
            # before the reader learns the end, whatever happens to its loop.
            self._slots.give_back(slot)
            with suppress(RuntimeError):  # the loop may be gone at shutdown
                loop.call_soon_threadsafe(queue.put_nowait, _DONE)

        try:
            future = self._executor.submit(server.handle_chat_completions, body, on_chunk)
        except BaseException:
            self._slots.give_back(slot)
            raise
        future.add_done_callback(finished)
        self._running.add(stop)
        tools = _ToolCallJoiner()
        finish: str | None = None
        usage: Usage | None = None
        try:
            while (item := await queue.get()) is not _DONE:
                if not isinstance(item, dict):
                    continue
                if "error" in item:
                    raise error_from(item["error"], self.name)
                if item.get("usage"):
                    raw = item["usage"]
                    usage = Usage(int(raw["prompt_tokens"]), int(raw["completion_tokens"]))
                if item.get("timings"):
                    self.last_timings = item["timings"]
                    log.debug("local model %s: %s", self.name, item["timings"])
                for choice in item.get("choices") or []:
                    delta = choice.get("delta") or {}
                    if delta.get("tool_calls"):
                        tools.add(delta["tool_calls"])
                    text = delta.get("content") or ""
                    reasoning = delta.get("reasoning_content") or ""
                    if text or reasoning:
                        yield Chunk(text=text, reasoning=reasoning)
                    finish = choice.get("finish_reason") or finish
        finally:
            stop.set()
            self._running.discard(stop)
        error = future.exception()
        if error is not None:
            raise ProviderError(f"local model: {error}", provider=self.name) from error
        calls = tools.calls()
        finish = "tool_calls" if calls else finish or "stop"
        yield Chunk(tool_calls=calls, finish_reason=finish, usage=usage)

    async def runtime_metrics(self) -> dict[str, float]:
        """llama.cpp's counters (``n_decode_total``, ``prompt_tokens_total``, ...), {} unloaded."""
        server = self._server
        if server is None:
            return {}
        text = await asyncio.to_thread(server.handle_metrics)
        metrics: dict[str, float] = {}
        for line in str(text).splitlines():
            name, _, value = line.partition(" ")
            if name.startswith("llamacpp:"):
                with suppress(ValueError):
                    metrics[name.removeprefix("llamacpp:")] = float(value)
        return metrics

    async def aclose(self) -> None:
        """Stop every generation and free the model's memory."""
        self._closed = True
        for stop in list(self._running):
            stop.set()
        server, self._server = self._server, None
        await asyncio.to_thread(self._executor.shutdown, wait=True)
        if server is not None:
            await asyncio.to_thread(_release, server)


def _release(server: Any) -> None:
    # Dropping the last reference joins llama.cpp's threads and frees the weights.
    del server
