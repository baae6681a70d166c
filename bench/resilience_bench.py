"""Figures of the resilience wrapper (docs/resilience.md).

- ``cpu``: CPU time the wrapper adds per streamed token. An in-process model
  yields ready-made chunks with no I/O; the same stream is read bare and
  through :class:`~daehwa.llm.resilience.ResilientModel`; the difference of
  ``time.process_time`` per token is the wrapper's cost.
- ``fallback``: the fallback latency. First the model path alone: how long
  after the caller's deadline the stream is closed, bare and wrapped. Then end
  to end through the HTTP API: a real daehwa server (uvicorn, ChatService,
  SQLite) calls the fake upstream, which never sends a first token; the client
  measures from sending the message to the ``done`` event (status
  ``fallback``). For comparison, a whole turn of an instant scripted model; and
  a slow primary with a healthy fallback model, measured to the first ``delta``.
- ``breaker``: with the default ``[resilience]`` settings and an upstream that
  answers every call with 503, how many user requests go by until the breaker
  opens, and how many upstream calls are made while it is open.

Run from the repository root::

    .venv/bin/python -m bench.resilience_bench cpu --tokens 200000
    .venv/bin/python -m bench.resilience_bench fallback --timeout 1.0 --runs 20
    .venv/bin/python -m bench.resilience_bench breaker
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import uvicorn
from tests.fakes.openai_upstream import FakeOpenAIUpstream

from daehwa.api.app import create_app
from daehwa.config import ResilienceSettings, load_settings
from daehwa.errors import CircuitOpen, ProviderError
from daehwa.llm.base import ChatModel, Chunk, GenerationParams
from daehwa.llm.breaker import BreakerState
from daehwa.llm.http import UpstreamClient
from daehwa.llm.openai import OpenAIModel
from daehwa.llm.resilience import ResilientModel, UpstreamGuard
from daehwa.llm.scripted import ScriptedModel
from daehwa.llm.sse import SSEDecoder
from daehwa.messages import Message, Role

MESSAGES = [Message(Role.USER, "안녕")]
PARAMS = GenerationParams()


# -- cpu ---------------------------------------------------------------------------


class ReadyModel:
    """Yields ``tokens`` prepared chunks without awaiting anything."""

    name = "ready"

    def __init__(self, tokens: int) -> None:
        self.chunks = [Chunk(text="안녕") for _ in range(tokens)]

    async def stream(
        self, messages: Sequence[Message], params: GenerationParams
    ) -> AsyncIterator[Chunk]:
        for chunk in self.chunks:
            yield chunk
        yield Chunk(finish_reason="stop")

    async def aclose(self) -> None:
        return None


async def _drain(model: ChatModel) -> float:
    stream = model.stream(MESSAGES, PARAMS)
    start = time.process_time()
    async for _ in stream:
        pass
    return time.process_time() - start


async def cpu(tokens: int, rounds: int) -> None:
    bare = ReadyModel(tokens)
    wrapped = ResilientModel(bare, budget=8.0, attempt_timeout=5.0)
    plain: list[float] = []
    guarded: list[float] = []
    for _ in range(rounds):  # interleaved, so drift hits both alike
        plain.append(await _drain(bare))
        guarded.append(await _drain(wrapped))
    per_plain = statistics.median(plain) / tokens * 1e6
    per_wrapped = statistics.median(guarded) / tokens * 1e6
    print(f"tokens per stream: {tokens}, rounds: {rounds} (median)")
    print(f"bare model:        {per_plain:.3f} µs CPU per token")
    print(f"through wrapper:   {per_wrapped:.3f} µs CPU per token")
    print(f"added by wrapper:  {per_wrapped - per_plain:.3f} µs CPU per token")
    setup = []
    for _ in range(rounds):
        one = ReadyModel(0)
        w = ResilientModel(one, budget=8.0, attempt_timeout=5.0)
        start = time.process_time()
        for _ in range(1000):
            await _drain(w)
        setup.append((time.process_time() - start) / 1000)
    print(
        f"per call (permit, slot, first-token read, close): {statistics.median(setup) * 1e6:.1f} µs"
    )


# -- fallback latency through the HTTP API -------------------------------------------


class Daehwa:
    """A real daehwa server on an ephemeral port, with the given models."""

    def __init__(self, models: dict[str, ChatModel], resilience: dict[str, Any], data: Path):
        settings = load_settings(
            None,
            server={"data_dir": str(data), "bootstrap_user": None},
            store={"url": f"sqlite+aiosqlite:///{data / 'bench.db'}"},
            models={name: {"provider": "scripted"} for name in models},
            chat={"default_model": next(iter(models))},
            resilience=resilience,
        )
        self.app = create_app(settings, models=models)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="warning")
        self.server = uvicorn.Server(config)
        self.url = ""
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Daehwa:
        self._task = asyncio.create_task(self.server.serve())
        for _ in range(1000):  # up to 10 s
            if self.server.started:
                break
            await asyncio.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        if self._task is not None:
            await self._task

    async def user(self) -> dict[str, str]:
        created = await self.app.state.parts.accounts.create_user("bench")
        return {"authorization": f"Bearer {created.api_key}"}


async def _timed_turn(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str], model: str
) -> dict[str, Any]:
    """One turn with ``model``: seconds from sending to the first of each event type."""
    async with http.post(f"{url}/v1/conversations", headers=headers, json={"model": model}) as r:
        cid = (await r.json())["id"]
    decoder = SSEDecoder()
    out: dict[str, Any] = {}
    start = time.perf_counter()
    async with http.post(
        f"{url}/v1/conversations/{cid}/messages",
        headers={**headers, "accept": "text/event-stream"},
        json={"content": "안녕"},
    ) as response:
        async for data in response.content.iter_any():
            for event in decoder.feed(data):
                out.setdefault(event.event, time.perf_counter() - start)
                if event.event in ("done", "error"):
                    out["end"], out["data"] = out[event.event], event.data
    return out


def _summary(label: str, values: list[float]) -> None:
    ms = sorted(v * 1000 for v in values)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    print(
        f"{label}: min {ms[0]:.1f} ms, median {statistics.median(ms):.1f} ms, "
        f"p95 {p95:.1f} ms, max {ms[-1]:.1f} ms (n={len(ms)})"
    )


async def fallback(deadline: float, runs: int) -> None:
    resilience = {"first_token_timeout": deadline, "attempt_timeout": deadline * 0.6}
    config = ResilienceSettings(**resilience)
    async with (
        FakeOpenAIUpstream(default="text ttft=3600", record=0) as slow,
        FakeOpenAIUpstream(default="text", record=0) as healthy,
    ):
        clients = [UpstreamClient(slow.base_url), UpstreamClient(healthy.base_url)]

        def model(name: str, client: UpstreamClient, base: str) -> OpenAIModel:
            options = {"flavor": "openai"}
            return OpenAIModel(name, client=client, base_url=base, model="fake", options=options)

        primary = model("main", clients[0], slow.base_url)
        backup = model("backup", clients[1], healthy.base_url)
        alone = ResilientModel.from_settings(
            primary, config, guard=UpstreamGuard.create("slow", config)
        )
        spare = ResilientModel.from_settings(
            backup, config, guard=UpstreamGuard.create("healthy", config)
        )
        # Never opened: the breaker must not cut the slow upstream's calls short here.
        alone.guard.breaker.min_calls = 10**9
        chained = ResilientModel.from_settings(
            primary, config, guard=alone.guard, fallbacks=[spare]
        )
        await _cancel_cost(primary, alone, deadline, runs)
        with tempfile.TemporaryDirectory() as tmp:
            instant = ScriptedModel("instant", reply="네")
            models: dict[str, ChatModel] = {"main": alone, "chained": chained, "instant": instant}
            async with (
                Daehwa(models, resilience, Path(tmp)) as server,
                aiohttp.ClientSession() as http,
            ):
                headers = await server.user()
                turns = {
                    name: [await _timed_turn(http, server.url, headers, name) for _ in range(runs)]
                    for name in ("main", "instant", "chained")
                }
                fell = turns["main"]
                assert all('"status":"fallback"' in r["data"] for r in fell), fell[0]
                print(f"first_token_timeout = {deadline:g} s, {runs} sequential turns each")
                print("no first token, no fallback model:")
                _summary("  send → done(fallback)", [r["end"] for r in fell])
                _summary("  overhead over the deadline", [r["end"] - deadline for r in fell])
                print("for comparison, a whole turn of an instant one-word model:")
                _summary("  send → done", [r["end"] for r in turns["instant"]])
                print(
                    f"slow primary + healthy fallback (attempt_timeout {config.attempt_timeout:g}):"
                )
                _summary("  send → first delta", [r["delta"] for r in turns["chained"]])
        for client in clients:
            await client.aclose()


async def _cancel_cost(bare: ChatModel, wrapped: ChatModel, deadline: float, runs: int) -> None:
    """The model path alone: from the caller's deadline until the stream is closed."""
    loop = asyncio.get_running_loop()
    print(f"model path, caller deadline {deadline:g} s, {runs} calls each")
    for label, model in (("bare OpenAIModel", bare), ("ResilientModel", wrapped)):
        late: list[float] = []
        for _ in range(runs):
            stream = model.stream(MESSAGES, PARAMS)
            start = loop.time()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(deadline):
                    async for _ in stream:
                        pass
            await stream.aclose()  # type: ignore[attr-defined]
            late.append(loop.time() - start - deadline)
        _summary(f"  {label}: deadline → closed", late)


