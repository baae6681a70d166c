"""SQLite connections: short statements on the event loop, the rest in worker threads.

A point read or a one-turn write takes SQLite a fraction of a millisecond,
less than handing it to a thread and back: under load, that hand-back waits
for the busy event loop (twice: once to settle the future, once to resume the
task), and each thread contends for the GIL. So a short call runs on the
event loop's own connection, which never waits: it has no busy timeout, and
a call that finds the database locked (another process writing, or a long job
of this one) goes to a thread instead. Its commits never checkpoint the WAL
either (that can mean an fsync); the writer thread does, after every
``CHECKPOINT_EVERY`` of them.

The threads own their connections: one writer thread runs every other write
(SQLite has one writer anyway: queueing jobs is cheaper than contending for
the lock); reader threads run the other reads beside it, which WAL allows.
An in-memory database exists only inside the writer thread's connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from queue import SimpleQueue
from typing import Any, TypeVar, cast

from daehwa.errors import Conflict, StoreError

log = logging.getLogger(__name__)

T = TypeVar("T")

# How long a thread's connection waits for another process's write lock before failing.
BUSY_TIMEOUT_MS = 10_000
# Reader threads of a file database (an in-memory one has only the writer).
READERS = 2
# Commits on the event loop's connection between two checkpoints of the WAL by the
# writer thread (SQLite's own default is every 1,000 pages; a turn writes a few).
CHECKPOINT_EVERY = 100

_Job = tuple[
    asyncio.AbstractEventLoop | None,
    "asyncio.Future[Any] | None",
    Callable[..., Any],
    tuple[Any, ...],
]


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
                if loop is None or future is None:
                    continue  # nobody awaits this job
                # A closed loop raises RuntimeError: nobody is waiting any more.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_settle, future, result, error)
        finally:
            if connection is not None:
                connection.close()


@contextlib.contextmanager
def _store_errors() -> Iterator[None]:
    """SQLite's errors as the store's."""
    try:
        yield
    except sqlite3.IntegrityError as exc:
        raise Conflict("a row with this key already exists") from exc
    except (sqlite3.Error, OSError) as exc:
        log.warning("sqlite store call failed: %s", exc)
        raise StoreError("the history store is unavailable") from exc


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    return (exc.sqlite_errorcode & 0xFF) == sqlite3.SQLITE_BUSY


class SqliteConnections:
    """The event loop's connection, a writer thread and reader threads on one SQLite file.

    Everything starts on first use. ``on_loop=False`` sends every call to a
    thread (an in-memory database always does).
    """

    def __init__(self, path: str, *, readers: int = READERS, on_loop: bool = True) -> None:
        self.path = path
        self.memory = path in ("", ":memory:")
        self.on_loop = on_loop and not self.memory
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
        self._loop_connection: sqlite3.Connection | None = None
        # Held while a call runs on the loop's connection: a second event loop in
        # another thread (tests, embedding code) goes to the threads meanwhile.
        self._loop_lock = threading.Lock()
        self._loop_commits = 0
        # Calls that found the database locked and went to a thread instead.
        self.handed_over = 0
        # Checkpoints asked of the writer thread.
        self.checkpoints = 0

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

    def _connect_loop(self) -> sqlite3.Connection:
        connection = self._connect()
        try:
            connection.execute("PRAGMA busy_timeout=0")  # locked: hand the call to a thread
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute("PRAGMA wal_autocheckpoint=0")  # the writer thread checkpoints
        except BaseException:
            connection.close()  # the next call tries again
            raise
        return connection

    def _start(self) -> None:
        if self._closed:
            raise StoreError("the history store is closed")
        if not self._started:
            self._started = True
            for worker in self._workers:
                worker.start()

    def _on_loop(self, fn: Callable[..., T], args: tuple[Any, ...]) -> tuple[bool, T | None]:
        """``(True, fn(connection, *args))`` on the loop's connection, or ``(False, None)``
        when it cannot run there without waiting."""
        if self._closed:
            raise StoreError("the history store is closed")
        if not self._loop_lock.acquire(blocking=False):
            return False, None
        try:
            with _store_errors():
                try:
                    if self._loop_connection is None:
                        self._loop_connection = self._connect_loop()
                    return True, fn(self._loop_connection, *args)
                except sqlite3.OperationalError as exc:
                    if not _is_busy(exc):
                        raise
            self.handed_over += 1
            return False, None
        finally:
            self._loop_lock.release()

    async def _submit(self, queue: SimpleQueue[_Job | None], fn: Callable[..., T], *args: Any) -> T:
        self._start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        queue.put((loop, future, fn, args))
        with _store_errors():
            return await future

    async def read(self, fn: Callable[..., T], *args: Any, short: bool = True) -> T:
        """``fn(connection, *args)``: on the loop's connection if ``short``, else in a thread."""
        return await self._call(self._reads, fn, args, short)

    async def write(self, fn: Callable[..., T], *args: Any, short: bool = True) -> T:
        """``fn(connection, *args)`` in one transaction: on the loop's connection if
        ``short``, else (or when the database is locked) in the writer thread."""
        return await self._call(self._writes, _in_transaction, (fn, *args), short)

    async def _call(
        self,
        queue: SimpleQueue[_Job | None],
        fn: Callable[..., T],
        args: tuple[Any, ...],
        short: bool,
    ) -> T:
        if short and self.on_loop:
            done, result = self._on_loop(fn, args)
            if done:
                if queue is self._writes:
                    self._committed_on_loop()
                return cast(T, result)
        return await self._submit(queue, fn, *args)

    def _committed_on_loop(self) -> None:
        self._loop_commits += 1
        if self._loop_commits >= CHECKPOINT_EVERY:
            self._loop_commits = 0
            self.checkpoints += 1
            self._start()
            self._writes.put((None, None, _checkpoint, ()))

    async def run_on_writer(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(connection, *args)`` in the writer thread, outside any transaction."""
        return await self._submit(self._writes, fn, *args)

    async def aclose(self) -> None:
        """Stop the threads after the jobs already queued; close every connection."""
        self._closed = True
        if self._started:
            for worker in self._workers:
                worker.jobs.put(None)
            await asyncio.gather(*(asyncio.to_thread(w.join) for w in self._workers))
        with self._loop_lock:
            if self._loop_connection is not None:
                self._loop_connection.close()
                self._loop_connection = None


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


def _checkpoint(connection: sqlite3.Connection) -> None:
    """Copy the WAL's committed pages into the database without waiting for anyone."""
    try:
        connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    except sqlite3.Error as exc:  # the next checkpoint (or SQLite's own) catches up
        log.warning("sqlite checkpoint failed: %s", exc)
