"""The cluster engine: litegate's engine interface on a dqlite cluster.

Every dqlite read and write goes to the leader, and every COMMIT is a Raft round (2-3 ms on
loopback, far more between machines), so the engine's one job is to make few of them:

- **one write lane per process**: a writer thread owns the writer :class:`~._link.Link`.
  Single-statement writes queue for it and run as a *group*: ``BEGIN IMMEDIATE``, each job,
  one ``COMMIT`` -- one Raft round for the whole group. A job that fails is answered with its
  error and the group is rolled back and replayed without it (no per-job SAVEPOINT, which
  would cost two more round trips each: a job's function may therefore run more than once;
  what it does to the database happens once).
- **transactions** (a lease, sync or async) queue for the lane like a job; when their turn
  comes the writer thread runs their statements, one at a time in the order sent, until the
  lease ends; consecutive ones are chained (savepoints, one COMMIT). An asyncio caller's
  transaction is not sent through the thread: the lane is *lent* to its loop, whose tasks
  run their transactions there in turn, chained the same way (:mod:`._loop_writer`).
- **reads** run on a small pool of reader links (all on the leader: a read sees every write
  acknowledged before it) on the caller's thread, or, for asyncio callers, on reader sessions
  of the caller's own loop (:mod:`._loop_readers`; other jobs on the engine's reader
  threads -- the sync links' calls block, so never on the event loop).
- **failover**: a link whose wire session died (or whose node stopped leading) is reopened
  against the seeds; what could not have taken effect is retried within the caller's
  ``timeout`` (:class:`~litegate.Unavailable` after it); a COMMIT cut off midway is never
  retried: :class:`~litegate.OutcomeUnknown`.

=====================  ===========================================================
field                  guard
=====================  ===========================================================
``_queue``,            ``_lock`` (``_cond`` is its condition: the writer waits for
``_closing``,          work, submitters for room)
``_holds``
``_idle``,             ``_lock`` (``_cond``: borrowers wait for a reader)
``_opened``
``_writer_link``,      the writer thread; while it serves a lease, the lease holder
``_chain``, ``_rows``  may use the link too (``writer_link``: the writer then waits
                       for that lease's next call, so one uses it at a time)
a reader ``Link``      its borrower, between ``_borrow`` and ``_give_back``
``_counters``          the lane's holder: the writer thread, or a loop it lent the lane
                       to (batches, jobs, transactions, holds); latencies by
                       ``deque.append`` from any caller
``_loop_readers``,     ``_lock`` (the dicts; each pool and writer is its loop's)
``_loop_writers``
``_reads``,            ``_lock``
``_pool_waits``,
``_pool_timeouts``
=====================  ===========================================================
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import logging
import os
import queue
import sqlite3
import threading
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from time import monotonic
from typing import Any, TypeVar, cast

from .._config import DEFAULT_GROUP_WAIT, Options
from .._engine import MISS, Counters
from .._errors import (
    Closed,
    Misuse,
    OutcomeUnknown,
    PoolTimeout,
    RolledBack,
    Unavailable,
    WriteTimeout,
)
from .._statements import (
    Result,
    close_cursors,
    fetch,
    run_execute,
    run_query,
)
from .._stats import Stats
from .._types import Args, Bound, Fn, Params
from ._driver import load_driver
from ._link import Link, LinkLost, OpenAsyncSession, OpenSession, refuse, replayed
from ._loop_readers import LoopReaders
from ._loop_writer import (
    MEMBER,
    STATEMENT_FUNCTIONS,
    LaneLoan,
    LoopLease,
    LoopWriter,
    commit_error,
    lost_transaction,
    unknown,
    wrote_outside,
)
from ._rows import RowsWriter
from ._url import ClusterAddress, parse

__all__ = ("ClusterEngine",)

logger = logging.getLogger("litegate")
T = TypeVar("T")

_NO_BOUND = 3600.0
"""The wait used where a caller asked for none (``timeout=None``): a stuck cluster is
reported within an hour, never waited for forever."""

_CLOSE_WAIT = 5.0
"""``close()``'s bound when none is given: at least this, or the ``timeout`` option (as a
file's, ``Database.close``)."""


def _deadline(timeout: Bound) -> float:
    return monotonic() + (_NO_BOUND if timeout is None else timeout)


class _Call:
    """A job for the writer thread: ``fn(link, *args)``; its outcome goes to ``future``."""

    __slots__ = ("args", "deadline", "fn", "future")

    def __init__(self, fn: Callable[..., Any], args: Args, deadline: float) -> None:
        self.fn = fn
        self.args = args
        self.deadline = deadline
        self.future: cf.Future[Any] = cf.Future()


class _Hold:
    """A lease's request for the lane (``granted`` resolves when its turn comes), then its
    tenure: the writer thread runs the calls put in ``ops`` until ``None`` (the end)."""

    __slots__ = ("__weakref__", "deadline", "granted", "ops")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.granted: cf.Future[None] = cf.Future()
        self.ops: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()


class _Member:
    """A transaction's part in the chain (the writer thread's)."""

    __slots__ = ("lost", "open", "saved", "unknown")

    def __init__(self) -> None:
        self.open = False  # begun, not yet committed or rolled back
        self.saved = False  # it joined a chain: its part is in the savepoint _MEMBER
        self.lost = False  # its transaction is gone (the session died, or SQLite rolled it back)
        self.unknown = False  # ... and a function of its may have written outside it since


class _Chain:
    """Transactions run one after another in one SQLite transaction, each after the first in
    a savepoint, sharing one COMMIT -- one Raft round (the writer thread's)."""

    __slots__ = ("t0", "waiting")

    def __init__(self) -> None:
        self.t0 = monotonic()
        self.waiting: list[_Call] = []  # their COMMIT calls, answered by the chain's


def _begin(link: Link) -> None:
    link.control("BEGIN IMMEDIATE")


def _begin_snapshot(link: Link) -> None:
    link.control("BEGIN DEFERRED")
    link.execute("SELECT 1 FROM sqlite_master LIMIT 1").close()  # (pins the snapshot now)


def _commit(link: Link) -> None:
    link.commit()


def _rollback(link: Link) -> None:
    link.rollback()


