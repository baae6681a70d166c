"""What one idle WebSocket costs, and where: daehwa's ``/v1/ws`` against a bare endpoint.

The server runs in this process (uvicorn on uvloop, an in-memory store, the
scripted model, no word list), so that ``tracemalloc`` and ``gc`` can look
inside it; the clients run in a child process. N authenticated sockets are
opened and held; the report gives RSS per socket, the objects each one keeps
(``gc`` counts), the server's tasks per socket and, with ``--trace``, the
allocations still alive grouped by the innermost line of uvicorn, websockets,
starlette, FastAPI or daehwa that made them. The handshake can offer
``permessage-deflate`` as browsers do::

    python -m bench.ws_memory -n 2000
    python -m bench.ws_memory -n 2000 --app bare
    python -m bench.ws_memory -n 2000 --offer-deflate --server-deflate
    python -m bench.ws_memory -n 2000 --ws wsproto --trace

With ``--trace`` the RSS figures include tracemalloc's own records: read the
traced sizes instead. ``--ws wsproto`` needs ``pip install wsproto``.
``bench.streaming --idle N`` measures the same thing on ``daehwa serve`` itself,
with its full configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import gc
import os
import subprocess
import sys
import tempfile
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

EXTENSION_OFFER = "permessage-deflate; client_max_window_bits"
ROOT = Path(__file__).resolve().parent.parent


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def bare(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The floor: accept, then answer every text frame with a pong."""
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.accept"})
    while (await receive())["type"] != "websocket.disconnect":
        await send({"type": "websocket.send", "text": '{"type":"pong"}'})


# -- the clients (a child process) ------------------------------------------------
async def clients(port: int, key: str, count: int, offer: str) -> None:
    gate = asyncio.Semaphore(100)
    accepted = {"open": 0, "deflate": 0}
    held = []

    async def one() -> None:
        async with gate:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            nonce = base64.b64encode(os.urandom(16)).decode()
            extension = f"Sec-WebSocket-Extensions: {offer}\r\n" if offer else ""
            writer.write(
                f"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {nonce}\r\n"
                f"Sec-WebSocket-Version: 13\r\n{extension}"
                f"Authorization: Bearer {key}\r\n\r\n".encode()
            )
            head = await reader.readuntil(b"\r\n\r\n")
            if b" 101 " in head.split(b"\r\n", 1)[0]:
                accepted["open"] += 1
                accepted["deflate"] += b"permessage-deflate" in head.lower()
            held.append((reader, writer))

    await asyncio.gather(*(one() for _ in range(count)))
    print(f"{accepted['open']} {accepted['deflate']}", flush=True)
    await asyncio.sleep(3600)  # held until the server kills this process


# -- the server (this process) ----------------------------------------------------
def build_app(kind: str, data: Path, keys: list[str]) -> Any:
    if kind == "bare":
        keys.append("unused")
        return bare
    from daehwa.api.app import create_app
    from daehwa.config import load_settings

    settings = load_settings(
        None,
        server={"data_dir": str(data), "bootstrap_user": "bench"},
        store={"url": "memory://"},
        models={"scripted": {"provider": "scripted"}},
        chat={"default_model": "scripted"},
        context={"recall": False},
    )

    def announce(text: str) -> None:
        if "with API key:" in text:
            keys.append(text.rsplit(":", 1)[1].strip())

    return create_app(settings, announce=announce)


def object_counts() -> collections.Counter[str]:
    gc.collect()
    return collections.Counter(type(o).__qualname__ for o in gc.get_objects())


def where(trace: tracemalloc.Traceback) -> str:
    """The innermost line of a library or of this repository that made an allocation."""
    for frame in reversed(trace):
        name = frame.filename
        if "site-packages/" in name:
            return f"{name.split('site-packages/', 1)[1]}:{frame.lineno}"
        if name.startswith(str(ROOT)):
            return f"{Path(name).relative_to(ROOT)}:{frame.lineno}"
    return "(elsewhere)"


async def until(condition: Callable[[], bool], what: str, seconds: float = 300.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"gave up waiting for {what}")


