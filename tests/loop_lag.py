"""Loop-lag monitor: a ticker task on the test's event loop that records how late it wakes.

An ``async def`` test runs with a ticker beside it (conftest ``_loop_lag``, autouse). The
ticker sleeps :data:`PERIOD`; any lateness beyond that is time in which the loop could not run
a ready callback, because some callback, task step or inline read held it. The test fails when
the worst lateness exceeds the inline read's hard budget (``litegate._engine._inline._HARD_BUDGET``:
the one thing litegate itself may run on the loop) plus :data:`MARGIN`.

Where: a sampler thread looks at the loop thread's stack whenever the loop has not ticked for
longer than the limit, and the failure message lists the places it found the loop stuck. A late
tick in which it never saw the loop thread running code (only waiting in ``select`` or in the
ticker, or not at all: the thread waited for a CPU or the GIL) is held to the looser
:data:`UNSEEN_LIMIT`: that is the machine's load, not code holding the loop. (A thread that
hogs the GIL is measured by ``litegate bench``'s loop-lag columns, not here.)

Set ``LITEGATE_LOOP_LAG_LOG=FILE`` to append one line per async test (node id, worst lag of
the ticks seen running code, worst lag, worst raw lag, ticks, median lag; in ms) to re-measure
the distribution that :data:`MARGIN` rests on.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any

from litegate._engine._inline import _HARD_BUDGET

PERIOD = 0.001
"""Seconds the ticker sleeps between wake-ups."""

MARGIN = 0.025
"""Seconds of lateness tolerated beyond the inline read's hard budget (``_HARD_BUDGET``).

Calibrated on the 2-core development machine (shared with other test suites): 8 runs of the
async suite on 3.11 (5 at load ~1, 3 with a second test suite running beside it), then 2 runs
each on 3.11 and 3.13 under coverage (as `make test` runs them). Worst lag per test:

* ordinary async tests (API, transactions, cancellation, timeouts): 1-4.5 ms, median 1 ms;
* long statements on the writer/reader threads, 100k-row executemany: up to 16 ms (GIL
  hand-offs: a thread running Python keeps the GIL for up to the 5 ms switch interval);
* the shutdown-drain tests (300 requests through Starlette/FastAPI in process): up to 20 ms;
* bursts of hundreds of tasks made ready at once (the thousand-task and cancellation-storm
  tests): 15-90 ms, spread over hundreds of short steps (the longest single step measured
  7.7 ms). Those tests opt out, saying so.

The wall-clock lateness also held 40-150 ms of time in which the loop thread, or a thread
holding the GIL it waited for, was runnable but had no CPU; that is the machine's load, not
the loop being held, and is discounted per tick (:class:`_RunQueueWait`: every thread of the
process). Two more sources of stalls are kept out of the measurement because
they are neither litegate nor the test: asyncio debug mode (its per-handle tracebacks stat()
source files; 10-600 ms: lag is not enforced on debug loops) and full GC collections over the
session's heap (30-40 ms: conftest freezes the heap before each async test). 25 ms stays above
everything measured in the tests that keep the check, and below what a real block on the loop
costs (a sync commit, a lock held by a thread, a pool wait: tens of ms to seconds).
"""

LIMIT = _HARD_BUDGET + MARGIN  # (a read stalled past INLINE_BUDGET may run to _HARD_BUDGET)

UNSEEN_LIMIT = 0.5
"""Seconds a tick may be late when the sampler never saw the loop thread running anything
during it (only waiting in ``select``, in the ticker itself, or not seen at all).

