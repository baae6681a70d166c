"""SQLite connections in worker threads, each job's result handed back to the event loop.

Each store call is one job for a thread that owns its connection, so a whole
transaction costs a single hop from the event loop and back. One writer
thread runs every write (SQLite has one writer anyway: queueing jobs is
cheaper than contending for the lock); reader threads run the single-statement
reads beside it, which WAL allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any, TypeVar

from daehwa.errors import Conflict, StoreError

log = logging.getLogger(__name__)

T = TypeVar("T")

# How long a connection waits for another process's write lock before failing.
BUSY_TIMEOUT_MS = 10_000
# Reader threads of a file database (an in-memory one has only the writer).
READERS = 2

_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]]


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


class _Worker(threading.Thread):
    """A thread with one connection, running jobs from a queue until told to stop."""

    def __init__(self, name: str, jobs: SimpleQueue[_Job | None], connect: Callable[[], Any]):
        super().__init__(name=name, daemon=True)
        self.jobs = jobs
        self.connect = connect

    def run(self) -> None:
        connection: Any = None
        failure: BaseException | None = None
        try:
            connection = self.connect()
        except BaseException as exc:  # every job will get this error
            failure = exc
        try:
            while (job := self.jobs.get()) is not None:
                loop, future, fn, args = job
                result, error = None, failure
                if error is None:
                    try:
                        result = fn(connection, *args)
                    except BaseException as exc:  # handed to the awaiting task
                        error = exc
                # A closed loop raises RuntimeError: nobody is waiting any more.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_settle, future, result, error)
        finally:
            if connection is not None:
                connection.close()


class SqliteConnections:
    """A writer thread and reader threads on one SQLite file (or ``:memory:``), started lazily."""

    def __init__(self, path: str, *, readers: int = READERS) -> None:
        self.path = path
        self.memory = path in ("", ":memory:")
        self._writes: SimpleQueue[_Job | None] = SimpleQueue()
        # An in-memory database exists only inside its one connection.
        self._reads = self._writes if self.memory else SimpleQueue()
        self._workers = [_Worker("daehwa-sqlite-writer", self._writes, self._connect_writer)]
        if not self.memory:
            self._workers += [
                _Worker(f"daehwa-sqlite-reader-{n}", self._reads, self._connect_reader)
                for n in range(readers)
            ]
        self._started = False
        self._closed = False

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self.path or ":memory:",
            isolation_level=None,  # transactions are begun and ended explicitly
            check_same_thread=False,
            cached_statements=256,
        )
        connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        connection.execute("PRAGMA foreign_keys=ON")
        return connection

    def _connect_writer(self) -> sqlite3.Connection:
        connection = self._connect()
        # WAL lets readers run beside the one writer; it is kept in the file.
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        return connection

    def _connect_reader(self) -> sqlite3.Connection:
        connection = self._connect()
        connection.execute("PRAGMA query_only=1")
        return connection

    def _start(self) -> None:
        if self._closed:
            raise StoreError("the history store is closed")
        if not self._started:
            self._started = True
            for worker in self._workers:
                worker.start()

    async def _submit(self, queue: SimpleQueue[_Job | None], fn: Callable[..., T], *args: Any) -> T:
        self._start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        queue.put((loop, future, fn, args))
        try:
            return await future
        except sqlite3.IntegrityError as exc:
            raise Conflict("a row with this key already exists") from exc
        except (sqlite3.Error, OSError) as exc:
            log.warning("sqlite store call failed: %s", exc)
            raise StoreError("the history store is unavailable") from exc

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(connection, *args)`` in a reader thread."""
        return await self._submit(self._reads, fn, *args)

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(connection, *args)`` in one transaction in the writer thread."""
        return await self._submit(self._writes, _in_transaction, fn, *args)

    async def run_on_writer(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(connection, *args)`` in the writer thread, outside any transaction."""
        return await self._submit(self._writes, fn, *args)

    async def aclose(self) -> None:
        """Stop the threads after the jobs already queued; close their connections."""
        self._closed = True
        if not self._started:
            return
        for worker in self._workers:
            worker.jobs.put(None)
        await asyncio.gather(*(asyncio.to_thread(w.join) for w in self._workers))


def _in_transaction(connection: sqlite3.Connection, fn: Callable[..., T], *args: Any) -> T:
    # IMMEDIATE takes the write lock at once, so reads inside see what they change.
    connection.execute("BEGIN IMMEDIATE")
    try:
        result = fn(connection, *args)
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
    return result