async def serve_and_measure(args: argparse.Namespace) -> None:
    import uvicorn

    keys: list[str] = []
    with tempfile.TemporaryDirectory(prefix="ws-memory-") as tmp:
        app = build_app(args.app, Path(tmp), keys)
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            log_level="warning",
            ws=args.ws,
            ws_per_message_deflate=args.server_deflate,
            lifespan="on" if args.app == "daehwa" else "off",
        )
        server = uvicorn.Server(config)
        running = asyncio.create_task(server.serve())
        await until(lambda: server.started, "the server to start")
        port = server.servers[0].sockets[0].getsockname()[1]

        async def open_sockets(count: int) -> tuple[asyncio.subprocess.Process, str]:
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.ws_memory", "--client", str(port), keys[0],
                str(count), EXTENSION_OFFER if args.offer_deflate else "",
                cwd=ROOT, stdout=subprocess.PIPE,
            )  # fmt: skip
            assert child.stdout is not None
            line = (await child.stdout.readline()).decode().strip()
            return child, line

        warm, _ = await open_sockets(50)  # first-use allocations are not the sockets' own
        await until(lambda: len(server.server_state.connections) >= 50, "50 sockets")
        warm.kill()
        await warm.wait()
        await until(lambda: not server.server_state.connections, "the sockets to close")
        await asyncio.sleep(0.5)
        tasks_before = len(asyncio.all_tasks())
        counts_before, rss_before = object_counts(), rss_mb()
        if args.trace:
            tracemalloc.start(16)
            snapshot = tracemalloc.take_snapshot()
        child, opened = await open_sockets(args.n)
        await until(lambda: len(server.server_state.connections) >= args.n, f"{args.n} sockets")
        await asyncio.sleep(1.0)
        counts_after, rss_after = object_counts(), rss_mb()
        tasks = len(asyncio.all_tasks()) - tasks_before
        n = args.n
        accepted, deflated = opened.split()
        print(
            f"{args.app} on uvicorn ws={args.ws}, server deflate {args.server_deflate}, "
            f"offer deflate {args.offer_deflate}: {accepted} open ({deflated} with deflate); "
            f"RSS {rss_before:.1f} -> {rss_after:.1f} MB, "
            f"{1024 * (rss_after - rss_before) / n:.2f} KB per socket; "
            f"{tasks / n:.2f} tasks per socket"
        )
        kept = {k: counts_after[k] - counts_before[k] for k in counts_after}
        common = [(k, v) for k, v in kept.items() if v >= n // 2]
        print("objects per socket: " + ", ".join(
            f"{k} {v / n:.0f}" for k, v in sorted(common, key=lambda kv: -kv[1])
        ))  # fmt: skip
        if args.trace:
            stats = tracemalloc.take_snapshot().compare_to(snapshot, "traceback")
            sizes: collections.Counter[str] = collections.Counter()
            for stat in stats:
                sizes[where(stat.traceback)] += stat.size_diff
            print(f"traced: {sum(sizes.values()) / n / 1024:.2f} KB per socket; the largest:")
            for line, size in sizes.most_common(args.trace):
                print(f"  {size / n:7.0f} B  {line}")
            tracemalloc.stop()
        child.kill()
        await child.wait()
        server.should_exit = True
        await running


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    import uvloop

    if argv[:1] == ["--client"]:
        port, key, count, offer = argv[1:5]
        uvloop.run(clients(int(port), key, int(count), offer))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("-n", type=int, default=2000, help="sockets to open")
    parser.add_argument("--app", choices=["daehwa", "bare"], default="daehwa")
    parser.add_argument("--ws", default="auto", help="uvicorn's WebSocket implementation")
    parser.add_argument("--offer-deflate", action="store_true", help="as browsers do")
    parser.add_argument(
        "--server-deflate", action="store_true", help="uvicorn's default (daehwa serve: off)"
    )
    parser.add_argument("--trace", type=int, nargs="?", const=25, default=0, help="top N lines")
    uvloop.run(serve_and_measure(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