# -- breaker -------------------------------------------------------------------------


async def breaker(refused: int) -> None:
    config = ResilienceSettings()
    async with FakeOpenAIUpstream(default="overloaded") as up:
        client = UpstreamClient(up.base_url)
        model = OpenAIModel(
            "main", client=client, base_url=up.base_url, model="fake", options={"flavor": "openai"}
        )
        wrapped = ResilientModel.from_settings(
            model, config, guard=UpstreamGuard.create(up.base_url, config)
        )

        async def one() -> None:
            stream = wrapped.stream(MESSAGES, PARAMS)
            try:
                async for _ in stream:
                    pass
            finally:
                await stream.aclose()  # type: ignore[attr-defined]

        requests = 0
        while wrapped.guard.breaker.state is BreakerState.CLOSED:
            requests += 1
            with contextlib.suppress(ProviderError):
                await one()
        calls = len(up.requests)
        print(
            f"defaults: max_attempts={config.max_attempts}, breaker_min_calls="
            f"{config.breaker_min_calls}, breaker_error_rate={config.breaker_error_rate:g}"
        )
        print(
            f"upstream answering 503: the breaker opened after {requests} user requests "
            f"({calls} upstream calls)"
        )
        start = time.perf_counter()
        for _ in range(refused):
            with contextlib.suppress(CircuitOpen):
                await one()
        spent = time.perf_counter() - start
        print(
            f"while open: {refused} requests → {len(up.requests) - calls} upstream calls, "
            f"{spent / refused * 1e6:.1f} µs per refused request"
        )
        print("snapshot:", wrapped.guard.snapshot())
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p_cpu = sub.add_parser("cpu")
    p_cpu.add_argument("--tokens", type=int, default=200_000)
    p_cpu.add_argument("--rounds", type=int, default=7)
    p_fb = sub.add_parser("fallback")
    p_fb.add_argument("--timeout", type=float, default=1.0)
    p_fb.add_argument("--runs", type=int, default=20)
    p_br = sub.add_parser("breaker")
    p_br.add_argument("--refused", type=int, default=1000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if args.what == "cpu":
        asyncio.run(cpu(args.tokens, args.rounds))
    elif args.what == "fallback":
        asyncio.run(fallback(args.timeout, args.runs))
    else:
        asyncio.run(breaker(args.refused))


if __name__ == "__main__":
    main()