Such a stall is the machine, not the loop being held: the loop thread was idle, waiting for a
CPU or for the GIL, which another thread of the process held while it waited for a CPU
itself -- 27-33 ms over the limit, with one of those samples or none, in CI runs beside other
test suites (load 4-5). A loop held by code -- litegate's, the test's, a framework's -- is seen
there by the sampler, so those stalls keep :data:`LIMIT`. Past this bound even an unseen stall
fails.
"""

_SAMPLE_EVERY = 0.005  # the sampler's period: at least 4 looks at a stall longer than LIMIT

# Innermost frames of a loop thread that is waiting, not running a callback: the selector, the
# loop's own bookkeeping, this ticker, and (uvloop, whose loop is C) the frame that started it.
_IDLE = {
    ("selectors.py", "select"),
    ("base_events.py", "_run_once"),
    ("base_events.py", "run_forever"),
    ("base_events.py", "run_until_complete"),
    ("_asyncio.py", "run_test"),
    ("runners.py", "run"),
}


class LoopLag:
    """Lateness of a ticker task while one test coroutine runs, and where the loop stalled."""

    def __init__(self) -> None:
        self.lags: list[float] = []  # per tick: lateness minus the process's run-queue wait
        self.raw: list[float] = []  # per tick: wall-clock lateness
        self.seen: list[bool] = []  # per tick: the sampler saw the loop thread running code
        self.stalls: Counter[str] = Counter()  # where the sampler found the stalled loop
        self._last_tick = time.monotonic()
        self._busy: set[float] = set()  # ticks (their _last_tick) in which it saw code running
        self._busy_lock = threading.Lock()  # guards _busy (the sampler adds, the ticker reads)
        self._ticked = asyncio.Event()  # set after each tick's measurement (and at the start)

    @property
    def worst(self) -> float:
        return max(self.lags, default=0.0)

    @property
    def worst_seen(self) -> float:
        """The worst lag of the ticks in which the loop thread was seen running code."""
        return max(
            (lag for lag, seen in zip(self.lags, self.seen, strict=True) if seen), default=0.0
        )

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        queued = _RunQueueWait()
        try:
            while True:
                t = loop.time()
                queued()  # (starts this tick's count)
                self._last_tick = started = time.monotonic()
                self._ticked.set()
                await asyncio.sleep(PERIOD)
                late = loop.time() - t - PERIOD
                self.raw.append(late)
                self.lags.append(late - queued())
                with self._busy_lock:
                    self.seen.append(started in self._busy)
        finally:
            queued.close()

    def _sample(self, loop_thread: int, stop: threading.Event) -> None:
        """Sampler thread: while the loop is stalled, note where its thread is."""
        while not stop.wait(_SAMPLE_EVERY):
            started = self._last_tick
            if time.monotonic() - started > LIMIT:
                frame = sys._current_frames().get(loop_thread)
                if frame is not None:
                    self.stalls[_where(frame)] += 1
                    if not is_idle(frame):
                        with self._busy_lock:
                            self._busy.add(started)

    async def watch(self, coro: Awaitable[Any]) -> Any:
        """Await ``coro`` with the ticker (and the sampler) running; both stop when it ends."""
        stop = threading.Event()
        sampler = threading.Thread(
            target=self._sample, args=(threading.get_ident(), stop), name="loop-lag-sampler"
        )
        ticker = asyncio.ensure_future(self._tick())
        sampler.start()
        await self._ticked.wait()  # the first tick starts before the test does
        try:
            return await coro
        finally:
            # and one more ends after it: a stall in the test's last step counts too
            self._ticked.clear()
            if not ticker.done():
                await self._ticked.wait()
            stop.set()
            ticker.cancel()
            try:
                await ticker
            except asyncio.CancelledError:
                pass
            sampler.join()

    def report(self, nodeid: str) -> None:
        """Append this test's figures to ``$LITEGATE_LOOP_LAG_LOG`` (calibration runs)."""
        path = os.environ.get("LITEGATE_LOOP_LAG_LOG")
        if not path or not self.lags:
            return
        where = "; ".join(f"{n}x {w}" for w, n in self.stalls.most_common(3))
        with open(path, "a") as f:
            f.write(
                f"{nodeid}\t{self.worst_seen * 1000:.3f}\t{self.worst * 1000:.3f}\t"
                f"{max(self.raw) * 1000:.3f}\t"
                f"{len(self.lags)}\t{statistics.median(self.lags) * 1000:.3f}\t{where}\n"
            )

    def failure(self) -> str | None:
        """Why the test fails, or None when the loop was never held longer than LIMIT (a tick
        in which the loop thread was never seen running code may be late up to UNSEEN_LIMIT)."""
        if self.worst_seen <= LIMIT and self.worst <= UNSEEN_LIMIT:
            return None
        over = sum(lag > LIMIT for lag in self.lags)
        seen = sum(lag > LIMIT and s for lag, s in zip(self.lags, self.seen, strict=True))
        worst = self.worst_seen if self.worst_seen > LIMIT else self.worst
        where = "\n".join(f"  {n:4d} x {w}" for w, n in self.stalls.most_common(5))
        return (
            f"the event loop was held for {worst * 1000:.1f} ms (limit: inline budget "
            f"{_HARD_BUDGET * 1000:g} ms + margin {MARGIN * 1000:g} ms; "
            f"{UNSEEN_LIMIT * 1000:g} ms where the loop thread was never seen running code); "
            f"{over} of {len(self.lags)} ticks were late beyond the limit, in {seen} of them "
            f"the loop thread was seen running code. Where the stalled loop thread "
            f"was (samples every {_SAMPLE_EVERY * 1000:g} ms, innermost frame first):\n"
            f"{where or '  (no sample)'}\n"
            "If the test itself blocks the loop on purpose, mark it "
            '@pytest.mark.blocks_loop("reason").'
        )


