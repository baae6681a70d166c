"""``make bench``: the quick setting of every benchmark, each in its own process.

Each runs bounded in time on loopback only. The full settings of record, and
their latest figures, are in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import subprocess
import sys
import time

QUICK: list[tuple[str, list[str]]] = [
    ("content filter", ["bench.guard_bench", "--quick"]),
    (
        "upstream client",
        ["bench.upstream_client", "--streams", "50", "--tokens", "200", "--rounds", "3"],
    ),
    (
        "resilience: CPU per token",
        ["bench.resilience_bench", "cpu", "--tokens", "50000", "--rounds", "3"],
    ),
    (
        "resilience: fallback latency",
        ["bench.resilience_bench", "fallback", "--timeout", "1.0", "--runs", "10"],
    ),
    ("resilience: breaker", ["bench.resilience_bench", "breaker"]),
    ("sliding window", ["bench.window_speed"]),
    ("memory fidelity", ["bench.memory_fidelity", "--conversations", "4"]),
    (
        "store scale (small)",
        ["bench.store_scale", "--messages", "20000", "--conversations", "200", "--samples", "300"],
    ),
    ("streaming through the API", ["bench.streaming", "--quick"]),
]
# One benchmark may take this long before it is stopped.
LIMIT_SECONDS = 600


def main() -> int:
    failed = []
    for title, argv in QUICK:
        print(f"\n=== {title}: python -m {' '.join(argv)}", flush=True)
        started = time.monotonic()
        try:
            code = subprocess.run([sys.executable, "-m", *argv], timeout=LIMIT_SECONDS).returncode
        except subprocess.TimeoutExpired:
            code = -1
        print(f"=== {title}: exit {code} after {time.monotonic() - started:.0f} s", flush=True)
        if code != 0:
            failed.append(title)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
