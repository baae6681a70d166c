"""Profile a benchmarked server's event-loop thread with cProfile.

Put this directory first on the server's ``PYTHONPATH`` and name the output in
``DAEHWA_CPROFILE``; with ``bench.streaming`` that is (both settings after one
``--set``)::

    python -m bench.streaming -c 50 --targets sse --runs 1 --turns 4 --idle 0 --overload 0 \\
        --set PYTHONPATH=bench/call_profile:src:. DAEHWA_CPROFILE=/tmp/daehwa.prof

The statistics are written to ``DAEHWA_CPROFILE`` plus ``.PID`` when the server
is stopped, and read with ``python -m pstats``. cProfile makes every Python
call dearer, so its times are inflated (the more, the finer the code); its call
counts are exact: divided by the events a load relayed, they say what each
event costs in calls. A coroutine counts one call per resumption. The threads
SQLite's long calls run in are not profiled.
"""

from __future__ import annotations

import cProfile
import os
import signal
from typing import Any

_PATH = os.environ.get("DAEHWA_CPROFILE")

if _PATH:
    _profile = cProfile.Profile()

    def _dump(signum: int, frame: Any) -> None:
        # uvicorn shuts down, restores this handler and raises the signal again.
        _profile.disable()
        _profile.dump_stats(f"{_PATH}.{os.getpid()}")
        os._exit(0)

    signal.signal(signal.SIGTERM, _dump)
    _profile.enable()
