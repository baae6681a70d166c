"""CPU per streamed event: aiohttp versus daehwa's asyncio + httptools client.

The fake OpenAI-compatible upstream runs in a child process (so its CPU is not
counted) and streams ``--tokens`` events to each of ``--streams`` concurrent
requests, ``--delay`` seconds apart, one event per write like a real upstream.
This process reads them with each client in turn and reports the CPU time it
spent (``time.process_time``) per event, and the fake's own CPU per event
(from /proc, to size load tests that use it). Modes:

- ``floor``: a bare protocol that only counts events as they arrive, with no
  HTTP parsing and no reader task: what the event loop alone costs per read;
- ``bytes``: read the body only;
- ``sse``: read the body and split it into SSE events (the real relay path);
- ``model``: the whole :class:`daehwa.llm.openai.OpenAIModel` stream, JSON and all
  (daehwa's client only).

httpx is measured too (``sse`` mode) when it is installed.

Run from the repository root::

    .venv/bin/python -m bench.upstream_client --streams 100 --tokens 300 --delay 0.01
    .venv/bin/python -m bench.upstream_client --uvloop   # on uvloop, as under uvicorn
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import orjson

from daehwa.llm.base import GenerationParams
from daehwa.llm.http import UpstreamClient
from daehwa.llm.openai import OpenAIModel
from daehwa.llm.sse import SSEDecoder
from daehwa.messages import Message, Role

ROOT = Path(__file__).resolve().parent.parent
Result = tuple[float, int, int]  # CPU seconds, events, reads


def request_body(tokens: int, delay: float) -> bytes:
    spec = f"text tokens={tokens} delay={delay}"
    message = {"role": "user", "content": "안녕"}
    return orjson.dumps({"model": f"scenario:{spec}", "stream": True, "messages": [message]})


def start_fake() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.openai_upstream", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def child_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by a child process; 0 where /proc is missing."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Floor(asyncio.Protocol):
    """Counts events in data_received, nothing else: the event loop's own cost per read."""

    def __init__(self, done: asyncio.Future[tuple[int, int]]) -> None:
        self.done = done
        self.events = self.reads = 0

    def data_received(self, data: bytes) -> None:
        self.reads += 1
        self.events += data.count(b"\n\n")
        if data.endswith(b"0\r\n\r\n") and not self.done.done():
            self.done.set_result((self.events, self.reads))


