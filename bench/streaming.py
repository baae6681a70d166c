"""Streaming overhead, concurrency and memory: daehwa against the upstream and a naive gateway.

Starts, on 127.0.0.1 only, each in its own process: the fake OpenAI-compatible
upstream (``tests/fakes/openai_upstream.py``, the scenario of record: 200
tokens 20 ms apart, TTFT 50 ms); ``daehwa serve`` (SQLite store in a temporary
directory, the content filter on a 100,000-word list, in-memory run log,
context recall off); the naive gateway (:mod:`bench.naive_gateway`) and the
floor relay (:mod:`bench.floor_gateway`) under uvicorn. For each C it runs
:mod:`bench.load` (its own process) against each target: ``direct`` (straight
to the upstream, the reference), ``floor``, ``sse`` and ``ws`` (daehwa),
``naive``. Rows report TTFB p50/p99 and the ratio to direct, end-to-end time,
tokens/s, finished / cut / errored replies, and the server's CPU per token and
peak RSS from /proc; medians over ``--runs``. Then, on fresh servers, many idle
WebSockets and the RSS they take. ``--profile`` samples daehwa with py-spy
during the SSE loads; ``--store`` and ``--set`` run daehwa in other
configurations. The load generator and the upstream share the cores with the
server (``nproc`` is printed). See docs/performance.md.

    python -m bench.streaming --quick                           # make bench, ~2.5 min
    python -m bench.streaming --runs 3 --out streaming.json     # the table of record
    python -m bench.streaming -c 200 --targets sse --runs 1 --idle 0 --profile prof
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.load import proc_cpu, raise_fd_limit
from bench.streaming_costs import profile_summary

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = "text tokens=200 delay=0.02 ttft=0.05"
TARGETS = ("direct", "floor", "sse", "ws", "naive")


def reply_shape(tokens: int = 200) -> tuple[int, int]:
    """(tokens, characters) of one whole reply of the fake upstream."""
    from tests.fakes.openai_upstream import DEFAULT_TEXT

    base = [DEFAULT_TEXT[i : i + 2] for i in range(0, len(DEFAULT_TEXT), 2)]
    return tokens, sum(len(base[i % len(base)]) for i in range(tokens))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, seconds: float = 60.0) -> None:
    limit = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            if time.monotonic() > limit:
                raise RuntimeError(f"{url} did not answer within {seconds:g} s") from None
        time.sleep(0.2)


class Stack:
    """The three servers, in child processes, and their temporary directory."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dir = Path(tempfile.mkdtemp(prefix="daehwa-bench-"))
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.key = ""
        self.upstream = ""
        self.daehwa = ""
        self.naive = ""
        self.floor = ""

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        # Output to files, never pipes: a pipe nobody reads could block a server.
        log = (self.dir / f"{name}.log").open("w")
        self.procs[name] = subprocess.Popen(
            argv, cwd=ROOT, env=env or self.env, stdout=log, stderr=subprocess.STDOUT
        )

    def wait_line(self, name: str, marker: str, seconds: float = 60.0) -> str:
        """The first line of ``name``'s output containing ``marker``."""
        limit = time.monotonic() + seconds
        while time.monotonic() < limit:
            for line in (self.dir / f"{name}.log").read_text(encoding="utf-8").splitlines():
                if marker in line:
                    return line
            if self.procs[name].poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"{name} did not print {marker!r}; see {self.dir / name}.log")

    def settle(self, limit: float = 180.0) -> float:
        """Wait until every server is idle (< 5% of a core for 1 s); returns the seconds waited.

        Replies outlive their clients: after an overload a server may still be
        generating the backlog, which must not be billed to the next point.
        """
        started = time.monotonic()
        quiet = 0
        last = sum(proc_cpu(p.pid) for p in self.procs.values())
        while quiet < 2 and time.monotonic() - started < limit:
            time.sleep(0.5)
            now = sum(proc_cpu(p.pid) for p in self.procs.values())
            quiet = quiet + 1 if now - last < 0.025 * len(self.procs) else 0
            last = now
        return round(time.monotonic() - started, 1)

    def check_alive(self) -> None:
        """Fail loudly when a server died (its exit code and the end of its log)."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = (self.dir / f"{name}.log").read_text(encoding="utf-8")[-3000:]
                raise RuntimeError(f"{name} exited with code {proc.returncode}:\n{tail}")

    def pid(self, name: str) -> int:
        return self.procs[name].pid

    def start(self) -> None:
        args = self.args
        self.spawn(
            "upstream",
            [sys.executable, "-m", "tests.fakes.openai_upstream", "--scenario", args.scenario],
        )
        self.upstream = self.wait_line("upstream", "http://").strip().removesuffix("/v1")
        config = self.write_config()
        if not args.store.startswith("memory"):
            # A fresh name: a PostgreSQL or Redis store may keep users from an earlier run.
            name = f"bench-{self.dir.name}"
            added = subprocess.run(
                [sys.executable, "-m", "daehwa", "users", "add", name, "--config", str(config)],
                cwd=ROOT,
                env=self.env,
                capture_output=True,
                text=True,
                check=True,
            )
            self.key = added.stdout.strip().splitlines()[-1]
        port = free_port()
        overrides = dict(item.split("=", 1) for item in args.set)
        self.spawn(
            "daehwa",
            [sys.executable, "-m", "daehwa", "serve", "--config", str(config), "--port", str(port)],
            {**self.env, **overrides},
        )
        if not self.key:
            # A memory store is empty at start: the bootstrap user's key is printed once.
            self.key = self.wait_line("daehwa", "with API key:").rsplit(":", 1)[1].strip()
        self.daehwa = f"http://127.0.0.1:{port}"
        env = {**self.env, "NAIVE_UPSTREAM": f"{self.upstream}/v1"}
        for name in ("naive", "floor"):
            port = free_port()
            uvicorn = [sys.executable, "-m", "uvicorn", f"bench.{name}_gateway:app"]
            options = ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
            self.spawn(name, uvicorn + options, env)
            setattr(self, name, f"http://127.0.0.1:{port}")
        wait_http(f"{self.daehwa}/healthz", 120.0)
        wait_http(f"{self.naive}/openapi.json", 60.0)
        wait_http(f"{self.floor}/", 60.0)

    def write_config(self) -> Path:
        from bench.guard_data import banned_words

        words = self.dir / "words.txt"
        words.write_text("\n".join(banned_words(self.args.words)) + "\n", encoding="utf-8")
        data = self.dir / "data"
        data.mkdir()
        config = self.dir / "daehwa.toml"
        config.write_text(
            f"""
