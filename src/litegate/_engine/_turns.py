"""Turns of the inline readers of an event loop (loop thread only): a task whose slice of
inline reading is spent parks here, and the loop wakes one parked reader at a time. Used by
the asyncio facade before an inline read, and by the engine before it retries a read inline.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import Protocol, TypeVar

__all__ = ("of_this_loop", "wait_turn")

# Inline reads run on the loop without awaiting anything, so a task reading in a loop would keep
# the loop to itself: after each *slice* of inline reading it gives way. Giving way by a plain
# yield (asyncio.sleep(0)) leaves the task in the loop's ready queue, so with N tasks reading
# every loop iteration ran N slices before timers and I/O had their turn: the loop's lag was
# ~2.5 iterations (a timer's callback, then the task it wakes, each wait one), so 64 reading
# tasks made every other callback wait 20-60 ms even with 100 us slices (issue 11; measured
# with the loop's iterations timed). So a task whose slice is spent *parks* in the loop's
# queue of readers (_Turns, FIFO) and wakes the first one: one reader at a time reads inline,
# an iteration holds one slice however many tasks read, and a parked task costs nothing.
# The slice starts when a parked reader is woken; a task about to read after it is spent parks
# first, so a burst of tasks made ready at once reads one slice, then queues (parking after
# the read, each read once in the same iteration); an engine's retry after a miss (a reader
# opened for the loop, or a stall) takes a turn too: 64 reads that waited for an open all
# retried in the iteration it ended in (~5 ms of scans).
# Its length: a round of the parked readers takes about _ROUND (a reader's wait for its next
# turn, so the p99 of reads at 64 tasks), within [_SLICE_MIN, _SLICE_MAX]: long enough that a
# park (~20k instructions, ~8 us: callgrind) costs little, short enough that a timer is late
# by at most a few slices. benchmarks/async_reads.py --src measures settings against each
# other. A round of 32 ms (0.5 ms slices up to 64 readers) gave point reads their least CPU
# but made every task wait a whole round every few reads: p99 35 ms for point reads and 44 ms
# for 100-row scans at 64 tasks, 3.7x and 2.1x aiosqlite's (each of whose calls waits for the
# 63 others, FIFO). With 8 ms (0.125 ms slices at 64 readers), in one interleaved run: point
# reads p99 10.6 ms (1.1x aiosqlite's), scans 17.5 ms (0.83x), the loop's lag p99 0.5-0.9 ms,
# at 3 % fewer point reads and 10 % fewer scans a second (issue 11).
_ROUND = 0.008
_SLICE_MAX = 0.000_5
_SLICE_MIN = 0.000_1


class _Turns:
    """One event loop's readers waiting for a turn to read inline again (loop thread only: one
    per thread, as a thread runs one loop at a time; replaced when it runs another loop).

    ``loop``: a weak reference to its loop (kept in a thread-local, a strong one kept the
    thread's last loop alive after it closed); ``waiting``: the parked readers' futures,
    first come first woken (a cancelled one is skipped); ``woken``: one was woken and has not
    resumed yet; ``turn`` counts the wakes.
    Liveness: while ``waiting`` holds a live future, a woken reader is due to resume or a
    :meth:`fallback` is scheduled -- a resumed reader wakes the next one when it parks again,
    and if it never does (it stopped reading), its fallback a loop iteration later does."""

    __slots__ = ("loop", "turn", "waiting", "woken")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = weakref.ref(loop)
        self.waiting: deque[asyncio.Future[None]] = deque()
        self.woken = False
        self.turn = 0

    def wake_next(self) -> None:
        waiting = self.waiting
        while waiting:
            fut = waiting.popleft()
            if not fut.done():
                fut.set_result(None)
                self.woken = True
                self.turn += 1
                return

    def fallback(self, turn: int) -> None:
        """Loop callback: nobody was woken since ``turn``: wake the next reader."""
        if self.turn == turn and not self.woken:
            self.wake_next()


class _OfALoop(Protocol):
    loop: weakref.ref[asyncio.AbstractEventLoop]  # (weak: see of_this_loop)


L = TypeVar("L", bound=_OfALoop)
_local = threading.local()


def of_this_loop(
    kind: Callable[[asyncio.AbstractEventLoop], L],
    name: str,
    loop: asyncio.AbstractEventLoop | None = None,
) -> L:
    """The running loop's ``kind`` object (kept per thread under ``name``: a thread runs one
    loop at a time; a new one is made when the thread runs another loop). ``loop``: the
    running loop, if the caller has it. The object holds its loop weakly: kept in a
    thread-local until the thread runs another loop -- for good, if it never does -- it would
    keep a closed loop alive (a ``weakref.ref`` never refers to a new loop at a dead loop's
    address, as a bare ``id`` could)."""
    if loop is None:
        loop = asyncio.get_running_loop()
    found: L | None = getattr(_local, name, None)
    if found is None or found.loop() is not loop:
        found = kind(loop)
        setattr(_local, name, found)
    return found


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def wait_turn() -> float:
    """Park until this task's turn to read inline again (after the readers parked before it);
    returns the slice it may read for."""
    loop = asyncio.get_running_loop()
    turns = of_this_loop(_Turns, "turns", loop)
    fut = loop.create_future()
    turns.waiting.append(fut)
    if not turns.woken:
        turns.wake_next()  # (the first parked: perhaps this task, resumed next iteration)
    try:
        if fut.done():  # it woke itself (nobody else parked): awaiting fut would not give way
            # A plain yield would put the task back in the ready queue ahead of the timers that
            # fall due meanwhile: they would wait for its next slice too (a lone task reading
            # or committing on the loop made a 1 ms ticker 1.3 ms late at p50). Resumed from a
            # callback instead, it runs one iteration later, after them.
            later = loop.create_future()
            loop.call_soon(_resolve, later)
            await later
        else:
            await fut
    finally:
        if not fut.cancelled():  # woken (then perhaps cancelled): the next one's turn is due
            turns.woken = False
            if turns.waiting:
                loop.call_soon(turns.fallback, turns.turn)
    fit = _ROUND / (len(turns.waiting) + 1)
    return _SLICE_MAX if fit > _SLICE_MAX else _SLICE_MIN if fit < _SLICE_MIN else fit
