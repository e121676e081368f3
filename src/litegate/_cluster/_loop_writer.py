"""Transactions of asyncio callers on their own event loop: the write lane lent to a loop.

On a cluster each statement of a transaction is a round trip to the leader. Sent through the
engine's writer thread, each one also cost two thread hops and the GIL's hand-over each way,
and that, not the network, capped 64 tasks' transfers at 2.6-3.0x the driver's own (issue 14;
the same transfers sent straight from one task reached 5.2-7.1x). So the writer thread *lends
the lane* to a loop whose tasks want it:

- a loop's :class:`LoopWriter` asks the engine for the lane (a :class:`LaneLoan`, queued in
  turn with threads' writes and transactions); once the writer thread grants it, that thread
  waits, touching nothing, until the loan is given back;
- meanwhile the loop's tasks take *turns*: each transaction sends its statements on the loop's
  own writer session (an :class:`~._loop_readers.AsyncLink`) and awaits them there -- no thread;
- consecutive transactions are *chained* as the writer thread chains them: the first begins
  (``BEGIN IMMEDIATE``), each later one runs in a savepoint, and one COMMIT (one Raft round)
  answers them all -- when no task waits for a turn, the chain is ``chain_age`` old or
  ``max_batch`` long, or anything else waits for the lane;
- between chains the lane goes back to the engine when anything else waits for it (threads,
  single writes, another loop) or the engine is closing; a loop never holds it idle.

A statement function other than litegate's one-statement ones (``run_execute``, ``run_query``,
``fetch``) -- ``executemany``, a script, a cursor, a user's ``run`` -- runs on one of the
engine's threads with a :class:`~._link.Link` whose statements are sent to this loop's session
(:class:`_LoopSession`): the function's thread waits for them; the loop does not wait for it.

A transaction's operations run as tasks, in the order they were sent, each after the one
before: a cancelled caller leaves its statement to finish (a request cut off midway would ruin
the session, and with it the other transactions of the chain), then its transaction is rolled
back by its end.

Fields: a :class:`LoopWriter`'s and a :class:`LoopLease`'s are used on their loop's thread only,
but: :meth:`LoopLease.end` from another thread hands itself to the loop, or -- the loop not
running -- abandons the writer; :meth:`LoopWriter.abandon` runs on the loop, or where the loop
does not run (closed, or stopped); a :class:`_LoopSession` (a statement function's thread)
reads the session's ``closed`` and ``in_transaction`` while the turn's holder awaits that
function, so the loop does not use the session meanwhile. A :class:`LaneLoan`: ``granted`` and
``returned`` are thread-safe (a future, an event). The engine's counters are written by whoever
holds the lane: the loop while its loan is granted (and not after it gave it back).
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import logging
import sqlite3
import sys
import threading
from collections import deque
from collections.abc import Callable, Coroutine
from time import monotonic
from typing import Any, Protocol, cast

from .._engine import Counters
from .._errors import Closed, Misuse, OutcomeUnknown, RolledBack, WriteTimeout
from .._statements import (
    Result,
    close_cursor,
    close_cursors,
    exec_sql,
    fetch,
    fetch_page,
    open_cursor,
    rollback_to_savepoint,
    run_described,
    run_execute,
    run_executemany,
    run_query,
    run_script,
)
from .._types import Args, Bound, Params
from ._link import AsyncSession, Link, LinkLost, OpenAsyncSession, Outcome, replayed
from ._loop_readers import AsyncLink
from ._url import ClusterAddress

logger = logging.getLogger("litegate")

__all__ = (
    "MEMBER",
    "LaneLoan",
    "LoopLease",
    "LoopWriter",
    "STATEMENT_FUNCTIONS",
    "commit_error",
    "lost_transaction",
    "unknown",
    "wrote_outside",
)

_NO_BOUND = 3600.0
"""The wait where none was asked for (a chain's COMMIT awaited by a cancelled caller): a stuck
cluster is reported within an hour, never waited for forever."""

_GRANT_SETTLES = 5.0
"""Seconds to wait for a grant the writer thread is setting (it sets it at once)."""

MEMBER = "litegate_member"
"""The savepoint each chained transaction after the first runs in."""

STATEMENT_FUNCTIONS = frozenset(
    {run_execute, run_executemany, run_query, fetch, run_described, exec_sql, run_script,
     open_cursor, fetch_page, close_cursor, close_cursors, rollback_to_savepoint}
)  # fmt: skip
"""litegate's own statement functions: a failure in them raises (nothing is swallowed)."""

_ONE_STATEMENT = frozenset({run_execute, run_query, fetch, exec_sql})
"""Functions that send one statement, ``(sql[, params, ...])``: run on the loop itself."""
_IN_MEMORY = frozenset({fetch_page, close_cursor, close_cursors})
"""Functions on a cursor whose rows are here already (a cluster sends them all at once): run
on the loop, with no connection."""


def lost_transaction(why: str) -> RolledBack:
    return RolledBack(
        f"the transaction did not commit: the connection to the leader was lost ({why}); "
        "nothing of it took effect"
    )


def commit_error(exc: Exception) -> BaseException:
    """What a failed BEGIN or COMMIT of the writer's means to its callers: ``OutcomeUnknown``
    when the COMMIT found no transaction (SQLite had rolled it back, and something may have
    written in autocommit since: no check missed it by design, but say so rather than
    "rolled back"); else the error itself."""
    if "no transaction is active" in str(exc):
        unknown = OutcomeUnknown(f"the COMMIT found no transaction open ({exc}); what ran may or "
                                 "may not have been applied")  # fmt: skip
        unknown.__cause__ = exc
        return unknown
    return exc


def wrote_outside() -> OutcomeUnknown:
    return OutcomeUnknown(
        "the write's outcome is unknown: SQLite rolled back its transaction while your function "
        "ran, and the function went on (it caught the error) and may have written outside it"
    )


def unknown(lost: LinkLost) -> OutcomeUnknown:
    return OutcomeUnknown(
        "the COMMIT's outcome is unknown: the connection to the leader was lost while it was "
        f"under way ({lost}); the write may or may not have been applied -- check before "
        "repeating it"
    )


def _chain_rolled_back() -> RolledBack:
    return RolledBack(
        "the transaction did not commit: SQLite rolled back the transaction it shared with a "
        "later one (whose statement failed); nothing of it took effect"
    )


def _consume(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # (retrieved: an operation nobody awaits is never logged)


def _on(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether the calling thread runs ``loop`` now."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


class Lane(Protocol):
    """What a :class:`LoopWriter` needs of its engine (the cluster engine's public side)."""

    @property
    def counters(self) -> Counters: ...

    def queue_loan(self, loan: LaneLoan, wait: bool) -> bool:
        """Queue ``loan`` for the lane; False when the queue is full and not ``wait``.
        :raises Closed:"""

    def lane_wanted(self) -> bool:
        """Whether anything else waits for the lane, or the engine is closing."""

    def beside(self, fn: Callable[..., Any], *args: Any) -> cf.Future[Any]:
        """``fn(*args)`` on one of the engine's threads."""


class LaneLoan:
    """The lane lent to a loop: queued in the engine as a transaction is; ``granted`` resolves
    when the writer thread lends it, and the loop sets ``returned`` to give it back."""

    __slots__ = ("granted", "returned", "writer")

    def __init__(self, writer: LoopWriter) -> None:
        self.granted: cf.Future[None] = cf.Future()
        self.returned = threading.Event()
        self.writer = writer

    def abandoned(self, closing: bool) -> bool:
        """(The writer thread's, waiting for the loan back:) its loop closed without giving
        it back -- or, the engine ``closing``, its loop no longer runs: its session is dropped
        (the cluster rolls back what it left open) and the lane taken back."""
        loop = self.writer.loop
        if not (loop.is_closed() or (closing and not loop.is_running())):
            return False
        self.writer.abandon()
        return True


class Member:
    """A transaction's part in the loop's chain (its lease's)."""

    __slots__ = ("lost", "open", "saved", "snapshot", "unknown")

    def __init__(self) -> None:
        self.open = False  # begun, not yet committed or rolled back
        self.saved = False  # it joined a chain: its part is in the savepoint MEMBER
        self.snapshot = False  # begun as a snapshot (BEGIN DEFERRED), never chained
        self.lost = False  # its transaction is gone (the session died, or SQLite rolled it back)
        self.unknown = False  # ... and a function of its may have written outside it since


class _LoopSession:
    """The loop's writer session as a thread's :class:`~._link.Session`: each statement is
    sent to the loop and waited for (for a statement function on one of the engine's
    threads)."""

    def __init__(self, session: AsyncSession, loop: asyncio.AbstractEventLoop, wait: float):
        self._session = session
        self._loop = loop
        self._wait = wait

    @property
    def closed(self) -> bool:
        return self._session.closed

    @property
    def in_transaction(self) -> bool:
        return self._session.in_transaction

    def connect(self) -> None:
        """(Open already: the loop's.)"""

    def run(self, sql: str, params: Any, many: bool) -> Outcome:
        if _on(self._loop):  # (a bug: it would wait for its own loop forever)
            raise RuntimeError("a statement function of an async transaction ran on its loop")
        done = asyncio.run_coroutine_threadsafe(self._session.run(sql, params, many), self._loop)
        wait = self._wait * max(len(params), 1) if many else self._wait  # (a round trip a row)
        try:
            return done.result(wait)
        except cf.TimeoutError:
            done.cancel()
            self._session.force_close()  # (its request half-answered: the session is done)
            raise

    def close(self) -> None:
        """(The session is the loop writer's: a borrowed view does not close it.)"""

    def force_close(self) -> None:
        self._session.force_close()


class LoopWriter:
    """One event loop's turn at the cluster's write lane (see the module docstring)."""

    def __init__(
        self,
        lane: Lane,
        open_session: OpenAsyncSession,
        address: ClusterAddress,
        settings: dict[str, Any],
        *,
        pragmas: dict[str, Any],
        chain_age: float,
        max_batch: int,
        hold_warn: float = 0.0,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self._lane = lane
        self._address = address
        self._settings = settings  # timeout, busy_timeout, row_factory
        self._link = AsyncLink(open_session, address, settings)
        self._pragmas = pragmas
        self._chain_age = chain_age
        self._max_batch = max_batch
        self._next_seed = 0
        self._loan: LaneLoan | None = None  # the lane, lent to this loop
        self._asking = False  # a loan is queued
        self._turns: deque[asyncio.Future[None]] = deque()  # tasks waiting for their turn
        self._busy = False  # a task has the turn (or the chain's COMMIT is under way)
        self._chain: list[asyncio.Future[None]] | None = None  # its members' COMMITs, waiting
        self._chain_t0 = 0.0
        self._saved = False  # a SAVEPOINT is open, empty, for the chain's next transaction
        self._closed = False
        self._tasks: set[asyncio.Task[Any]] = set()  # (kept: the loop holds tasks weakly)
        self._hold_warn = hold_warn
        self._turn_serial = 0  # turns given so far (the long-turn check's)
        self._turn_timer: asyncio.TimerHandle | None = None

    @property
    def closed(self) -> bool:
        """Abandoned or closed: it never asks for the lane again (the engine makes its loop a
        new one). Read by the engine from the loop's own thread, where it is written, or
        after: a stale False only fails one more call with ``Closed``."""
        return self._closed

    # ---- turns -------------------------------------------------------------------------------

    async def turn(self, deadline: float, what: str) -> None:
        """Wait for this loop's turn at the lane (asked of the engine when not lent yet).
        :raises WriteTimeout: not given by ``deadline``; :raises Closed:"""
        if self._closed:
            raise self._closed_error()
        # (No shortcut when the loan is held and the turn free: a held loan always has its turn
        # taken -- turn_done gives the lane back when nobody waits.)
        waiter: asyncio.Future[None] = self.loop.create_future()
        self._turns.append(waiter)
        self._want_lane()
        timer = self.loop.call_later(max(deadline - monotonic(), 0.0), self._expire, waiter, what)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.turn_done()  # (given as it was cancelled: passed on)
            elif waiter in self._turns:
                self._turns.remove(waiter)
            raise
        finally:
            timer.cancel()

    def _expire(self, waiter: asyncio.Future[None], what: str) -> None:
        if not waiter.done():
            self._turns.remove(waiter)
            waiter.set_exception(WriteTimeout(f"{what} did not get the write lane in time"))

    def turn_done(self) -> None:
        """The turn's holder is done: the next waiting task's turn (the chain goes on), or
        the chain's COMMIT, or the lane back to the engine."""
        self._busy = False
        timer, self._turn_timer = self._turn_timer, None
        if timer is not None:
            timer.cancel()
        if self._loan is None:  # (given back: abandoned, or closed)
            if self._chain is not None:
                self._chain_lost(LinkLost("the write lane was taken back"))
            if self._turns:
                self._want_lane()
            return
        if self._chain is not None and (not self._waiting() or self._chain_done()):
            self._busy = True
            self._spawn(self._commit_chain())
            return
        if self._chain is None and self._lane.lane_wanted():
            self._give_back()
            if self._turns:
                self._want_lane()
            return
        while self._turns:
            waiter = self._turns.popleft()
            if not waiter.done():
                self._took_turn()
                waiter.set_result(None)
                return
        self._give_back()  # (nobody waits, no chain open)

    def _took_turn(self) -> None:
        self._busy = True
        self._turn_serial += 1
        if self._hold_warn > 0:
            self._turn_timer = self.loop.call_later(
                self._hold_warn, self._long_turn, self._turn_serial, monotonic()
            )

    def _long_turn(self, serial: int, since: float) -> None:
        if self._busy and serial == self._turn_serial and self._loan is not None:
            self._lane.counters.long_holds += 1
            logger.warning(
                "litegate: a transaction on %s has held the write lane for %.1f s",
                self._address,
                monotonic() - since,
            )

    def _waiting(self) -> bool:
        return any(not w.done() for w in self._turns)

    def _chain_done(self) -> bool:
        """Whether the open chain must commit before another transaction joins it."""
        chain = self._chain
        return chain is not None and (
            len(chain) + 1 >= self._max_batch
            or monotonic() - self._chain_t0 >= self._chain_age
            or self._lane.lane_wanted()
        )

    async def _commit_chain(self) -> None:
        try:
            await self._end_chain()
        finally:
            self.turn_done()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _want_lane(self) -> None:
        if self._loan is None and not self._asking and not self._closed:
            self._asking = True
            self._spawn(self._ask())

    async def _ask(self) -> None:
        loan = LaneLoan(self)
        try:
            if not self._lane.queue_loan(loan, False):
                await asyncio.to_thread(self._lane.queue_loan, loan, True)
            await asyncio.wrap_future(loan.granted)
        except BaseException as exc:
            self._asking = False
            if not loan.granted.cancel() and loan.granted.exception(_GRANT_SETTLES) is None:
                loan.returned.set()  # (granted as this failed: given back)
            self._fail_turns(exc if isinstance(exc, Exception) else self._closed_error())
            if not isinstance(exc, Exception):
                raise
            return
        self._asking = False
        self._loan = loan
        if self._closed:
            self._give_back()
            self._fail_turns(self._closed_error())
            return
        self._busy = True  # (as if a turn just ended: the first waiting task's)
        self.turn_done()

    def _give_back(self) -> None:
        loan, self._loan = self._loan, None
        if loan is not None:
            loan.returned.set()

    def _fail_turns(self, error: BaseException) -> None:
        turns, self._turns = self._turns, deque()
        for waiter in turns:
            if not waiter.done():
                waiter.set_exception(error)

    def _closed_error(self) -> Closed:
        return Closed(f"the database {self._address} is closed")

    # ---- a member's steps (the turn holder's) ------------------------------------------------

    async def _open(self, deadline: float) -> None:
        if self._closed or self._loan is None:  # (abandoned: the lane is not this loop's)
            raise self._closed_error()
        if self._link.is_open:
            return
        self._next_seed = await self._link.open(deadline, self._next_seed)
        for key, value in self._pragmas.items():
            await self._link.control(f"PRAGMA {key} = {value}")

    async def begin(self, member: Member, deadline: float) -> None:
        """Its transaction begins: it joins the chain in a savepoint, or begins a chain.
        Nothing of it has run yet, so a session lost here is reopened and the BEGIN tried
        again (the chain it would have joined is lost: its waiting transactions are told)."""
        if self._closed or self._loan is None:
            raise self._closed_error()
        if self._chain_done():
            await self._end_chain()
        if self._chain is not None:
            if self._saved:  # (opened by the transaction before it: see prepare_next)
                self._saved = False
                member.saved = member.open = True
                return
            try:
                await self._link.control(f"SAVEPOINT {MEMBER}")
                member.saved = member.open = True
                return
            except LinkLost as lost:
                self._chain_lost(lost)
        while True:
            await self._open(deadline)  # (Unavailable when no leader answers in time)
            try:
                await self._link.control("BEGIN IMMEDIATE")
                break
            except LinkLost:
                continue
        self._chain = []
        self._saved = False
        self._chain_t0 = monotonic()
        member.saved = False
        member.open = True

    async def begin_snapshot(self, member: Member, deadline: float) -> None:
        """A snapshot on the lane (never chained: the open chain commits first)."""
        await self._end_chain()
        await self._open(deadline)
        await self._link.control("BEGIN DEFERRED")
        await self._link.control("SELECT 1 FROM sqlite_master LIMIT 1")  # (pins it now)
        member.open = member.snapshot = True

    async def statement(self, member: Member, sql: str, params: Any) -> Outcome:
        """One of the member's statements, on the loop."""
        if member.lost:
            raise lost_transaction("an earlier statement lost it")
        try:
            return await self._link.run(sql, params)
        except LinkLost as lost:
            self._lose(member, lost)
            raise lost_transaction(str(lost)) from lost
        except asyncio.CancelledError:
            self._cut_off(member)
            raise
        except Exception:
            await self._check_alive(member, wrote=False)
            raise

    async def call(self, member: Member, fn: Callable[..., Any], args: Args) -> Any:
        """``fn(link, *args)`` on one of the engine's threads, its statements sent to this
        loop's session (see the module docstring)."""
        if member.lost:
            raise lost_transaction("an earlier statement lost it")
        try:
            session = self._link.session
        except LinkLost as lost:
            self._lose(member, lost)
            raise lost_transaction(str(lost)) from lost
        view = _LoopSession(session, self.loop, float(self._settings["timeout"]) + 1.0)
        link = Link(
            lambda *_a, **_k: view,
            self._address,
            rpc_timeout=float(self._settings["timeout"]),
            busy_timeout=float(self._settings["busy_timeout"]),
            row_factory=self._settings["row_factory"],
        )
        link.open(monotonic() + 1.0)  # (the loop's session, open already: no round trip)
        try:
            result = await asyncio.wrap_future(self._lane.beside(fn, link, *args))
        except LinkLost as lost:
            self._link.drop()
            self._lose(member, lost)
            raise lost_transaction(str(lost)) from lost
        except asyncio.CancelledError:
            self._cut_off(member)
            raise
        except BaseException:
            await self._check_alive(member, wrote=False)
            raise
        if fn not in STATEMENT_FUNCTIONS:  # (it may have swallowed a rollback)
            await self._check_alive(member, wrote=True)
        return result

    def _lose(self, member: Member, lost: LinkLost) -> None:
        self._chain_lost(lost)
        member.lost = True
        member.open = False

    def _cut_off(self, member: Member) -> None:
        """Its statement was cancelled midway (the loop is shutting down): the session goes,
        and the chain with it."""
        self._link.drop()
        self._lose(member, LinkLost("a statement was cancelled midway"))

    async def _check_alive(self, member: Member, *, wrote: bool) -> None:
        """After a statement of ``member`` failed (``wrote``: after a function of its that may
        have caught such a failure and gone on writing): is the chain's transaction still open
        on the server? (The writer thread's ``_check_alive`` has the why.) ``BEGIN`` fails
        inside a transaction; if it succeeds, the chain is gone: every transaction waiting in
        it is rolled back (told so), and this one is lost."""
        if self._chain is None or member.lost or member.snapshot:
            return
        try:
            await self._link.control("BEGIN")
        except sqlite3.OperationalError as exc:
            if "within a transaction" in str(exc):
                return
            # (No answer: the chain cannot be trusted to go on -- fail closed, as after a lost
            # session; the caller's own error is not masked.)
            logger.warning(
                "litegate: BEGIN on %s failed (%r); the chain is dropped", self._address, exc
            )
            self._link.drop()
            self._lose(member, LinkLost(f"BEGIN failed: {exc!r}"))
            member.unknown = wrote
            return
        except LinkLost as lost:
            self._lose(member, lost)
            return
        await self._link.rollback()
        chain, self._chain = self._chain, None
        self._saved = False
        member.lost = True
        member.unknown = wrote
        member.open = False
        for waiting in chain:
            if not waiting.done():
                waiting.set_exception(_chain_rolled_back())

    async def commit(self, member: Member) -> asyncio.Future[None] | None:
        """The member's COMMIT: its part waits in the chain (the future its caller awaits,
        answered by the chain's COMMIT); ``None`` when it committed alone (a snapshot)."""
        chain = self._chain
        if member.snapshot and member.open:
            member.open = False
            try:
                await self._link.control("COMMIT", commit=True)
            except LinkLost as lost:
                raise unknown(lost) if lost.ambiguous else lost_transaction(str(lost)) from lost
            return None
        if member.lost or chain is None or not member.open or self._loan is None:
            member.open = False
            if member.unknown:
                raise OutcomeUnknown(
                    "the transaction did not commit as one: SQLite rolled it back while a "
                    "function of yours ran, which went on and may have written outside it"
                )
            raise lost_transaction("its chain was lost")
        # (its savepoint is not released: the chain's COMMIT releases them all, and a later
        # member's ROLLBACK TO finds its own, the latest of the name -- one round trip less)
        member.open = False
        done: asyncio.Future[None] = self.loop.create_future()
        chain.append(done)
        return done

    async def prepare_next(self) -> None:
        """(The turn's holder, its part just queued in the chain:) when the chain will go on
        with a waiting transaction, open that one's savepoint now -- its begin then sends
        nothing, and the loop turns once less between them. Never raises: a session lost here
        loses the chain (its transactions are told), anything else drops it too."""
        if (
            self._chain is None
            or self._saved
            or self._loan is None
            or self._closed
            or not self._waiting()
            or self._chain_done()
        ):
            return
        try:
            await self._link.control(f"SAVEPOINT {MEMBER}")
        except LinkLost as lost:
            self._chain_lost(lost)
            return
        except Exception as exc:  # (fail closed: the chain cannot be trusted to go on)
            logger.warning("litegate: SAVEPOINT on %s failed (%r); the chain is dropped",
                           self._address, exc)  # fmt: skip
            self._link.drop()
            self._chain_lost(LinkLost(f"SAVEPOINT failed: {exc!r}"))
            return
        if self._chain is not None:
            self._saved = True

    async def roll_back(self, member: Member) -> None:
        """Undo the member's part: its savepoint, or -- the chain's first -- the whole."""
        chain = self._chain
        was_open, member.open = member.open, False
        if not was_open or member.lost:
            return
        if member.snapshot:
            await self._link.rollback()
            return
        if chain is None:
            return
        if not member.saved:  # (the first: nobody joined it yet)
            self._chain = None
            self._saved = False
            await self._link.rollback()
            return
        try:
            await self._link.control(f"ROLLBACK TO {MEMBER}")  # (its savepoint stays, empty)
        except LinkLost as lost:
            self._lose(member, lost)
        except Exception as exc:  # (its part may still be in the chain: the chain goes)
            logger.warning("litegate: ROLLBACK TO on %s failed (%r); the chain is dropped",
                           self._address, exc)  # fmt: skip
            self._link.drop()
            self._lose(member, LinkLost(f"ROLLBACK TO failed: {exc!r}"))

    async def _end_chain(self) -> None:
        """COMMIT the chain and answer every transaction waiting in it."""
        chain, self._chain = self._chain, None
        self._saved = False
        if chain is None:
            return
        error: BaseException | None = None
        try:
            await self._link.control("COMMIT", commit=True)
        except LinkLost as lost:
            error = unknown(lost) if lost.ambiguous else lost_transaction(str(lost))
        except asyncio.CancelledError:
            self._link.drop()
            error = unknown(LinkLost("the COMMIT was cancelled midway"))
            raise
        except Exception as exc:
            error = commit_error(exc)
            if not isinstance(error, OutcomeUnknown):
                error = RolledBack(f"the transaction did not commit: its COMMIT failed: {exc!r}")
                error.__cause__ = exc
            await self._link.rollback()
        finally:
            self._answer(chain, error)

    def _answer(self, chain: list[asyncio.Future[None]], error: BaseException | None) -> None:
        c = self._lane.counters
        if chain and self._loan is not None:  # (the counters are the lane holder's)
            c.batches += 1
            c.batch_sizes.append(len(chain))
            c.max_batch = max(c.max_batch, len(chain))
            if error is None:
                c.transactions += len(chain)
        for done in chain:
            if done.done():
                continue
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)

    def _chain_lost(self, lost: LinkLost) -> None:
        """The session died: the open chain with it (nothing of it committed)."""
        chain, self._chain = self._chain, None
        self._saved = False
        for done in chain or ():
            if not done.done():
                done.set_exception(lost_transaction(str(lost)))

    # ---- lifecycle ---------------------------------------------------------------------------

    async def close(self) -> None:
        """On its loop, once the engine's writer has stopped: the session closed with a word
        to the server."""
        self._closed = True
        if self._busy or self._chain is not None or self._loan is not None or self._asking:
            self.abandon()
            return
        self._fail_turns(self._closed_error())
        await self._link.close()

    def abandon(self) -> None:
        """Drop the session's socket (the cluster rolls back what was open) and answer every
        waiting task: on its loop, or with the loop closed."""
        self._closed = True
        self._link.drop()
        chain, self._chain = self._chain, None
        self._saved = False
        turns, self._turns = self._turns, deque()
        timer, self._turn_timer = self._turn_timer, None
        if not self.loop.is_closed():
            if timer is not None:
                timer.cancel()
            for done in chain or ():
                if not done.done():
                    done.set_exception(lost_transaction("the database was closed"))
            for waiter in turns:
                if not waiter.done():
                    waiter.set_exception(self._closed_error())
        self._give_back()


async def _after(
    prev: asyncio.Task[None] | None,
    fn: Callable[..., Coroutine[Any, Any, Any]],
    args: Args,
    outer: asyncio.Future[Any],
) -> None:
    """``fn(*args)`` once ``prev`` is over, its outcome put in ``outer`` (what its caller
    awaits: a cancelled caller cancels ``outer``, not this)."""
    try:
        if prev is not None and not prev.done():
            await asyncio.wait((prev,))
        result = await fn(*args)
    except asyncio.CancelledError:
        outer.cancel()
        raise
    except BaseException as exc:
        # (Its caller's, whatever it is: a SystemExit a function raised on an engine thread
        # reaches that caller, as on the writer thread -- never the loop running this task.)
        if not outer.done():
            outer.set_exception(exc)
        return
    if not outer.done():
        outer.set_result(result)


if sys.version_info >= (3, 12):

    def _start(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]) -> Any:
        # (eager: it runs now, up to its first wait -- no turn of the loop before it is sent)
        return asyncio.Task(coro, loop=loop, eager_start=True)

else:  # pragma: no cover  (3.11: no eager start; the cluster's client needs 3.13 anyway)

    def _start(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]) -> Any:
        return loop.create_task(coro)


_PENDING: Any = object()


class LoopLease:
    """The write lane held by an asyncio task through its loop's :class:`LoopWriter`: its
    statements are sent on the loop's writer session, in the order sent. Fields: its task's
    (and its loop's: :meth:`end` from elsewhere hands itself to the loop)."""

    def __init__(self, writer: LoopWriter, deadline: float) -> None:
        self._writer = writer
        self._loop = writer.loop
        self._deadline = deadline
        self._member = Member()
        self._tail: asyncio.Task[None] | None = None  # the last operation sent
        self._turn = True  # it has the loop's turn at the lane (until its end)
        self._lost = False
        self._ended = False
        self._chained: Any = _PENDING  # its COMMIT's: the chain's future (None: alone, done)
        self.committed = False

    @property
    def lost(self) -> bool:
        return self._lost

    @property
    def ended(self) -> bool:
        return self._ended

    def _queue(
        self, fn: Callable[..., Coroutine[Any, Any, Any]], args: Args
    ) -> asyncio.Future[Any]:
        outer: asyncio.Future[Any] = self._loop.create_future()
        self._tail = _start(self._loop, _after(self._tail, fn, args, outer))
        return outer

    def _send(self, fn: Callable[..., Coroutine[Any, Any, Any]], args: Args) -> asyncio.Future[Any]:
        if self._ended:
            raise Misuse("the transaction is over (its block was left)")
        if self._lost:
            raise RolledBack("the transaction did not commit: the connection was lost")
        return self._queue(fn, args)

    async def _op(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> Any:
        try:
            return await self._send(fn, args)
        except RolledBack:
            self._lost = True
            raise

    async def begin(self, busy_timeout: float | None = None) -> None:
        await self._op(self._writer.begin, self._member, self._deadline)

    async def begin_snapshot(self) -> None:
        await self._op(self._writer.begin_snapshot, self._member, self._deadline)

    async def _one(self, fn: Callable[..., Any], args: Args) -> Any:
        sql = cast(str, args[0])
        out = await self._writer.statement(self._member, sql, args[1] if len(args) > 1 else ())
        return fn(replayed(sql, out), *args)

    async def _here(self, fn: Callable[..., Any], args: Args) -> Any:
        return fn(None, *args)

    def _route(self, fn: Callable[..., Any], args: Args) -> tuple[Any, Args]:
        if fn in _IN_MEMORY:
            return self._here, (fn, args)
        if (
            fn in _ONE_STATEMENT
            and args
            and isinstance(args[0], str)
            and "user_version" not in args[0]  # (kept in a table: Link.execute's)
        ):
            return self._one, (fn, args)
        return self._writer.call, (self._member, fn, args)

    async def execute(self, sql: str, params: Params, limit: Bound) -> Result:
        _no_limit(limit)
        how, args = self._route(run_execute, (sql, params))
        result: Result = await self._op(how, *args)
        return result

    async def query(self, sql: str, params: Params, limit: Bound) -> list[Any]:
        _no_limit(limit)
        how, args = self._route(run_query, (sql, params))
        rows: list[Any] = await self._op(how, *args)
        return rows

    async def run(self, fn: Callable[..., Any], args: Args, sql: str | None, limit: Bound) -> Any:
        _no_limit(limit)
        how, with_args = self._route(fn, args)
        return await self._op(how, *with_args)

    def post(self, fn: Callable[..., Any], args: Args) -> asyncio.Future[Any]:
        how, with_args = self._route(fn, args)
        outer = self._send(how, with_args)
        outer.add_done_callback(_consume)  # (its caller may never await it)
        return outer

    async def _commit(self) -> asyncio.Future[None] | None:
        try:
            self._chained = await self._writer.commit(self._member)
            if self._chained is not None:
                await self._writer.prepare_next()
        finally:
            self._give_turn()
        return cast("asyncio.Future[None] | None", self._chained)

    async def commit(self) -> None:
        """COMMIT (the lane goes on to the next transaction at once; this returns when the
        COMMIT it shares with them is done); a cancellation meanwhile is re-raised once it has
        ended (``committed`` tells whether it took effect)."""
        outer = self._send(self._commit, ())
        task = self._tail
        assert task is not None
        self._ended = True  # (its tenure ends with the COMMIT: nothing more is sent)
        try:
            done = await outer
            if done is not None:
                await asyncio.shield(done)
        except asyncio.CancelledError:
            try:
                await asyncio.wait((task,), timeout=_NO_BOUND)
                chained = self._chained
                if chained is not None and chained is not _PENDING and not chained.done():
                    await asyncio.wait((chained,), timeout=_NO_BOUND)
            finally:
                chained = self._chained
                self.committed = chained is None or (
                    chained is not _PENDING
                    and chained.done()
                    and not chained.cancelled()
                    and chained.exception() is None
                )
            raise
        except RolledBack:
            self._lost = True
            raise
        self.committed = True

    async def _finish(self) -> None:
        try:
            await self._writer.roll_back(self._member)
        finally:
            self._give_turn()

    def _give_turn(self) -> None:
        if self._turn:
            self._turn = False
            self._writer.turn_done()

    def end(self) -> None:
        """Its end: what it left open is rolled back and the turn passed on. Never blocks;
        from any thread (handed to the loop; nothing when the loop is closed: the engine's
        writer then drops the loop's session)."""
        if _on(self._loop):
            self._finish_soon()
            return
        if not self._loop.is_running():  # (stopped or closed: nothing will run on it again
            self._writer.abandon()  # here; its session goes, the lane back to the engine)
            return
        try:
            self._loop.call_soon_threadsafe(self._finish_soon)
        except RuntimeError:  # (it closed meanwhile)
            self._writer.abandon()

    def _finish_soon(self) -> None:
        if self._ended:
            return
        self._ended = True
        self._queue(self._finish, ()).add_done_callback(_consume)

    async def release(self, cursors: Any = ()) -> None:
        if cursors and not self._ended:
            self.post(close_cursors, (cursors,))
        self.end()


def _no_limit(limit: Bound) -> None:
    if limit is not None:
        raise Misuse(
            "time_limit is not available on a dqlite cluster: its client cannot interrupt a "
            "statement running on the leader"
        )
