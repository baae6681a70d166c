"""Log every collection of CPython's cycle collector in a benchmarked server.

Put this directory first on the server's ``PYTHONPATH`` and name the log file
in ``DAEHWA_GC_LOG``; with ``bench.streaming`` that is::

    python -m bench.streaming -c 500 --targets sse --runs 2 --idle 0 --overload 0 \\
        --set PYTHONPATH=bench/gc_log:. DAEHWA_GC_LOG=/tmp/gc.log --replies /tmp/replies.txt

Each line: the end of the collection (Unix seconds), its generation, its wall
and CPU milliseconds, and the objects it freed. With ``DAEHWA_GC_CENSUS=1``
each collection of the youngest generation after start-up is preceded by a
``#`` line: the live objects it is about to walk, their references and the most
common types (slow: for diagnosis only). ``DAEHWA_GC_YOUNG=N`` sets the
youngest generation's threshold that ``daehwa serve`` applies after start-up
(``daehwa.collector.YOUNG_THRESHOLD``).
``python -m bench.streaming_costs bursts --file /tmp/replies.txt --gc /tmp/gc.log``
sets the slowest first tokens beside the collections.
"""

from __future__ import annotations

import gc
import os
import time
from collections import Counter
from typing import Any

_PATH = os.environ.get("DAEHWA_GC_LOG")
_CENSUS = os.environ.get("DAEHWA_GC_CENSUS") == "1"

if os.environ.get("DAEHWA_GC_YOUNG"):
    import daehwa.collector

    daehwa.collector.YOUNG_THRESHOLD = int(os.environ["DAEHWA_GC_YOUNG"])

if _PATH:
    _log = open(_PATH, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 (open for the process)
    _started = [0.0, 0.0]

    def _collection(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            # Start-up collects with CPython's default threshold of 700.
            if _CENSUS and info["generation"] == 0 and gc.get_threshold()[0] > 700:
                young = gc.get_objects(0)
                references = sum(len(gc.get_referents(o)) for o in young)
                kinds = Counter(type(o).__name__ for o in young).most_common(6)
                _log.write(f"# {len(young)} objects, {references} references, {kinds}\n")
                del young
            _started[:] = time.perf_counter(), time.thread_time()
            return
        wall = 1e3 * (time.perf_counter() - _started[0])
        cpu = 1e3 * (time.thread_time() - _started[1])
        _log.write(
            f"{time.time():.3f} {info['generation']} {wall:.2f} {cpu:.2f} {info['collected']}\n"
        )

    gc.callbacks.append(_collection)
