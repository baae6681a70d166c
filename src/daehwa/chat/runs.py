"""Replies that outlive the connection that asked for them.

A *run* generates one reply in a background task. Its events go to a
:class:`RunLog`; any number of followers (the SSE response that started it, a
resumed stream, a WebSocket) read the log after a sequence number and then
follow it live. A follower going away never stops the run; only
:meth:`RunRegistry.stop` does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from daehwa.errors import NotFound
from daehwa.events import Envelope, Event

log = logging.getLogger(__name__)

# Emits an event into the run's log and returns its sequence number.
Emit = Callable[[Event], Awaitable[int]]


class RunLog(Protocol):
    """Event logs of running and recently finished replies, by run id."""

    async def open(self, run_id: str) -> None:
        """Create the (empty) log of a run that is about to start."""
        ...

    async def append(self, run_id: str, envelope: Envelope) -> None: ...

    def follow(self, run_id: str, after: int = 0) -> AsyncIterator[Envelope]:
        """Events with ``seq > after``, then live ones until the terminal event.

        Raises :class:`NotFound` when the log does not exist (never started, or expired).
        """
        ...

    async def finish(self, run_id: str) -> None:
        """Mark the log complete; it is kept for the configured time, then dropped."""
        ...

    async def exists(self, run_id: str) -> bool: ...

    async def request_stop(self, run_id: str) -> None:
        """Ask the instance running ``run_id`` (maybe another one) to stop it."""
        ...

    def on_stop_request(self, handler: Callable[[str], object]) -> None:
        """Have ``handler(run_id)`` called for stop requests from other instances."""
        ...

    async def aclose(self) -> None: ...


@dataclass(slots=True)
class _Log:
    events: list[Envelope] = field(default_factory=list)
    finished_at: float | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class MemoryRunLog:
    """Run logs in this process's memory: the single-instance default."""

    def __init__(self, ttl: float = 600.0) -> None:
        self.ttl = ttl
        self._logs: dict[str, _Log] = {}

    def _expire(self) -> None:
        cutoff = time.monotonic() - self.ttl
        stale = [
            k for k, v in self._logs.items() if v.finished_at is not None and v.finished_at < cutoff
        ]
        for key in stale:
            del self._logs[key]

    async def open(self, run_id: str) -> None:
        self._expire()
        self._logs.setdefault(run_id, _Log())

    async def append(self, run_id: str, envelope: Envelope) -> None:
        entry = self._logs.get(run_id)
        if entry is None:
            self._expire()
            entry = self._logs[run_id] = _Log()
        entry.events.append(envelope)
        # Wake every follower, then give later appends a fresh event to wait on.
        entry.changed.set()
        entry.changed = asyncio.Event()

    async def follow(self, run_id: str, after: int = 0) -> AsyncIterator[Envelope]:
        entry = self._logs.get(run_id)
        if entry is None:
            raise NotFound(f"no event log for message {run_id}")
        index = max(after, 0)
        while True:
            events = entry.events
            while index < len(events):
                envelope = events[index]
                index += 1
                if envelope.seq > after:
                    yield envelope
                if envelope.terminal:
                    return
            if entry.finished_at is not None:
                return
            await entry.changed.wait()

    async def finish(self, run_id: str) -> None:
        entry = self._logs.get(run_id)
        if entry is not None:
            entry.finished_at = time.monotonic()
            entry.changed.set()

    async def exists(self, run_id: str) -> bool:
        return run_id in self._logs

    async def request_stop(self, run_id: str) -> None:
        return None  # one process: every run is local

    def on_stop_request(self, handler: Callable[[str], object]) -> None:
        return None

    async def aclose(self) -> None:
        self._logs.clear()


class Run:
    """One reply being generated: its id, its task and how to emit into its log."""

    def __init__(self, run_id: str, conversation_id: str, log: RunLog) -> None:
        self.id = run_id
        self.conversation_id = conversation_id
        self.stop_requested = False
        self._log = log
        self._seq = 0
        self.task: asyncio.Task[None] | None = None

    async def emit(self, event: Event) -> int:
        self._seq += 1
        await self._log.append(self.id, Envelope.of(self._seq, event))
        return self._seq

    @property
    def done(self) -> bool:
        return self.task is not None and self.task.done()


class RunRegistry:
    """Starts runs as background tasks and finds, follows and stops them."""

    def __init__(self, log: RunLog) -> None:
        self.log = log
        self._runs: dict[str, Run] = {}
        # The last run started per conversation, so turns of one conversation run in order.
        self._tails: dict[str, Run] = {}
        log.on_stop_request(self.stop)

    def get(self, run_id: str) -> Run | None:
        return self._runs.get(run_id)

    def active(self) -> int:
        return len(self._runs)

    async def start(
        self, run_id: str, conversation_id: str, body: Callable[[Run], Awaitable[None]]
    ) -> Run:
        """Start ``body(run)`` in the background after the conversation's previous run ends."""
        await self.log.open(run_id)
        run = Run(run_id, conversation_id, self.log)
        previous = self._tails.get(conversation_id)
        self._tails[conversation_id] = run
        self._runs[run_id] = run
        run.task = asyncio.create_task(self._execute(run, body, previous), name=f"run-{run_id}")
        return run

    async def _execute(
        self, run: Run, body: Callable[[Run], Awaitable[None]], previous: Run | None
    ) -> None:
        try:
            if previous is not None and previous.task is not None and not previous.task.done():
                # Wait for the earlier turn whatever its outcome; its failure never stops this one.
                try:
                    await asyncio.wait([previous.task])
                except asyncio.CancelledError:
                    if not run.stop_requested:
                        raise
                    # Stopped while queued: the body still runs, sees the stop and stores it.
            await body(run)
        except Exception:
            log.exception("run %s failed", run.id)
        finally:
            await self.log.finish(run.id)
            self._runs.pop(run.id, None)
            if self._tails.get(run.conversation_id) is run:
                del self._tails[run.conversation_id]

    def stop(self, run_id: str) -> bool:
        """Stop a reply running in this process; returns False when it is not running here."""
        run = self._runs.get(run_id)
        if run is None or run.task is None or run.task.done():
            return False
        run.stop_requested = True
        run.task.cancel()
        return True

    async def wait(self, run_id: str) -> None:
        run = self._runs.get(run_id)
        if run is not None and run.task is not None:
            await asyncio.wait([run.task])

    async def aclose(self, grace: float = 5.0) -> None:
        """Let running replies finish for up to ``grace`` seconds, then cancel them."""
        tasks = [r.task for r in self._runs.values() if r.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        await self.log.aclose()
