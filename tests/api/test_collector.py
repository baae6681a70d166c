"""The garbage collector settled once start-up is complete (``daehwa serve``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from daehwa.api.app import create_app
from daehwa.config import load_settings


def test_settle_freezes_what_start_up_made_and_raises_the_young_threshold() -> None:
    # In a child process: freezing would keep this test process's objects forever.
    code = (
        "import gc; from daehwa import collector; "
        "middle, oldest = gc.get_threshold()[1:]; collector.settle(); "
        "print(gc.get_threshold() == (collector.YOUNG_THRESHOLD, middle, oldest), "
        "gc.get_freeze_count() > 1000)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.split() == ["True", "True"]


async def test_on_started_runs_once_after_start_up_and_before_requests(tmp_path: Path) -> None:
    settings = load_settings(
        None,
        server={"data_dir": str(tmp_path), "bootstrap_user": None},
        store={"url": "memory://"},
    )
    calls: list[bool] = []
    app = create_app(settings, on_started=lambda: calls.append(hasattr(app.state, "parts")))
    assert calls == []
    async with app.router.lifespan_context(app):
        assert calls == [True], "called once, with the application assembled"
    assert calls == [True]