[server]
data_dir = {json.dumps(str(data))}
bootstrap_user = "{"bench" if self.args.store.startswith("memory") else ""}"

[store]
url = {json.dumps(self.args.store)}

[models.up]
provider = "openai"
base_url = "{self.upstream}/v1"
model = "bench"

[chat]
default_model = "up"
max_running_replies = {self.args.max_concurrency}

[context]
recall = false

[guard]
words_files = [{json.dumps(str(words))}]

[resilience]
max_concurrency = {self.args.max_concurrency}
""",
            encoding="utf-8",
        )
        return config

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.args.keep:
            print(f"kept {self.dir}", file=sys.stderr)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def run_load(
    stack: Stack,
    target: str,
    concurrency: int,
    args: argparse.Namespace,
    *,
    server: str | None = None,
) -> dict[str, Any]:
    """One load point in a child process; the parsed JSON result plus derived figures."""
    server = server or {"direct": "upstream", "naive": "naive", "floor": "floor"}.get(
        target, "daehwa"
    )
    url = {"upstream": stack.upstream, "naive": stack.naive, "floor": stack.floor}.get(
        server, stack.daehwa
    )
    watch = [stack.pid(server)] + ([stack.pid("upstream")] if server != "upstream" else [])
    tokens, chars = reply_shape()
    argv = [
        sys.executable, "-m", "bench.load", "--target", "naive" if target == "floor" else target,
        "--url", url,
        "--key", stack.key, "-c", str(concurrency), "--turns", str(args.turns),
        "--stagger", str(args.stagger), "--deadline", str(args.deadline), "--hold", "3",
        "--reply-tokens", str(tokens), "--reply-chars", str(chars),
        "--watch", *map(str, watch),
        *(["--replies", str(Path(args.replies).resolve())] if args.replies else []),
    ]  # fmt: skip
    stack.check_alive()
    settled = stack.settle()
    load_before = os.getloadavg()[0]
    profiler = start_profiler(stack, target, concurrency, args)
    done = subprocess.run(
        argv, cwd=ROOT, env=stack.env, capture_output=True, text=True, timeout=args.deadline + 300
    )
    stop_profiler(profiler)
    if done.returncode != 0:
        raise RuntimeError(f"bench.load failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["target"] = target  # "floor" speaks the naive gateway's API
    result["settled_s"] = settled
    result["loadavg_before"] = round(load_before, 2)
    if target == "idle-ws":
        return result
    cpu = result["cpu_s"]
    per = 1e6 / max(result["tokens"], 1)
    result["server_us_per_token"] = round(cpu[str(stack.pid(server))] * per, 1)
    result["upstream_us_per_token"] = round(cpu[str(stack.pid("upstream"))] * per, 1)
    result["loadgen_us_per_token"] = round(result["loadgen_cpu_s"] * per, 1)
    result["server_rss_mb"] = result["rss_peak_mb"][str(stack.pid(server))]
    return result


def start_profiler(
    stack: Stack, target: str, concurrency: int, args: argparse.Namespace
) -> subprocess.Popen[str] | None:
    if not args.profile or target != "sse":
        return None
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out = Path(args.profile)
    out.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [
            spy, "record", "--pid", str(stack.pid("daehwa")), "--rate", "200",
            "--format", "raw", "--nonblocking", "--gil", "--threads",
            "--output", str(out / f"sse-c{concurrency}.txt"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip


def stop_profiler(profiler: subprocess.Popen[str] | None) -> None:
    if profiler is None:
        return
    profiler.send_signal(2)  # SIGINT: py-spy writes its output and exits
    profiler.wait(timeout=60)


def median_rows(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-field medians over repeated runs of one point (counts summed where they add)."""
    first = dict(runs[0])

    def med(get: Any) -> float | None:
        values = [v for v in (get(r) for r in runs) if v is not None]
        return round(statistics.median(values), 3) if values else None

    for key in ("ttfb_ms", "e2e_s", "text_gap_ms"):
        first[key] = {
            q: med(lambda r, k=key, q=q: r.get(k, {}).get(q)) for q in ("p50", "p99", "max")
        }
    for key in (
        "text_events", "tokens_per_s", "server_us_per_token", "upstream_us_per_token",
        "loadgen_us_per_token", "server_rss_mb", "machine_busy", "loadavg_before",
    ):  # fmt: skip
        first[key] = med(lambda r, k=key: r.get(k))
    for key in ("replies", "finished", "unfinished", "cut"):
        first[key] = sum(r[key] for r in runs)
    errors: Counter[str] = Counter()
    for r in runs:
        errors.update(r["errors"])
        errors.update({f"setup:{k}": v for k, v in r["setup_errors"].items()})
    first["errors"] = dict(errors)
    first["runs"] = len(runs)
    return first


