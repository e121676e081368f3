"""Shared test helpers: handshakes instead of sleeps."""

from __future__ import annotations

import asyncio
import inspect
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import litegate


def interrupt_at(func: Callable[..., Any], text: str, nth: int = 1) -> Any:
    """A trace function raising KeyboardInterrupt once, as a Ctrl-C on the loop (main) thread
    would, when ``func`` reaches the line containing ``text`` for the ``nth`` time."""
    src, start = inspect.getsourcelines(func)
    target = start + next(i for i, line in enumerate(src) if text in line)
    code = func.__code__
    hits: list[int] = []

    def local(frame: Any, event: str, arg: Any) -> Any:
        if event == "line" and frame.f_lineno == target and len(hits) < nth:
            hits.append(1)
            if len(hits) == nth:
                raise KeyboardInterrupt("simulated Ctrl-C")
        return local

    return lambda frame, event, arg: local if frame.f_code is code else None


@contextmanager
def interrupting(func: Callable[..., Any], text: str) -> Iterator[None]:
    """Inside the block, the first time ``func`` reaches the line containing ``text``, a
    KeyboardInterrupt is raised there (:func:`interrupt_at`); the block must see it. The
    tracer before (coverage's, under ``make test``) is put back after."""
    import pytest  # (helpers is imported by the tests only)

    tracer = sys.gettrace()
    sys.settrace(interrupt_at(func, text))
    try:
        with pytest.raises(KeyboardInterrupt):
            yield
    finally:
        sys.settrace(tracer)


def writer_autocheckpoint(db: litegate.Database) -> int:
    """The writer connection's ``wal_autocheckpoint`` once a COMMIT ran off the event loop
    (this thread's: it gives SQLite back the automatic checkpoint that COMMITs on a loop hold
    off). A read outside a transaction would go to a reader, which has its own setting."""
    with db.transaction() as tx:
        tx.execute("CREATE TABLE IF NOT EXISTS ckpt_probe(x)")
        tx.execute("INSERT INTO ckpt_probe VALUES (1)")
    with db.transaction() as tx:
        pages: int = tx.query_value("PRAGMA wal_autocheckpoint")
    return pages


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.001)


def write_elsewhere(path: str, sql: str = "INSERT INTO t VALUES (2)", timeout: float = 5.0) -> None:
    """Commit ``sql`` through a connection of its own: another process, as far as SQLite's
    locks and snapshots are concerned."""
    other = sqlite3.connect(path, timeout=timeout)
    try:
        other.execute(sql)
        other.commit()
    finally:
        other.close()


@contextmanager
def lane_held(db: litegate.Database) -> Iterator[None]:
    """Hold the write lane from another thread until the block ends (queued jobs then run
    as one batch)."""
    entered = threading.Event()
    release = threading.Event()
    errors: list[BaseException] = []

    def holder() -> None:
        try:
            with db.transaction():
                entered.set()
                release.wait(20)
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)
            entered.set()

    t = threading.Thread(target=holder, name="lane-holder")
    t.start()
    assert entered.wait(10)
    try:
        yield
    finally:
        release.set()
        t.join(20)
        assert not errors, errors


@asynccontextmanager
async def lane_held_async(db: litegate.Database) -> AsyncIterator[None]:
    """:func:`lane_held` for an ``async def`` test: entering and leaving wait in a thread, so
    the test does not block its own event loop."""
    cm = lane_held(db)
    await asyncio.to_thread(cm.__enter__)
    try:
        yield
    except BaseException as exc:
        await asyncio.to_thread(cm.__exit__, type(exc), exc, exc.__traceback__)
        raise
    else:
        await asyncio.to_thread(cm.__exit__, None, None, None)


class Outcome:
    """Runs a call in a thread and records its result or exception."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(fn,))
        self.thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self.result = fn()
        except BaseException as exc:
            self.error = exc

    def join(self) -> Outcome:
        self.thread.join(20)
        assert not self.thread.is_alive()
        return self


def queued_in_order(db: litegate.Database, *calls: Callable[[], Any]) -> list[Outcome]:
    """Start each call in a thread of its own, once the one before it is in ``db``'s write
    queue (the lane held meanwhile, e.g. by :func:`lane_held`): they queue in this order."""
    outcomes: list[Outcome] = []
    for n, call in enumerate(calls, 1):
        outcomes.append(Outcome(call))
        wait_for(lambda: db.stats().queue_depth == len(outcomes), what=f"{n} queued jobs")
    return outcomes


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a server a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
