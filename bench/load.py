"""A cheap load generator for streamed chat replies: SSE, WebSocket, direct and naive.

It runs in its own process (never the server's) on uvloop, with raw asyncio
protocols: HTTP/1.1 parsed by httptools, WebSocket frames parsed by hand, SSE
frames split with ``bytes.find``. Per event it does one parser callback, one
split and one ``orjson.loads``, so it costs a fraction of what the servers it
drives do; it reports its own CPU, so that stays checked.

Targets (``--target``):

- ``direct``: ``POST /v1/chat/completions`` straight to the fake upstream;
- ``sse``: daehwa, ``POST /v1/conversations/{id}/messages`` with
  ``Accept: text/event-stream`` (one conversation per connection, created first);
- ``ws``: daehwa, ``chat`` frames over one ``/v1/ws`` socket per conversation;
- ``naive``: the baseline gateway of :mod:`bench.naive_gateway` (``POST /chat``);
- ``idle-ws``: open ``-c`` authenticated WebSockets, hold them idle, and report
  the server's RSS before and after (and that each still answers a ping).

C conversations each keep one keep-alive connection and send ``--turns``
messages back to back; their first sends are spread evenly over ``--stagger``
seconds. The timed phase is bounded by ``--deadline`` seconds; replies that
have not ended by then count as unfinished. The CPU time (``/proc/PID/task/*/schedstat``)
and peak RSS of the ``--watch`` processes are read around the timed phase.
One JSON object is printed on stdout. Used by :mod:`bench.streaming`; by hand::

    python -m bench.load --target direct --url http://127.0.0.1:9000 -c 50 --turns 2
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import resource
import statistics
import time
from pathlib import Path
from typing import Any

import orjson
from bench.load_wire import HttpConnection, Reply, SseSink, WsConnection

PROMPT = "서울 날씨 알려줘. 그리고 주말에 갈 만한 곳도 추천해 줘."
SETUP_PARALLEL = 100  # connections opened at once while setting up


# -- /proc readings ----------------------------------------------------------------
def proc_cpu(pid: int) -> float:
    """CPU seconds a process has used so far: the sum over its threads, in nanoseconds.

    ``/proc/PID/task/*/schedstat`` has nanosecond resolution where ``/proc/PID/stat``
    counts 10 ms ticks; it falls back to the latter when schedstat is missing.
    """
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                total += int((task / "schedstat").read_text().split()[0])
        return total / 1e9
    except OSError:
        pass
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mb(pid: int) -> float:
    """Resident memory of a process in MB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies over all cores, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(values) - values[3] - values[4], sum(values)


def percentile(values: list[float], share: float) -> float | None:
    """The ``share`` quantile (nearest rank), or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


# -- the load ------------------------------------------------------------------------
class Load:
    """One load point: C conversations against one target, measured."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.kind: str = args.target
        host, _, port = args.url.split("://", 1)[1].rstrip("/").partition(":")
        self.host, self.port = host, int(port or 80)
        self.auth = f"Authorization: Bearer {args.key}\r\n" if args.key else ""
        self.loop = asyncio.get_running_loop()
        self.replies: list[Reply] = []
        self.setup_errors: dict[str, int] = {}
        self.reconnects = 0
        self.deadline = 0.0
        self.started = asyncio.Event()
        self.set_up = 0  # conversations done with set-up (ready or failed)
        self.all_set_up = asyncio.Event()

    async def http(self) -> HttpConnection:
        _, conn = await self.loop.create_connection(
            lambda: HttpConnection(self.loop), self.host, self.port
        )
        return conn

    async def websocket(self) -> WsConnection:
        key = base64.b64encode(os.urandom(16)).decode()
        head = (
            f"GET /v1/ws HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n{self.auth}\r\n"
        ).encode()
        _, conn = await self.loop.create_connection(
            lambda: WsConnection(self.loop, head), self.host, self.port
        )
        await conn.opened
        return conn

    def post(self, path: str, body: dict[str, Any], accept: str = "application/json") -> bytes:
        payload = orjson.dumps(body)
        return (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{self.auth}"
            f"Content-Type: application/json\r\nAccept: {accept}\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        ).encode() + payload

    async def create_conversation(self, conn: HttpConnection) -> str:
        status, body = await conn.request(self.post("/v1/conversations", {"title": "bench"}))
        if status != 201:
            raise RuntimeError(f"creating a conversation: HTTP {status} {body[:200]!r}")
        return str(orjson.loads(body)["id"])

    async def setup(self, number: int) -> tuple[HttpConnection | WsConnection, str]:
        conn = await self.http()
        if self.kind == "direct":
            return conn, ""
        if self.kind == "naive":
            return conn, f"session-{os.getpid()}-{number}"
        conversation_id = await self.create_conversation(conn)
        if self.kind == "ws":
            conn.close()
            return await self.websocket(), conversation_id
        return conn, conversation_id

    async def conversation(self, number: int, gate: asyncio.Semaphore) -> None:
        try:
            async with gate:
                conn, conversation_id = await self.setup(number)
        except Exception as exc:
            name = type(exc).__name__
            self.setup_errors[name] = self.setup_errors.get(name, 0) + 1
            return
        finally:
            self.set_up += 1
            if self.set_up == self.args.concurrency:
                self.all_set_up.set()
        try:
            await self.started.wait()
            await asyncio.sleep(self.args.stagger * number / max(self.args.concurrency, 1))
            history: list[dict[str, str]] = []
            for turn in range(self.args.turns):
                if self.loop.time() >= self.deadline:
                    break
                reply = Reply()
                self.replies.append(reply)
                try:
                    async with asyncio.timeout_at(self.deadline):
                        if isinstance(conn, WsConnection):
                            await self.ws_turn(conn, conversation_id, turn, reply)
                        else:
                            if conn.closed:
                                self.reconnects += 1
                                conn = await self.http()
                            conn = await self.http_turn(conn, conversation_id, turn, reply, history)
                except TimeoutError:
                    reply.close(self.loop.time(), error="deadline")
                    break
                except OSError as exc:  # ConnectionError included
                    reply.close(self.loop.time(), error=type(exc).__name__)
                    if isinstance(conn, WsConnection):
                        break
        finally:
            conn.close()

    async def http_turn(
        self,
        conn: HttpConnection,
        conversation_id: str,
        turn: int,
        reply: Reply,
        history: list[dict[str, str]],
    ) -> HttpConnection:
        """One turn over ``conn``; returns the connection to use next."""
        content = f"{PROMPT} ({turn + 1})"
        if self.kind == "direct":
            history.append({"role": "user", "content": content})
            body = {"model": "bench", "stream": True, "messages": history}
            data = self.post("/v1/chat/completions", body, "text/event-stream")
        elif self.kind == "sse":
            path = f"/v1/conversations/{conversation_id}/messages"
            data = self.post(path, {"content": content}, "text/event-stream")
        else:
            data = self.post("/chat", {"session_id": conversation_id, "message": content})
        reply.sent = self.loop.time()
        try:
            status, _ = await conn.request(data, SseSink(reply, self.kind, self.loop))
        except ConnectionResetError:
            if conn.answered:
                raise
            # The server closed the idle keep-alive connection as we reused it: once more.
            self.reconnects += 1
            conn = await self.http()
            reply.sent = self.loop.time()
            status, _ = await conn.request(data, SseSink(reply, self.kind, self.loop))
        reply.close(self.loop.time(), error="" if status == 200 else f"http_{status}")
        if self.kind == "direct":
            history.append({"role": "assistant", "content": "..."})
        return conn

    async def ws_turn(
        self, ws: WsConnection, conversation_id: str, turn: int, reply: Reply
    ) -> None:
        request_id = f"{conversation_id}-{turn}"
        ended: asyncio.Future[None] = self.loop.create_future()
        ws.follow(request_id, reply, ended)
        reply.sent = self.loop.time()
        frame = {
            "type": "chat",
            "request_id": request_id,
            "conversation_id": conversation_id,
            "content": f"{PROMPT} ({turn + 1})",
        }
        ws.send_text(orjson.dumps(frame))
        await ended

    async def run(self) -> dict[str, Any]:
        if self.kind == "idle-ws":
            return await self.idle_websockets()
        args = self.args
        gate = asyncio.Semaphore(SETUP_PARALLEL)
        tasks = [asyncio.create_task(self.conversation(n, gate)) for n in range(args.concurrency)]
        await self.all_set_up.wait()
        watch = Watch(args.watch)
        t0 = self.loop.time()
        self.deadline = t0 + args.deadline
        self.started.set()
        sampler = asyncio.create_task(watch.sample_rss())
        await asyncio.wait(tasks, timeout=args.deadline + 5.0)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        sampler.cancel()
        ends = [r.end for r in self.replies if r.end]
        window = (max(ends) if ends else self.loop.time()) - t0
        if args.replies:
            self.write_replies(args.replies)
        return self.summary(window, watch.finish())

    def write_replies(self, path: str) -> None:
        """Append each answered reply's send time (Unix seconds) and TTFB (ms) to ``path``."""
        # Wall-clock send times, to be set beside a server-side log (``bench/gc_log``).
        offset = time.time() - self.loop.time()
        with open(path, "a", encoding="utf-8") as out:
            for r in self.replies:
                if r.first:
                    ttfb = (r.first - r.sent) * 1000
                    out.write(f"{self.kind} {r.sent + offset:.3f} {ttfb:.1f}\n")

    def summary(self, window: float, watched: dict[str, Any]) -> dict[str, Any]:
        replies = self.replies
        ttfb = [(r.first - r.sent) * 1000 for r in replies if r.first]
        e2e = [r.end - r.sent for r in replies if r.finished]
        # How the text arrived: events with text per reply, and the gaps between them.
        gaps = [gap * 1000 for r in replies if r.finished for gap in r.gaps]
        texts = [len(r.gaps) + 1 for r in replies if r.finished]
        errors: dict[str, int] = {}
        for r in replies:
            if r.error and r.error != "cut":
                errors[r.error] = errors.get(r.error, 0) + 1
        chars = sum(r.chars for r in replies)
        tokens = chars * self.args.reply_tokens / self.args.reply_chars
        return {
            "target": self.kind,
            "concurrency": self.args.concurrency,
            "turns": self.args.turns,
            "replies": len(replies),
            "finished": sum(r.finished for r in replies),
            "unfinished": sum(not r.finished for r in replies),
            "cut": sum(r.cut for r in replies),
            "errors": errors,
            "setup_errors": self.setup_errors,
            "reconnects": self.reconnects,
            "ttfb_ms": _quantiles(ttfb),
            "e2e_s": _quantiles(e2e),
            "text_events": percentile(texts, 0.5) if texts else None,
            "text_gap_ms": _quantiles(gaps),
            "tokens": round(tokens),
            "window_s": round(window, 3),
            "tokens_per_s": round(tokens / window, 1) if window > 0 else 0.0,
            **watched,
        }

    async def idle_websockets(self) -> dict[str, Any]:
        watch = Watch(self.args.watch)
        before = {str(pid): proc_rss_mb(pid) for pid in watch.pids}
        gate = asyncio.Semaphore(SETUP_PARALLEL)
        failures: dict[str, int] = {}
        started = time.perf_counter()

        async def one() -> WsConnection | None:
            async with gate:
                try:
                    return await self.websocket()
                except OSError as exc:
                    failures[type(exc).__name__] = failures.get(type(exc).__name__, 0) + 1
                    return None

        opened = [c for c in await asyncio.gather(*(one() for _ in range(self.args.concurrency)))]
        sockets = [c for c in opened if c is not None]
        open_seconds = time.perf_counter() - started
        await asyncio.sleep(self.args.hold)
        after = {str(pid): proc_rss_mb(pid) for pid in watch.pids}
        # Every socket is still served: each gets a ping frame and must answer pong.
        answered = asyncio.Event()
        count = [0]

        def pong() -> None:
            count[0] += 1
            if count[0] >= len(sockets):
                answered.set()

        for ws in sockets:
            ws.on_pong = pong
            if not ws.closed:
                ws.send_text(b'{"type":"ping"}')
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30.0):
                await answered.wait()
        pongs = sum(ws.pongs for ws in sockets)
        for ws in sockets:
            ws.close()
        return {
            "target": "idle-ws",
            "connections": len(sockets),
            "failures": failures,
            "open_s": round(open_seconds, 2),
            "pongs": pongs,
            "rss_before_mb": before,
            "rss_after_mb": after,
            "cpu_s": {},
            **{"loadgen_cpu_s": round(time.process_time(), 3)},
        }


def _quantiles(values: list[float]) -> dict[str, float | None]:
    def rounded(v: float | None) -> float | None:
        return None if v is None else round(v, 3)

    return {
        "p50": rounded(statistics.median(values) if values else None),
        "p99": rounded(percentile(values, 0.99)),
        "max": rounded(max(values) if values else None),
    }


class Watch:
    """CPU and peak RSS of other processes (and this one's CPU) over the timed phase."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.cpu0 = {pid: proc_cpu(pid) for pid in pids}
        self.own0 = time.process_time()
        self.busy0 = machine_jiffies()
        self.rss = {pid: proc_rss_mb(pid) for pid in pids}

    async def sample_rss(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            for pid in self.pids:
                self.rss[pid] = max(self.rss[pid], proc_rss_mb(pid))

    def finish(self) -> dict[str, Any]:
        busy1 = machine_jiffies()
        busy = (busy1[0] - self.busy0[0]) / max(busy1[1] - self.busy0[1], 1)
        return {
            "cpu_s": {str(p): round(proc_cpu(p) - self.cpu0[p], 3) for p in self.pids},
            "rss_peak_mb": {str(p): round(self.rss[p], 1) for p in self.pids},
            "loadgen_cpu_s": round(time.process_time() - self.own0, 3),
            "machine_busy": round(busy, 3),
        }


def raise_fd_limit() -> int:
    """Lift the soft open-files limit to the hard one (thousands of sockets)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--target", required=True, choices=["direct", "sse", "ws", "naive", "idle-ws"]
    )
    parser.add_argument("--url", required=True, help="http://HOST:PORT of the target")
    parser.add_argument("--key", default="", help="daehwa API key")
    parser.add_argument("-c", "--concurrency", type=int, default=10)
    parser.add_argument("--turns", type=int, default=2, help="messages per conversation")
    parser.add_argument("--stagger", type=float, default=4.0, help="spread of first sends (s)")
    parser.add_argument("--deadline", type=float, default=60.0, help="bound of the timed phase")
    parser.add_argument("--hold", type=float, default=3.0, help="idle-ws: seconds held idle")
    parser.add_argument("--watch", type=int, nargs="*", default=[], help="PIDs to measure")
    parser.add_argument("--reply-tokens", type=int, default=200, help="tokens of a whole reply")
    parser.add_argument("--reply-chars", type=int, default=400, help="characters of one")
    parser.add_argument("--replies", default="", help="append each reply's send time and TTFB")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    raise_fd_limit()

    async def go() -> dict[str, Any]:
        return await Load(args).run()

    try:
        import uvloop
    except ImportError:
        result = asyncio.run(go())
    else:
        result = uvloop.run(go())
    print(orjson.dumps(result).decode(), flush=True)


if __name__ == "__main__":
    main()