def table(rows: list[dict[str, Any]]) -> str:
    direct = {r["concurrency"]: r for r in rows if r["target"] == "direct"}
    naive = {r["concurrency"]: r for r in rows if r["target"] == "naive"}
    head = (
        "| target | C | replies | finished | cut | errors | TTFB p50 ms | TTFB p99 ms "
        "| ×direct p50/p99 | e2e p50 s | text events/reply | text gap p50/p99 ms "
        "| tokens/s | server CPU µs/token | ×naive "
        "| upstream µs/tok | loadgen µs/tok | server RSS MB | machine busy |"
    )
    out = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        ref = direct.get(r["concurrency"])
        ratio = "—"
        if ref and r["target"] != "direct" and r["ttfb_ms"]["p50"] and ref["ttfb_ms"]["p50"]:
            ratio = (
                f"{r['ttfb_ms']['p50'] / ref['ttfb_ms']['p50']:.2f}/"
                f"{(r['ttfb_ms']['p99'] or 0) / (ref['ttfb_ms']['p99'] or 1):.2f}"
            )
        base = naive.get(r["concurrency"])
        vs_naive = "—"
        if base and r["target"] in ("sse", "ws", "floor") and base["server_us_per_token"]:
            vs_naive = f"{r['server_us_per_token'] / base['server_us_per_token']:.2f}"
        errors = sum(r["errors"].values())
        out.append(
            f"| {r['target']} | {r['concurrency']} | {r['replies']} | {r['finished']} "
            f"| {r['cut']} | {errors} | {_n(r['ttfb_ms']['p50'])} | {_n(r['ttfb_ms']['p99'])} "
            f"| {ratio} | {_n(r['e2e_s']['p50'], 2)} | {_n(r.get('text_events'), 0)} "
            f"| {_n(r['text_gap_ms']['p50'], 0)}/{_n(r['text_gap_ms']['p99'], 0)} "
            f"| {_n(r['tokens_per_s'], 0)} "
            f"| {_n(r['server_us_per_token'])} | {vs_naive} | {_n(r['upstream_us_per_token'])} "
            f"| {_n(r['loadgen_us_per_token'])} | {_n(r['server_rss_mb'], 0)} "
            f"| {_n(100 * (r['machine_busy'] or 0), 0)}% |"
        )
    return "\n".join(out)


