"""Jobs: the unit of work handed to the write lane, and how their callers are answered."""

from __future__ import annotations

import contextvars
import sqlite3
import time
from _thread import allocate_lock as _lock_type
from collections.abc import Callable
from typing import Any

__all__ = ("EXCLUSIVE", "READ", "WRITE", "Job", "LaneHold")

WRITE = 0  # runs inside the lane's group-commit transaction, isolated by a savepoint
READ = 1  # runs on the writer connection outside any transaction (readers=0)
EXCLUSIVE = 2  # takes the lane for itself (interactive transactions, snapshots, scripts)


class Job:
    """One call waiting for the lane. The caller blocks on ``_done``, a raw lock that the lane
    releases once the outcome is final (for writes: after the COMMIT that made it durable).
    """

    __slots__ = ("_done", "args", "ctx", "error", "fn", "kind", "result", "sql", "time_limit")
    kind: int

    def __init__(
        self,
        kind: int,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        sql: str | None = None,
        time_limit: float | None = None,
    ) -> None:
        self.kind = kind
        self.time_limit = time_limit
        self.fn = fn
        self.args = args
        self.sql = sql
        self.ctx = contextvars.copy_context()
        self.result: Any = None
        self.error: BaseException | None = None
        self._done = _lock_type()
        self._done.acquire()

    def run(self, conn: sqlite3.Connection) -> Any:
        """Run the job's function on ``conn`` in the caller's contextvars context."""
        return self.ctx.run(self.fn, conn, *self.args)

    def finish(self, result: Any = None, error: BaseException | None = None) -> None:
        """Called from the writer thread: publish the outcome and wake the caller."""
        self.result = result
        self.error = error
        self._done.release()

    def wait(self, timeout: float | None) -> bool:
        """Block the calling thread until finished; False if ``timeout`` ran out first."""
        if timeout is None:
            return self._done.acquire()
        return self._done.acquire(timeout=max(timeout, 0.0))

    def outcome(self) -> Any:
        if self.error is not None:
            err = self.error
            self.error = None  # break the traceback -> frame -> job cycle
            raise err
        return self.result


def _noop(conn: sqlite3.Connection) -> None:  # pragma: no cover - never run
    return None


class LaneHold(Job):
    """An exclusive hold of the write lane.

    The writer thread grants it (``finish``) and then parks in :meth:`hold` until the holder
    calls :meth:`release`. While parked the holder, on its own thread, is the only user of the
    writer connection: no thread hop per statement.
    """

    __slots__ = ("_released", "granted_at")

    def __init__(self) -> None:
        super().__init__(EXCLUSIVE, _noop, ())
        self._released = _lock_type()
        self._released.acquire()
        self.granted_at = 0.0

    def release(self) -> None:
        self._released.release()

    def hold(self, warn_after: float, on_long: Callable[[float], None]) -> float:
        """Writer thread: wait until released; report once if held past ``warn_after``."""
        start = self.granted_at = time.monotonic()
        if not self._released.acquire(timeout=warn_after if warn_after > 0 else -1):
            on_long(time.monotonic() - start)
            self._released.acquire()
        return time.monotonic() - start
