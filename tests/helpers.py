"""Shared test helpers: handshakes instead of sleeps."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import litegate


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.001)


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