def _n(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="the make-bench setting")
    parser.add_argument("-c", "--concurrency", type=int, nargs="*", default=[1, 50, 200, 500])
    parser.add_argument("--targets", nargs="*", default=list(TARGETS), choices=TARGETS)
    parser.add_argument("--runs", type=int, default=3, help="repeats; medians are reported")
    parser.add_argument("--turns", type=int, default=2, help="messages per conversation")
    parser.add_argument("--stagger", type=float, default=4.0)
    parser.add_argument("--deadline", type=float, default=120.0, help="bound of each point (s)")
    parser.add_argument("--idle", type=int, default=10_000, help="idle WebSockets (0: skip)")
    parser.add_argument("--overload", type=int, default=0, help="C for the overload run (0: skip)")
    parser.add_argument(
        "--max-concurrency",
        type=int,
        default=1000,
        help="daehwa's bulkhead and admission bound ([chat] max_running_replies)",
    )
    parser.add_argument("--words", type=int, default=100_000, help="banned words in the filter")
    parser.add_argument("--scenario", default=SCENARIO)
    parser.add_argument(
        "--store", default="", help="daehwa's [store] url (default: SQLite in a temporary dir)"
    )
    parser.add_argument("--profile", default="", help="directory for py-spy samples of SSE loads")
    parser.add_argument(
        "--replies", default="", help="append each reply's send time and TTFB to this file"
    )
    parser.add_argument("--out", default="", help="write every result as JSON here")
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="DAEHWA_SECTION__KEY=VALUE",
        help="settings for daehwa serve only, e.g. DAEHWA_GUARD__OUTPUT_POLICY=off",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    if args.quick:
        args.concurrency, args.runs, args.turns, args.stagger = [50, 200], 1, 1, 2.0
        args.idle, args.deadline = 1000, 25.0
    return args


@contextlib.contextmanager
def running(args: argparse.Namespace) -> Iterator[Stack]:
    """The servers, started, and stopped on the way out."""
    stack = Stack(args)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