def _consume(fut: cf.Future[Any] | asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # (retrieved: an operation nobody awaits is never logged)


class ClusterEngine:
    """The engine interface on a dqlite cluster (see the module docstring)."""

    def __init__(
        self,
        opts: Options,
        sessions: OpenSession | None = None,
        async_sessions: OpenAsyncSession | None = None,
    ) -> None:
        """``sessions``, ``async_sessions``: how to open a session to a node for a thread and
        on an event loop (default: the dqlite driver's; given ``sessions`` only, asyncio reads
        run on reader threads)."""
        opts = opts.validate()
        self.opts = opts
        self.address: ClusterAddress = parse(opts.path)
        if opts.readers == "per-thread" or opts.readers == 0:
            raise ValueError(
                f"readers={opts.readers!r} is not available on a dqlite cluster: its reads "
                "go to a pool of connections to the leader (readers=N, N >= 1)"
            )
        if opts.time_limit is not None:
            raise ValueError(_NO_TIME_LIMIT)
        if opts.detect_types or opts.uri:
            raise ValueError("detect_types and uri do not apply to a dqlite:// database")
        if sessions is None:
            sessions, async_sessions = load_driver()
        self._sessions = sessions
        self._async_sessions = async_sessions
        self._loop_readers: dict[int, LoopReaders] = {}  # id(loop) -> its readers
        self._loop_writers: dict[int, LoopWriter] = {}  # id(loop) -> its turn at the lane
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._queue: deque[_Call | _Hold | LaneLoan] = deque()
        self._holds: dict[int, _Hold] = {}  # id(holder) -> its hold (recover)
        self._closing = False
        self._idle: list[Link] = []
        self._opened = 0
        self._reads = 0
        self._pool_waits = 0
        self._pool_timeouts = 0
        self._counters = Counters()
        self._chain: _Chain | None = None  # the writer thread's: the open group of transactions
        # How long a chain may take in transactions before its COMMIT: a Raft round costs
        # several ms, so the file engine's default (5 ms) becomes 50 ms here; 0 commits each
        # transaction alone.
        self._chain_age = 0.05 if opts.group_wait == DEFAULT_GROUP_WAIT else float(opts.group_wait)
        self._rows = RowsWriter()  # the writer thread's
        self._writer_link = self._link()
        self._writer_link.open(_deadline(opts.timeout))  # (fails fast: no cluster, no engine)
        self._executor = cf.ThreadPoolExecutor(
            max_workers=int(opts.readers) + 4, thread_name_prefix="litegate-dqlite-read"
        )
        self._writer = threading.Thread(
            target=self._run_writer, name="litegate-dqlite-writer", daemon=True
        )
        self._writer.start()

    def _link(self) -> Link:
        return Link(
            self._sessions,
            self.address,
            rpc_timeout=max(self.opts.timeout or 0.0, 5.0),
            busy_timeout=self.opts.busy_timeout,
            row_factory=self.opts.row_factory,
            on_open=self._on_open,
        )

    def _on_open(self, link: Link) -> None:
        for key, value in self.opts.pragmas.items():
            link.control(f"PRAGMA {key} = {value}")
        if self.opts.on_connect is not None:
            self.opts.on_connect(cast(sqlite3.Connection, link))

    @property
    def writer_link(self) -> Link:
        """The writer connection, for the lease holder of the moment (its thread uses it while
        the writer thread waits for the lease's next call)."""
        return self._writer_link

    # ---- lifecycle ---------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closing

    @property
    def open_in_this_process(self) -> bool:
        return not self._closing and os.getpid() == self._pid

    def check(self) -> None:
        if self._closing:
            raise Closed(f"the database {self.address} is closed")

    def start_close(self) -> None:
        with self._lock:
            self._closing = True
            self._cond.notify_all()

    def close(self, timeout: float | None = None) -> None:
        """Let queued writes finish (and open transactions end) within ``timeout`` (default
        max(``timeout`` option, 5 s)), then close every connection; what is still queued then
        fails with :class:`Closed` (a transaction under way ends when its holder ends it).
        Idempotent."""
        if timeout is None:
            timeout = max(self.opts.timeout or 0.0, _CLOSE_WAIT)
        self.start_close()
        try:  # (closed on a loop holding the lane: its tasks cannot run while this waits)
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if here is not None:
            with self._lock:
                writer = self._loop_writers.get(id(here))
            if writer is not None and writer.loop is here:
                writer.abandon()
        self._writer.join(timeout)
        if self._writer.is_alive():  # (a transaction holds the lane: nothing queued runs now)
            with self._lock:
                left = list(self._queue)
                self._queue.clear()
                self._cond.notify_all()
            for item in left:
                _refuse(item, Closed(f"the database {self.address} was closed before it ran"))
            logger.warning(
                "litegate: %s: the writer did not finish in time; %d queued item(s) failed "
                "with Closed",
                self.address,
                len(left),
            )
        with self._lock:
            idle, self._idle = self._idle, []
            self._opened -= len(idle)
            self._cond.notify_all()
        for link in idle:
            link.close()
        with self._lock:
            loop_readers, self._loop_readers = list(self._loop_readers.values()), {}
            loop_writers, self._loop_writers = list(self._loop_writers.values()), {}
        pools: list[LoopReaders | LoopWriter] = [*loop_readers, *loop_writers]
        for pool in pools:  # (another loop's, or one not closed on it)
            try:
                if pool.loop.is_closed():
                    pool.abandon()
                else:
                    pool.loop.call_soon_threadsafe(pool.abandon)
            except RuntimeError:  # (it closed meanwhile)
                pool.abandon()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def close_async(self, timeout: float | None = None) -> None:
        self.start_close()
        loop = asyncio.get_running_loop()
        with self._lock:
            here = self._loop_readers.pop(id(loop), None)
            writer = self._loop_writers.pop(id(loop), None)
        if here is not None and here.loop is loop:
            await here.close()  # (on their loop: closed with a word to the server)
        await asyncio.to_thread(self.close, timeout)  # (this loop's transactions end meanwhile)
        if writer is not None and writer.loop is loop:
            await writer.close()

    # ---- the write lane ----------------------------------------------------------------------

    def _enqueue(self, item: _Call | _Hold | LaneLoan, deadline: float) -> None:
        with self._cond:
            while True:
                if self._closing:
                    raise Closed(f"the database {self.address} is closed")
                if len(self._queue) < self.opts.queue_size:
                    self._queue.append(item)
                    self._cond.notify_all()
                    return
                left = deadline - monotonic()
                if left <= 0:
                    raise WriteTimeout("the write queue stayed full (queue_size)")
                self._cond.wait(left)

    def _run_writer(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing and self._chain is None:
                    self._cond.wait()
                first: _Call | _Hold | LaneLoan | None = (
                    self._queue.popleft() if self._queue else None
                )
                batch: list[_Call] = []
                if isinstance(first, _Call):
                    batch.append(first)
                    while (
                        self._queue
                        and isinstance(self._queue[0], _Call)
                        and len(batch) < self.opts.max_batch
                    ):
                        batch.append(cast(_Call, self._queue.popleft()))
                self._cond.notify_all()  # (room in the queue)
            try:
                if not isinstance(first, _Hold) and self._chain is not None:
                    self._end_chain()  # (no transaction waits to join it: its COMMIT now)
                if first is None:
                    if self._closing and self._chain is None:
                        break
                elif isinstance(first, _Hold):
                    self._serve(first)
                elif isinstance(first, LaneLoan):
                    self._lend(first)
                else:
                    self._group(batch)
            except BaseException as exc:  # pragma: no cover  (a bug: keep serving, say so)
                logger.exception("litegate: the dqlite writer thread failed")
                self._fail_item(first, batch, exc)
        self._writer_link.close()

    def _fail_item(
        self, first: _Call | _Hold | LaneLoan | None, batch: list[_Call], exc: BaseException
    ) -> None:
        """After a bug in the writer thread: nobody waits forever for what it was serving."""
        error = RuntimeError(f"litegate: the dqlite writer failed ({exc!r}); see the log")
        waiting = list(batch)
        if isinstance(first, _Hold):
            _give_up(first)
        elif isinstance(first, LaneLoan) and not first.granted.cancel():
            try:
                first.writer.loop.call_soon_threadsafe(first.writer.abandon)
            except RuntimeError:  # (its loop is closed)
                first.writer.abandon()
        chain, self._chain = self._chain, None
        if chain is not None:
            waiting.extend(chain.waiting)
        for call in waiting:
            if not call.future.done():
                call.future.set_exception(error)
        self._writer_link.drop()  # (whatever was open is rolled back with the session)

    def _group(self, batch: list[_Call]) -> None:
        """Run ``batch`` as one transaction, one COMMIT (see the module docstring)."""
        calls = [c for c in batch if c.future.set_running_or_notify_cancel()]
        link = self._writer_link
        c = self._counters
        t0 = monotonic()
        apart: set[str] = set()  # statements whose rows are written one by one in this group
        while calls:
            results: list[Any] = []
            try:
                link.open(max(x.deadline for x in calls))
                link.control("BEGIN IMMEDIATE")
                failed: tuple[int, BaseException] | None = None
                i = 0
                while i < len(calls):
                    run = self._same_insert(calls, i, apart)
                    if run > 1:  # (a run of one-row INSERTs of one text: written together)
                        sql = calls[i].args[0]
                        try:
                            rows = self._rows.write(
                                link, sql, [x.args[1] for x in calls[i : i + run]]
                            )
                        except LinkLost:
                            raise
                        except Exception:  # (Unproven, or a row failed: one by one, again)
                            apart.add(sql)
                            failed = (-1, RuntimeError())
                            break
                        if rows is not None:
                            results.extend(rows)
                            i += run
                            continue
                    call = calls[i]
                    try:
                        results.append(call.fn(link, *call.args))
                    except LinkLost:
                        raise
                    except BaseException as exc:  # (its caller's error, whatever it is)
                        failed = (i, exc)
                        break
                    if call.fn not in STATEMENT_FUNCTIONS and not _still_open(link):
                        failed = (i, wrote_outside())  # (it caught a rollback and went on)
                        break
                    i += 1
                if failed is not None:  # (answered alone; the others replayed without it)
                    link.rollback()
                    if failed[0] >= 0:
                        calls.pop(failed[0]).future.set_exception(failed[1])
                        c.jobs_failed += 1
                    continue
                link.commit()
            except LinkLost as lost:
                if lost.ambiguous:
                    for call in calls:
                        call.future.set_exception(unknown(lost))
                    c.jobs_failed += len(calls)
                    return
                now = monotonic()
                for call in [x for x in calls if x.deadline <= now]:
                    calls.remove(call)
                    call.future.set_exception(Unavailable(f"the leader was lost: {lost}"))
                    c.jobs_failed += 1
                continue  # (nothing of it took effect: again, on a link reopened)
            except Unavailable as exc:
                for call in calls:
                    call.future.set_exception(exc)
                c.jobs_failed += len(calls)
                return
            except Exception as exc:  # (BEGIN or COMMIT refused: all of them)
                link.rollback()
                error = commit_error(exc)
                for call in calls:
                    call.future.set_exception(error)
                c.jobs_failed += len(calls)
                return
            c.batches += 1
            c.jobs_ok += len(calls)
            c.max_batch = max(c.max_batch, len(calls))
            c.batch_sizes.append(len(calls))
            elapsed = monotonic() - t0
            for call, result in zip(calls, results, strict=True):
                c.write_latency.append(elapsed)
                call.future.set_result(result)
            return

    def _same_insert(self, calls: list[_Call], i: int, apart: set[str]) -> int:
        """How many calls from ``i`` on are one-row INSERTs of the same text that
        :class:`~._rows.RowsWriter` may write together (1: ``calls[i]`` alone)."""
        first = calls[i]
        if first.fn is not run_execute or len(first.args) != 2:
            return 1
        sql, params = first.args
        if sql in apart or not self._rows.joinable(sql, params):
            return 1
        n = 1
        while (
            i + n < len(calls)
            and calls[i + n].fn is run_execute
            and len(calls[i + n].args) == 2
            and calls[i + n].args[0] == sql
            and type(calls[i + n].args[1]) is type(params)
            and len(calls[i + n].args[1]) == len(params)
        ):
            n += 1
        return n

    def _serve(self, hold: _Hold) -> None:
        """A lease's tenure: its calls, in order, until its end; then what it left open is
        rolled back. Its transaction joins the open *chain* (see :class:`_Chain`) when there
        is one, in a savepoint; its COMMIT is the chain's."""
        if not hold.granted.set_running_or_notify_cancel():
            return  # (its waiter gave up)
        link = self._writer_link
        if self._chain is None:
            try:
                link.open(hold.deadline)
            except Exception as exc:  # (Unavailable; on a reopen, a PRAGMA's or on_connect's)
                hold.granted.set_exception(exc)
                return
        hold.granted.set_result(None)
        t0 = monotonic()
        member = _Member()
        warned = False
        while True:
            try:
                op = hold.ops.get(timeout=self.opts.hold_warn or 1.0)
            except queue.Empty:
                if not warned:
                    warned = True
                    self._counters.long_holds += 1
                    logger.warning(
                        "litegate: a transaction on %s has held the write lane for %.1f s",
                        self.address,
                        monotonic() - t0,
                    )
                continue
            if op is None:
                break
            if not op.future.set_running_or_notify_cancel():
                continue
            try:
                if op.fn is _begin:
                    self._member_begins(member)
                    result = None
                elif op.fn is _commit:
                    self._member_commits(member, op)
                    break  # (its tenure is over; answered by the chain's COMMIT, now or later)
                elif op.fn is _rollback:
                    self._member_rolls_back(member)
                    result = None
                elif member.lost:
                    raise lost_transaction("an earlier statement lost it")
                else:
                    try:
                        result = op.fn(link, *op.args)
                    except LinkLost:
                        raise
                    except BaseException:
                        self._check_alive(member, wrote=False)
                        raise
                    if op.fn not in STATEMENT_FUNCTIONS:  # (it may have swallowed a rollback)
                        self._check_alive(member, wrote=True)
            except LinkLost as lost:
                self._chain_lost(lost)
                member.lost = True
                op.future.set_exception(lost_transaction(str(lost)))
            except BaseException as exc:  # (its caller's error)
                op.future.set_exception(exc)
            else:
                op.future.set_result(result)
        if member.open:  # (left without its end: undone, the chain's other parts kept)
            self._member_rolls_back(member)
        if self._chain is None:
            link.rollback()
        self._counters.lane_holds.append(monotonic() - t0)

    def _lend(self, loan: LaneLoan) -> None:
        """The lane lent to a loop (:mod:`._loop_writer`): this thread waits, touching
        nothing, until the loop gives it back -- or its loop is found closed without having
        done so (its session is then dropped: the cluster rolls back what it left open)."""
        if not loan.granted.set_running_or_notify_cancel():
            return  # (its loop gave up asking)
        t0 = monotonic()
        loan.granted.set_result(None)
        while not loan.returned.wait(self.opts.hold_warn or 1.0):
            if loan.abandoned(self._closing):
                logger.warning(
                    "litegate: an event loop closed while it held the write lane of %s; its "
                    "open transactions were rolled back",
                    self.address,
                )
                break
        self._counters.lane_holds.append(monotonic() - t0)

    # ---- the chain: consecutive transactions sharing one COMMIT ----------------------------

    def _member_begins(self, member: _Member) -> None:
        """Its transaction begins: it joins the chain in a savepoint, or begins a chain. Nothing
        of it has run yet, so a session lost here is reopened and the BEGIN tried again (the
        chain it would have joined is lost: its waiting transactions are told so)."""
        link = self._writer_link
        chain = self._chain
        if chain is not None and (
            len(chain.waiting) + 1 >= self.opts.max_batch
            or monotonic() - chain.t0 >= self._chain_age
        ):
            self._end_chain()  # (old or full enough: committed before this one begins)
            chain = None
        if chain is not None:
            try:
                link.control(f"SAVEPOINT {MEMBER}")
                member.saved = member.open = True
                return
            except LinkLost as lost:
                self._chain_lost(lost)
        deadline = monotonic() + (self.opts.timeout or _NO_BOUND)
        while True:
            link.open(deadline)  # (Unavailable when no leader answers in time)
            try:
                link.control("BEGIN IMMEDIATE")
                break
            except LinkLost:
                continue
        self._chain = _Chain()
        member.saved = False
        member.open = True

    def _check_alive(self, member: _Member, *, wrote: bool) -> None:
        """After a statement of ``member`` failed (``wrote``: after a function of its that may
        have caught such a failure and gone on writing): is the chain's transaction still open
        on the server? SQLite rolls a whole transaction back on some errors (``OR ROLLBACK``,
        ``RAISE(ROLLBACK)``, a full disk), and the driver, which tells ``in_transaction`` from
        the SQL sent, does not notice: the next member's SAVEPOINT would begin a new
        transaction and the chain's COMMIT report the lost parts committed. ``BEGIN`` fails
        inside a transaction; if it succeeds, the chain is gone: every transaction waiting in it
        is rolled back (told so), and this one is lost (its COMMIT: unknown if ``wrote``)."""
        if self._chain is None or member.lost or _still_open(self._writer_link):
            return
        chain, self._chain = self._chain, None
        member.lost = True
        member.unknown = wrote
        member.open = False
        for waiting in chain.waiting:
            waiting.future.set_exception(
                RolledBack(
                    "the transaction did not commit: SQLite rolled back the transaction it "
                    "shared with a later one (whose statement failed); nothing of it took effect"
                )
            )

    def _member_commits(self, member: _Member, op: _Call) -> None:
        """``op`` (its COMMIT) waits in the chain while another transaction is queued to join
        it and the chain is young; else the chain commits now."""
        chain = self._chain
        if member.lost or chain is None or not member.open:
            if member.unknown:
                op.future.set_exception(
                    OutcomeUnknown(
                        "the transaction did not commit as one: SQLite rolled it back while a "
                        "function of yours ran, which went on and may have written outside it"
                    )
                )
            else:
                op.future.set_exception(lost_transaction("its chain was lost"))
            member.open = False
            return
        # (its savepoint is not released: the chain's COMMIT releases them all, and a later
        # member's ROLLBACK TO finds its own, the latest of the name -- one round trip less)
        member.open = False
        chain.waiting.append(op)
        with self._lock:
            joiner = bool(self._queue) and isinstance(self._queue[0], _Hold)
        if not (
            joiner
            and len(chain.waiting) < self.opts.max_batch
            and monotonic() - chain.t0 < self._chain_age
        ):
            self._end_chain()

    def _member_rolls_back(self, member: _Member) -> None:
        """Undo the member's part: its savepoint, or -- the chain's first -- the whole."""
        link = self._writer_link
        chain = self._chain
        member.open = False
        if chain is None or member.lost:
            return
        if not member.saved:  # (the first: nobody joined it yet)
            self._chain = None
            link.rollback()
            return
        try:
            link.control(f"ROLLBACK TO {MEMBER}")  # (its savepoint stays, empty: see commits)
        except LinkLost as lost:
            self._chain_lost(lost)
            member.lost = True

    def _end_chain(self) -> None:
        """COMMIT the chain and answer every transaction waiting in it."""
        chain, self._chain = self._chain, None
        if chain is None:
            return
        c = self._counters
        error: BaseException | None = None
        try:
            self._writer_link.commit()
        except LinkLost as lost:
            error = unknown(lost) if lost.ambiguous else lost_transaction(str(lost))
        except Exception as exc:
            self._writer_link.rollback()
            error = commit_error(exc)
            if not isinstance(error, OutcomeUnknown):
                error = RolledBack(f"the transaction did not commit: its COMMIT failed: {exc!r}")
                error.__cause__ = exc
        if chain.waiting:
            c.batches += 1
            c.batch_sizes.append(len(chain.waiting))
            c.max_batch = max(c.max_batch, len(chain.waiting))
            if error is None:
                c.transactions += len(chain.waiting)
        for op in chain.waiting:
            if error is None:
                op.future.set_result(None)
            else:
                op.future.set_exception(error)

    def _chain_lost(self, lost: LinkLost) -> None:
        """The writer's session died: the open chain with it (nothing of it committed)."""
        chain, self._chain = self._chain, None
        if chain is not None:
            for op in chain.waiting:
                op.future.set_exception(lost_transaction(str(lost)))

    # ---- writes ------------------------------------------------------------------------------

    def _submit(self, fn: Callable[..., Any], args: Args, timeout: Bound) -> _Call:
        self.check()
        deadline = _deadline(timeout)
        call = _Call(fn, args, deadline)
        self._enqueue(call, deadline)
        return call

    def write(
        self, fn: Fn[T], args: Args, timeout: Bound, time_limit: Bound, sql: str | None = None
    ) -> T:
        _no_limit(time_limit)
        if sql is not None:
            refuse(sql)  # (before it takes the lane)
        call = self._submit(fn, args, timeout)
        return cast(T, _wait(call.future, call.deadline, "the write"))

    async def write_async(
        self, fn: Fn[T], args: Args, timeout: Bound, time_limit: Bound, sql: str | None = None
    ) -> T:
        _no_limit(time_limit)
        if sql is not None:
            refuse(sql)  # (before it takes the lane)
        self.check()
        deadline = _deadline(timeout)
        call = _Call(fn, args, deadline)
        try:
            try:
                self._enqueue_nowait(call)
            except _Full:
                await asyncio.to_thread(self._enqueue, call, deadline)
            return cast(T, await _wait_async(call.future, deadline, "the write"))
        except asyncio.CancelledError:
            call.future.cancel()  # (still queued: withdrawn, never runs; running: it finishes)
            raise

    def _enqueue_nowait(self, item: _Call | _Hold | LaneLoan) -> None:
        with self._cond:
            if self._closing:
                raise Closed(f"the database {self.address} is closed")
            if len(self._queue) >= self.opts.queue_size:
                raise _Full
            self._queue.append(item)
            self._cond.notify_all()

    def lease(self, timeout: Bound, what: str = "the transaction", holder: object = None) -> Any:
        self.check()
        deadline = _deadline(timeout)
        hold = _Hold(deadline)
        if holder is not None:  # (before any wait: recover() finds it after an interrupt)
            with self._lock:
                self._holds[id(holder)] = hold
            weakref.finalize(holder, self._forget, id(holder), hold)
        try:
            self._enqueue(hold, deadline)
            _wait(hold.granted, deadline, what)
        except BaseException:
            _give_up(hold)
            raise
        return ClusterLease(self, hold)

    def _forget(self, key: int, hold: _Hold) -> None:
        with self._lock:
            if self._holds.get(key) is hold:
                del self._holds[key]
        hold.ops.put(None)  # (a second end is ignored: the tenure is over)

    def recover(self, holder: object) -> None:
        with self._lock:
            hold = self._holds.pop(id(holder), None)
        if hold is not None:
            _give_up(hold)

    async def lease_async(self, timeout: Bound, what: str = "the transaction") -> Any:
        """The lane for an asyncio task: its loop's turn (the lane lent to the loop, see
        :mod:`._loop_writer`) -- or, with no asyncio sessions to open or an ``on_connect``
        hook (which takes a thread's connection), a tenure on the writer thread."""
        self.check()
        deadline = _deadline(timeout)
        if self._async_sessions is not None and self.opts.on_connect is None:
            writer = self._writer_here()
            await writer.turn(deadline, what)
            return LoopLease(writer, deadline)
        hold = _Hold(deadline)
        try:
            try:
                self._enqueue_nowait(hold)
            except _Full:
                await asyncio.to_thread(self._enqueue, hold, deadline)
            await _wait_async(hold.granted, deadline, what)
        except BaseException:
            _give_up(hold)
            raise
        return AsyncClusterLease(self, hold)

    def _writer_here(self) -> LoopWriter:
        """The running loop's turn at the lane (made on its first transaction)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            writer = self._loop_writers.get(id(loop))
            if writer is not None and writer.loop is loop and not writer.closed:
                return writer  # (one abandoned while its loop was stopped is replaced)
            for key, old in list(self._loop_writers.items()):
                if old.loop.is_closed():  # (a loop that ended: its session with it)
                    del self._loop_writers[key]
                    old.abandon()
            assert self._async_sessions is not None
            writer = LoopWriter(
                self,
                self._async_sessions,
                self.address,
                self._session_settings(),
                pragmas=dict(self.opts.pragmas),
                chain_age=self._chain_age,
                max_batch=self.opts.max_batch,
                hold_warn=self.opts.hold_warn,
            )
            self._loop_writers[id(loop)] = writer
            return writer

    # ---- what a loop holding the lane uses (._loop_writer.Lane) --------------------------------

    @property
    def counters(self) -> Counters:
        """The engine's counters (written by the lane's holder)."""
        return self._counters

    def queue_loan(self, loan: LaneLoan, wait: bool) -> bool:
        """Queue ``loan`` for the lane; False when the queue is full and not ``wait``.
        :raises Closed:"""
        if wait:
            self._enqueue(loan, _deadline(self.opts.timeout))
            return True
        try:
            self._enqueue_nowait(loan)
        except _Full:
            return False
        return True

    def lane_wanted(self) -> bool:
        """Whether anything waits for the lane (a loop holding it gives it back), or the
        engine is closing."""
        with self._lock:
            return self._closing or bool(self._queue)

    def beside(self, fn: Callable[..., Any], *args: Any) -> cf.Future[Any]:
        """``fn(*args)`` on one of the engine's threads (a loop's statement function, an
        asyncio caller's read). :raises Closed: the engine closed (its threads are gone)"""
        try:
            return self._executor.submit(fn, *args)
        except RuntimeError:  # (shut down by close(): not the caller's RuntimeError)
            raise Closed(f"the database {self.address} is closed") from None

    # ---- reads -------------------------------------------------------------------------------

    def _borrow(self, deadline: float) -> Link:
        with self._cond:
            waited = False
            while True:
                if self._closing:
                    raise Closed(f"the database {self.address} is closed")
                if self._idle:
                    return self._idle.pop()
                if self._opened < int(self.opts.readers):
                    self._opened += 1
                    break
                left = deadline - monotonic()
                if left <= 0:
                    self._pool_timeouts += 1
                    raise PoolTimeout("no reader connection became free in time")
                if not waited:
                    waited = True
                    self._pool_waits += 1
                self._cond.wait(left)
        link = self._link()
        try:
            link.open(deadline)
        except BaseException:
            with self._cond:
                self._opened -= 1
                self._cond.notify_all()  # (all: the writer and submitters wait on it too)
            raise
        return link

    def _give_back(self, link: Link) -> None:
        link.rollback()
        with self._cond:
            # notify_all: the idle writer thread and submitters waiting for room wait on
            # _cond too; notify() woke one of them, and the borrower slept to its deadline.
            if link.is_open and not self._closing:
                self._idle.append(link)
                self._cond.notify_all()
                return
            self._opened -= 1
            self._cond.notify_all()
        link.close()

    def read(
        self, fn: Fn[T], args: Args, timeout: Bound, time_limit: Bound, sql: str | None = None
    ) -> T:
        """``fn(link, *args)`` on a reader; retried on another link while the leader is being
        found (a read takes effect nowhere)."""
        _no_limit(time_limit)
        self.check()
        deadline = _deadline(timeout)
        t0 = monotonic()
        while True:
            link = self._borrow(deadline)
            try:
                result = fn(cast(sqlite3.Connection, link), *args)
            except LinkLost as lost:
                self._give_back(link)
                if monotonic() >= deadline:
                    raise Unavailable(f"the leader was lost: {lost}") from lost
                continue
            except BaseException:
                self._give_back(link)
                raise
            self._give_back(link)
            with self._lock:
                self._reads += 1
            self._counters.read_latency.append(monotonic() - t0)
            return result

    def query(
        self, sql: str, params: Params, timeout: Bound, time_limit: Bound, first: bool
    ) -> Any:
        return self.read(fetch, (sql, params, first), timeout, time_limit, sql)

    def query_inline(
        self, sql: str, params: Params, fn: Fn[Any] = run_query, extra: Args = ()
    ) -> Any:
        return MISS  # (the driver's calls block: never on the event loop)

    async def read_async(
        self, fn: Fn[T], args: Args, timeout: Bound, time_limit: Bound, sql: str | None = None
    ) -> T:
        """A query (``run_query``, ``fetch``) on a reader session of the caller's loop, awaited
        there (:mod:`._loop_readers`); any other job on a reader thread."""
        self.check()
        if (fn is run_query or fn is fetch) and self._async_sessions is not None:
            _no_limit(time_limit)
            t0 = monotonic()
            query = cast(str, args[0])
            out = await self._readers_here().query(query, args[1], _deadline(timeout))
            result: T = fn(replayed(query, out), *args)
            with self._lock:
                self._reads += 1
            self._counters.read_latency.append(monotonic() - t0)
            return result
        fut = self.beside(self.read, fn, args, timeout, time_limit, sql)
        return cast(T, await asyncio.wrap_future(fut))

    def _readers_here(self) -> LoopReaders:
        """The running loop's reader sessions (made on its first read)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            readers = self._loop_readers.get(id(loop))
            if readers is not None and readers.loop is loop:
                return readers
            for key, old in list(self._loop_readers.items()):
                if old.loop.is_closed():  # (a loop that ended: its sessions with it)
                    del self._loop_readers[key]
                    old.abandon()
            assert self._async_sessions is not None
            readers = LoopReaders(
                self._async_sessions,
                self.address,
                int(self.opts.readers),
                self._session_settings(),
            )
            self._loop_readers[id(loop)] = readers
            return readers

    def _session_settings(self) -> dict[str, Any]:
        return {
            "timeout": max(self.opts.timeout or 0.0, 5.0),
            "busy_timeout": self.opts.busy_timeout,
            "row_factory": self.opts.row_factory,
        }

    def borrow(self, timeout: Bound, what: str = "the snapshot") -> ClusterReadLease:
        self.check()
        deadline = _deadline(timeout)
        return ClusterReadLease(self, self._borrow(deadline), deadline)

    async def borrow_async(self, timeout: Bound, what: str = "the snapshot") -> Any:
        self.check()
        deadline = _deadline(timeout)
        fut = self.beside(self._borrow, deadline)
        try:
            link = await asyncio.wrap_future(fut)
        except asyncio.CancelledError:
            fut.add_done_callback(self._give_back_borrowed)
            raise
        return AsyncClusterReadLease(self, link, deadline)

    def _give_back_borrowed(self, fut: cf.Future[Link]) -> None:
        if not fut.cancelled() and fut.exception() is None:
            self._give_back(fut.result())

    # ---- stats -------------------------------------------------------------------------------

    def stats(self) -> Stats:
        with self._lock:
            depth = len(self._queue)
            opened, idle = self._opened, len(self._idle)
            reads, waits, timeouts = self._reads, self._pool_waits, self._pool_timeouts
        return Stats(
            **self._counters.figures(),  # (no busy, checkpoint or WAL figures: the cluster's)
            queue_depth=depth,
            queue_capacity=self.opts.queue_size,
            reads=reads,
            readers_mode="dqlite",
            pool_size=int(self.opts.readers),
            pool_open=opened,
            pool_in_use=opened - idle,
            pool_waiting=0,
            pool_waits=waits,
            pool_timeouts=timeouts,
            pool_wait_p99_ms=0.0,
        )


class _Full(Exception):
    """The write queue is full (the async path then waits on a thread)."""


_NO_TIME_LIMIT = (
    "time_limit is not available on a dqlite cluster: its client cannot interrupt a "
    "statement running on the leader"
)


def _still_open(link: Link) -> bool:
    """Is the writer's transaction still open on the server (see ``_check_alive``)? ``BEGIN``
    fails inside one; if it succeeds, SQLite had rolled it back: the new one is rolled back."""
    try:
        link.control("BEGIN")
    except sqlite3.OperationalError as exc:
        if "within a transaction" in str(exc):
            return True
        raise
    link.rollback()
    return False


def _refuse(item: _Call | _Hold | LaneLoan, error: Closed) -> None:
    """A queued item the writer will never take (the engine closed): its waiter is told."""
    fut: cf.Future[Any] = item.future if isinstance(item, _Call) else item.granted
    if fut.set_running_or_notify_cancel():  # (else withdrawn already)
        fut.set_exception(error)


def _give_up(hold: _Hold) -> None:
    """Its waiter gave up (a timeout, a cancellation, an interrupt): never granted now, or --
    granted meanwhile -- its tenure ends at once (the writer rolls back and goes on)."""
    if not hold.granted.cancel():
        hold.ops.put(None)


def _on_held(link: Link, deadline: float, fresh: bool, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(link, *args)`` on a held reader (a snapshot's, an iteration's). Its session found
    lost before anything ran on the lease (``fresh``): reopened and ``fn`` run again, as a read
    is (:class:`Unavailable` after ``deadline``); lost later, the snapshot went with it."""
    while True:
        try:
            return fn(link, *args)
        except LinkLost as lost:
            if not fresh:
                raise RolledBack(
                    "the snapshot is lost: the connection to the leader was lost "
                    f"({lost}); nothing of it took effect -- run it again"
                ) from lost
            if monotonic() >= deadline:
                raise Unavailable(f"the leader was lost: {lost}") from lost
            link.open(deadline)


def _no_limit(limit: Bound) -> None:
    if limit is not None:
        raise Misuse(_NO_TIME_LIMIT)


def _wait(fut: cf.Future[Any], deadline: float, what: str) -> Any:
    """``fut``'s outcome: waited for until ``deadline`` while queued (then withdrawn:
    WriteTimeout); once started, until it ends (the driver bounds each of its calls)."""
    try:
        return fut.result(max(deadline - monotonic(), 0.0))
    except cf.TimeoutError:
        if fut.cancel():
            raise WriteTimeout(f"{what} did not get the write lane in time") from None
    return fut.result(_NO_BOUND)


async def _wait_async(fut: cf.Future[Any], deadline: float, what: str) -> Any:
    """:func:`_wait` for an asyncio caller."""
    wrapped = asyncio.wrap_future(fut)
    done, _ = await asyncio.wait({wrapped}, timeout=max(deadline - monotonic(), 0.0))
    if not done and fut.cancel():
        raise WriteTimeout(f"{what} did not get the write lane in time")
    return await wrapped


# ---- leases ------------------------------------------------------------------------------------


class ClusterLease:
    """The write lane held by a thread (a transaction): its statements run on the writer
    thread, in order. Fields: its thread's."""

    def __init__(self, engine: ClusterEngine, hold: _Hold) -> None:
        self._engine = engine
        self._hold = hold
        self._open = False  # a transaction was begun and not ended
        self._ended = False

    def _send(self, fn: Callable[..., Any], args: Args = ()) -> _Call:
        if self._ended:
            raise Misuse("the transaction is over (its block was left)")
        call = _Call(fn, args, 0.0)
        self._hold.ops.put(call)
        return call

    def _op(self, fn: Callable[..., Any], args: Args = ()) -> Any:
        return self._send(fn, args).future.result(_NO_BOUND)

    @property
    def conn(self) -> sqlite3.Connection:
        if self._ended:
            raise Misuse("the transaction is over (its block was left)")
        return cast(sqlite3.Connection, self._engine.writer_link)

    @property
    def in_transaction(self) -> bool:
        return self._open and not self._ended

    def run(self, fn: Fn[T], args: Args, sql: str | None, limit: Bound) -> T:
        _no_limit(limit)
        try:
            return cast(T, self._op(fn, args))
        except RolledBack:
            self._open = False
            raise

    def query(self, sql: str, params: Params, limit: Bound) -> list[Any]:
        return self.run(run_query, (sql, params), sql, limit)

    def begin(self, busy_timeout: float | None = None) -> None:
        self._op(_begin)
        self._open = True

    def begin_snapshot(self) -> None:
        self._op(_begin_snapshot)
        self._open = True

    def run_alone(self, fn: Fn[T], args: Args, sql: str | None, limit: Bound) -> T:
        _no_limit(limit)
        return cast(T, self._op(fn, args))

    def settle(self) -> None:
        """(No group is ever left open on the lane.)"""

    def commit(self) -> None:
        """COMMIT: the lane goes on to the next transaction at once; this returns when the
        COMMIT it shares with them is done."""
        call = self._send(_commit)
        self._open = False
        self._ended = True  # (its tenure ends with the COMMIT: nothing more is sent)
        call.future.result(_NO_BOUND)

    def rollback(self) -> None:
        try:
            self._op(_rollback)
        except Exception:  # (never raised: logged)
            logger.exception("litegate: rollback on %s failed", self._engine.address)
        self._open = False

    def release(self) -> None:
        if not self._ended:
            self._ended = True
            self._open = False
            self._hold.ops.put(None)


class AsyncClusterLease:
    """The write lane held by an asyncio task: its statements run on the writer thread, in
    the order sent; the loop only awaits them. Fields: its task's."""

    def __init__(self, engine: ClusterEngine, hold: _Hold) -> None:
        self._engine = engine
        self._hold = hold
        self._began = False
        self._lost = False
        self._ended = False
        self.committed = False

    @property
    def lost(self) -> bool:
        return self._lost

    @property
    def ended(self) -> bool:
        return self._ended

    def _send(self, fn: Callable[..., Any], args: Args = ()) -> _Call:
        if self._ended:
            raise Misuse("the transaction is over (its block was left)")
        if self._lost:
            raise RolledBack("the transaction did not commit: the connection was lost")
        call = _Call(fn, args, 0.0)
        self._hold.ops.put(call)
        return call

    async def _op(self, fn: Callable[..., Any], args: Args = ()) -> Any:
        call = self._send(fn, args)
        try:
            return await asyncio.wrap_future(call.future)
        except RolledBack:
            self._lost = True
            raise

    async def begin(self, busy_timeout: float | None = None) -> None:
        await self._op(_begin)
        self._began = True

    async def begin_snapshot(self) -> None:
        await self._op(_begin_snapshot)

    async def execute(self, sql: str, params: Params, limit: Bound) -> Result:
        _no_limit(limit)
        result: Result = await self._op(run_execute, (sql, params))
        return result

    async def query(self, sql: str, params: Params, limit: Bound) -> list[Any]:
        _no_limit(limit)
        rows: list[Any] = await self._op(run_query, (sql, params))
        return rows

    async def run(self, fn: Callable[..., Any], args: Args, sql: str | None, limit: Bound) -> Any:
        _no_limit(limit)
        return await self._op(fn, args)

    def post(self, fn: Callable[..., Any], args: Args) -> asyncio.Future[Any]:
        wrapped = asyncio.wrap_future(self._send(fn, args).future)
        wrapped.add_done_callback(_consume)
        return wrapped

    async def commit(self) -> None:
        """COMMIT (the lane goes on to the next transaction at once; this returns when the
        COMMIT it shares with them is done); a cancellation meanwhile is re-raised once it has
        ended (``committed`` tells whether it took effect)."""
        call = self._send(_commit)
        self._ended = True  # (its tenure ends with the COMMIT: nothing more is sent)
        wrapped = asyncio.wrap_future(call.future)
        try:
            await asyncio.shield(wrapped)
        except asyncio.CancelledError:
            if not wrapped.done():
                try:
                    await asyncio.wait({wrapped})
                finally:
                    self.committed = wrapped.done() and wrapped.exception() is None
            raise
        except RolledBack:
            self._lost = True
            raise
        self.committed = True

    def end(self) -> None:
        if not self._ended:
            self._ended = True
            self._hold.ops.put(None)

    async def release(self, cursors: Sequence[sqlite3.Cursor] = ()) -> None:
        if cursors and not self._ended:
            self.post(close_cursors, (cursors,))
        self.end()


class ClusterReadLease:
    """A reader held by a thread (a snapshot, an iteration) until :meth:`release`."""

    def __init__(self, engine: ClusterEngine, link: Link, deadline: float) -> None:
        self._engine = engine
        self._link: Link | None = link
        self._deadline = deadline
        self._fresh = True  # nothing ran on it yet (see _on_held)

    def _use(self, fn: Callable[..., Any], *args: Any) -> Any:
        link = cast(Link, self.conn)
        fresh, self._fresh = self._fresh, False
        return _on_held(link, self._deadline, fresh, fn, *args)

    @property
    def conn(self) -> sqlite3.Connection:
        if self._link is None:
            raise Misuse("the snapshot is over (its block was left)")
        return cast(sqlite3.Connection, self._link)

    @property
    def in_transaction(self) -> bool:
        return self._link is not None and self._link.in_transaction

    def run(self, fn: Fn[T], args: Args, sql: str | None, limit: Bound) -> T:
        _no_limit(limit)
        return cast(T, self._use(fn, *args))

    def query(self, sql: str, params: Params, limit: Bound) -> list[Any]:
        return self.run(run_query, (sql, params), sql, limit)

    def begin_snapshot(self) -> None:
        self._use(_begin_snapshot)

    def release(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            self._engine._give_back(link)


class AsyncClusterReadLease:
    """A reader held by an asyncio task; its calls run on the engine's reader threads."""

    def __init__(self, engine: ClusterEngine, link: Link, deadline: float) -> None:
        self._engine = engine
        self._link: Link | None = link
        self._deadline = deadline
        self._fresh = True  # nothing ran on it yet (see _on_held)

    def _live(self) -> Link:
        if self._link is None:
            raise Misuse("the snapshot is over (its block was left)")
        return self._link

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        link = self._live()
        fresh, self._fresh = self._fresh, False
        work = self._engine.beside(_on_held, link, self._deadline, fresh, fn, *args)
        return await asyncio.wrap_future(work)

    async def begin_snapshot(self) -> None:
        await self._call(_begin_snapshot)

    async def query(self, sql: str, params: Params, limit: Bound) -> list[Any]:
        _no_limit(limit)
        rows: list[Any] = await self._call(run_query, sql, params)
        return rows

    async def run(self, fn: Callable[..., Any], args: Args, sql: str | None, limit: Bound) -> Any:
        _no_limit(limit)
        return await self._call(fn, *args)

    async def release(self, cursors: Sequence[sqlite3.Cursor] = ()) -> None:
        self.end()

    def end(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            try:  # (never blocks: the rollback goes over the network, on a reader thread)
                self._engine._executor.submit(self._engine._give_back, link)
            except RuntimeError:  # (the engine closed: the connection goes with it)
                link.drop()