async def run_floor(base_url: str, body: bytes, streams: int) -> Result:
    """The loop's floor: a raw protocol per stream, no HTTP parsing, no reader task."""
    parts = urlsplit(base_url)
    head = (
        f"POST {parts.path}/chat/completions HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    loop = asyncio.get_running_loop()

    async def one() -> tuple[int, int]:
        done: asyncio.Future[tuple[int, int]] = loop.create_future()
        transport, _ = await loop.create_connection(
            lambda: _Floor(done), parts.hostname or "127.0.0.1", parts.port or 80
        )
        transport.write(head + body)
        try:
            return await done
        finally:
            transport.close()

    return await measure(one, streams)


async def run_aiohttp(base_url: str, body: bytes, streams: int, sse: bool) -> Result:
    connector = aiohttp.TCPConnector(limit=streams)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> tuple[int, int]:
            decoder = SSEDecoder()
            events = reads = 0
            headers = {"content-type": "application/json"}
            async with session.post(
                f"{base_url}/chat/completions", data=body, headers=headers
            ) as r:
                async for piece in r.content.iter_any():
                    reads += 1
                    events += len(decoder.feed(piece)) if sse else piece.count(b"\n\n")
            return events, reads

        return await measure(one, streams)


async def run_httpx(base_url: str, body: bytes, streams: int, sse: bool) -> Result:
    """httpx, when installed (an optional dev dependency): the common default elsewhere."""
    import httpx

    limits = httpx.Limits(max_connections=streams, max_keepalive_connections=streams)
    async with httpx.AsyncClient(limits=limits, timeout=60.0) as session:

        async def one() -> tuple[int, int]:
            decoder = SSEDecoder()
            events = reads = 0
            headers = {"content-type": "application/json"}
            url = f"{base_url}/chat/completions"
            async with session.stream("POST", url, content=body, headers=headers) as r:
                async for piece in r.aiter_raw():
                    reads += 1
                    events += len(decoder.feed(piece)) if sse else piece.count(b"\n\n")
            return events, reads

        return await measure(one, streams)


async def run_daehwa(base_url: str, body: bytes, streams: int, sse: bool) -> Result:
    client = UpstreamClient(base_url, max_connections=streams)

    async def one() -> tuple[int, int]:
        decoder = SSEDecoder()
        events = reads = 0
        headers = {"content-type": "application/json"}
        async with await client.request(
            "POST", "/v1/chat/completions", body=body, headers=headers
        ) as r:
            async for piece in r:
                reads += 1
                events += len(decoder.feed(piece)) if sse else piece.count(b"\n\n")
        return events, reads

    try:
        return await measure(one, streams)
    finally:
        await client.aclose()


async def run_model(base_url: str, tokens: int, delay: float, streams: int) -> Result:
    client = UpstreamClient(base_url, max_connections=streams)
    model = OpenAIModel(
        "bench",
        client=client,
        base_url=base_url,
        model=f"scenario:text tokens={tokens} delay={delay}",
    )
    messages = [Message(Role.USER, "안녕")]

    async def one() -> tuple[int, int]:
        # One chunk per content event, plus the role, finish, usage and [DONE] events
        # (the final chunk counts for one of them). Reads are not visible here.
        events = sum([1 async for _ in model.stream(messages, GenerationParams())]) + 3
        return events, 0

    try:
        return await measure(one, streams)
    finally:
        await client.aclose()


async def measure(one: Callable[[], Awaitable[tuple[int, int]]], streams: int) -> Result:
    await one()  # warm up: connections, imports, caches
    cpu = time.process_time()
    counts = await asyncio.gather(*(one() for _ in range(streams)))
    return time.process_time() - cpu, sum(c[0] for c in counts), sum(c[1] for c in counts)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--tokens", type=int, default=300)
    parser.add_argument("--delay", type=float, default=0.01)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    proc, base_url = start_fake()
    body = request_body(args.tokens, args.delay)
    try:
        print(f"{args.streams} streams x {args.tokens} events, {args.delay * 1000:g} ms apart")
        runs: dict[str, Callable[[], Awaitable[Result]]] = {
            "asyncio floor": lambda: run_floor(base_url, body, args.streams),
            "aiohttp bytes": lambda: run_aiohttp(base_url, body, args.streams, False),
            "daehwa  bytes": lambda: run_daehwa(base_url, body, args.streams, False),
            "aiohttp sse": lambda: run_aiohttp(base_url, body, args.streams, True),
            "daehwa  sse": lambda: run_daehwa(base_url, body, args.streams, True),
            "daehwa  model": lambda: run_model(base_url, args.tokens, args.delay, args.streams),
        }
        if importlib.util.find_spec("httpx") is not None:
            runs["httpx   sse"] = lambda: run_httpx(base_url, body, args.streams, True)
        results: dict[str, list[Result]] = {name: [] for name in runs}
        fake_cpu = fake_events = 0.0
        # Rounds interleave the clients, so a burst of load elsewhere hits all of them.
        for _ in range(args.rounds):
            for name, run in runs.items():
                before = child_cpu(proc.pid)
                row = await run()
                fake_cpu += child_cpu(proc.pid) - before
                fake_events += row[1] * (args.streams + 1) / args.streams  # + the warm-up
                results[name].append(row)
        for name, rows in results.items():
            per_event = sorted(cpu / events * 1e6 for cpu, events, _ in rows)
            reads = sum(r for _, _, r in rows) / sum(e for _, e, _ in rows)
            shown = " ".join(f"{x:.1f}" for x in per_event)
            print(
                f"{name:14} median {statistics.median(per_event):5.1f} µs CPU/event "
                f"[{shown}]" + (f", {reads:.2f} reads/event" if reads else "")
            )
        if fake_cpu:
            print(f"the fake upstream itself: {fake_cpu / fake_events * 1e6:.1f} µs CPU/event")
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    if "--uvloop" in sys.argv:
        sys.argv.remove("--uvloop")
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())