def idle_websockets(stack: Stack, args: argparse.Namespace) -> dict[str, Any]:
    """RSS per idle WebSocket on daehwa and on the floor gateway (fresh servers)."""
    results = {}
    for server in ("daehwa", "floor"):
        idle = run_load(stack, "idle-ws", args.idle, args, server=server)
        results[server] = idle
        pid = str(stack.pid(server))
        before, after = idle["rss_before_mb"][pid], idle["rss_after_mb"][pid]
        print(
            f"idle WebSockets on {server}: {idle['connections']} open "
            f"({idle['failures'] or 'no'} failures, {idle['pongs']} answered a ping); "
            f"RSS {before:.0f} → {after:.0f} MB, "
            f"{1024 * (after - before) / max(idle['connections'], 1):.1f} KB each",
            flush=True,
        )
    return results


def load_points(stack: Stack, args: argparse.Namespace) -> tuple[list[Any], list[Any]]:
    """Every (run, C, target) point, and the per-(target, C) medians over the runs."""
    # Warm-up: imports, first connections, and a prompt the content filter lets through.
    # (--quick: daehwa's SSE only, which also checks the prompt passes the filter.)
    for target in ["sse"] if args.quick and "sse" in args.targets else args.targets:
        warm = run_load(stack, target, 1, argparse.Namespace(**{**vars(args), "turns": 1}))
        if warm["finished"] != 1:
            raise RuntimeError(f"warm-up on {target} failed: {warm}")
    points: dict[tuple[str, int], list[dict[str, Any]]] = {}
    every = []
    for run in range(args.runs):
        for concurrency in args.concurrency:
            for target in args.targets:
                row = run_load(stack, target, concurrency, args)
                row["run"] = run
                every.append(row)
                points.setdefault((target, concurrency), []).append(row)
                print(_progress(row), file=sys.stderr, flush=True)
    medians = [median_rows(points[(t, c)]) for c in args.concurrency for t in args.targets]
    return every, medians


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    raise_fd_limit()  # inherited by the servers: thousands of sockets each
    started = time.monotonic()
    print(f"nproc {os.cpu_count()}; load average {os.getloadavg()[0]:.2f}", flush=True)
    results: dict[str, Any] = {"args": vars(args), "nproc": os.cpu_count()}
    try:
        if args.concurrency or args.overload:
            with running(args) as stack:
                if args.concurrency:
                    results["points"], results["medians"] = load_points(stack, args)
                    print(table(results["medians"]), flush=True)
                if args.overload:
                    over = run_load(stack, "sse", args.overload, args)
                    results["overload"] = over
                    print("\noverload:", _progress(over), json.dumps(over["errors"]), flush=True)
        if args.idle:
            # Fresh servers: memory freed after a load stays in the process and would hide
            # what the connections themselves take.
            with running(args) as stack:
                results["idle"] = idle_websockets(stack, args)
        if args.profile:
            for path in sorted(Path(args.profile).glob("sse-c*.txt")):
                print(f"\n== profile {path.name}\n{profile_summary(path)}", flush=True)
    finally:
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=1), encoding="utf-8")
    print(f"\n{time.monotonic() - started:.0f} s", flush=True)


def _progress(row: dict[str, Any]) -> str:
    return (
        f"{row['target']:>6} C={row['concurrency']:<4} finished {row['finished']}/"
        f"{row['replies']} cut {row['cut']} errors {sum(row['errors'].values())} "
        f"TTFB p50 {_n(row['ttfb_ms']['p50'])} p99 {_n(row['ttfb_ms']['p99'])} ms; "
        f"{_n(row.get('text_events'), 0)} text events, gap p99 "
        f"{_n(row.get('text_gap_ms', {}).get('p99'), 0)} ms; "
        f"server {_n(row.get('server_us_per_token'))} µs/token; "
        f"loadgen {_n(row.get('loadgen_us_per_token'))} µs/token; "
        f"busy {_n(100 * row.get('machine_busy', 0), 0)}%; "
        f"load {row['loadavg_before']}"
    )


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