def is_idle(frame: FrameType) -> bool:
    """Is the loop thread, stopped at ``frame`` (its innermost), waiting rather than running
    a callback? (See :data:`_IDLE`; the ticker's own frames count as waiting too.)"""
    code = frame.f_code
    name = os.path.basename(code.co_filename)
    return name == "loop_lag.py" or (name, code.co_name) in _IDLE


def _where(frame: FrameType | None, depth: int = 6) -> str:
    """The innermost ``depth`` frames of a stack, as ``file:line function`` joined by ``<``
    (a run of import machinery frames counts as one: ``(import)``)."""
    parts: list[str] = []
    while frame is not None and len(parts) < depth:
        code = frame.f_code
        if code.co_filename.startswith("<frozen importlib"):
            if not parts or parts[-1] != "(import)":
                parts.append("(import)")
        else:
            name = "/".join(code.co_filename.split(os.sep)[-2:])
            parts.append(f"{name}:{frame.f_lineno} {code.co_name}")
        frame = frame.f_back
    return " < ".join(parts)


class _RunQueueWait:
    """Seconds this process's threads have spent runnable but not running (waiting for a CPU).

    That time is the machine's load, not the loop being held, so a late tick is charged only
    for the rest. The loop thread's own wait counts, and so does every other thread's: a
    thread that holds the GIL while it waits for a CPU keeps the loop thread waiting for the
    GIL (asleep, so not in the loop thread's own figure; measured: ticks 30-150 ms late with
    the loop thread sampled in ``select`` or in this ticker, at a load average of 5); a thread
    being started (``asyncio.to_thread``'s first call starts one and waits for it to run:
    90-120 ms under that load) counts from its start. On a quiet machine the discount is ~0, so
    a loop really held is measured in full.
    Linux ``/proc/self/task/*/schedstat`` (second field, ns); elsewhere 0.
    """

    def __init__(self) -> None:
        self._fds: dict[str, int] = {}  # thread id -> its schedstat, open
        self._last: dict[str, int] = {}  # thread id -> its wait at the previous call (ns)
        self._scan(new_from_start=False)

    def _scan(self, new_from_start: bool) -> None:
        """Open the schedstat of threads not seen yet; a thread found after the first scan
        is new, so its whole wait is recent (``new_from_start``: it counts in full)."""
        try:
            tids = os.listdir("/proc/self/task")
        except OSError:
            return
        for tid in tids:
            if tid not in self._fds:
                try:
                    self._fds[tid] = os.open(f"/proc/self/task/{tid}/schedstat", os.O_RDONLY)
                except OSError:
                    continue
                if new_from_start:
                    self._last[tid] = 0

    def __call__(self) -> float:
        """Seconds of CPU wait the process's threads added since the previous call."""
        self._scan(new_from_start=True)
        added = 0
        for tid, fd in list(self._fds.items()):
            try:
                now = int(os.pread(fd, 64, 0).split()[1])
            except (OSError, IndexError, ValueError):  # the thread has ended
                os.close(fd)
                del self._fds[tid]
                self._last.pop(tid, None)
                continue
            before = self._last.get(tid)
            self._last[tid] = now
            if before is not None:
                added += now - before
        return added / 1e9

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def wrap(
    test: Callable[..., Awaitable[Any]], nodeid: str, *, opted_out: bool
) -> Callable[..., Awaitable[Any]]:
    """An ``async def`` that runs ``test`` under :meth:`LoopLag.watch`, then fails it (as the
    test's own failure, not a teardown error) when the loop was held too long. Not enforced
    when the test opted out, or on a debug-mode loop (its own bookkeeping stalls the loop)."""

    async def watched(**kwargs: Any) -> Any:
        lag = LoopLag()
        result = await lag.watch(test(**kwargs))
        lag.report(nodeid)
        enforce = not opted_out and not asyncio.get_running_loop().get_debug()
        if enforce and (why := lag.failure()) is not None:
            raise AssertionError(why)
        return result

    watched.__name__ = getattr(test, "__name__", "watched")
    watched.__qualname__ = getattr(test, "__qualname__", "watched")
    return watched
