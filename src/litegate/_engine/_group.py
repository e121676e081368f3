"""Group commit of interactive transactions: several transactions share one SQLite write
transaction and one COMMIT.

The first transaction of a group (its *leader*) runs ``BEGIN IMMEDIATE``; when it ends while
another transaction is queued for the lane, it does not COMMIT: it becomes a *member* of the
group (a ticket waits for the shared COMMIT) and hands the lane, transaction still open, to
the next one. That one (a *joiner*) runs inside its own ``SAVEPOINT``: its commit releases the
savepoint, its rollback undoes only the savepoint. The transaction that ends when nobody is
waiting, or when the group's age or size bound is reached, COMMITs for everyone and answers
every member; if that COMMIT fails, or SQLite rolls the shared transaction back (an interrupt
of a write, an I/O error, a full disk), every member fails with :class:`~litegate.RolledBack`
saying so, and none is acknowledged.

A :class:`Group` belongs to the lane holder of the moment (the lane's guard); it is handed on
with the lane.
"""

from __future__ import annotations

import sqlite3
from _thread import allocate_lock
from time import monotonic
from typing import Any

from .._errors import RolledBack
from ._batch import copy_error, is_open
from ._batch import undo_savepoint as undo_job_savepoint
from ._connection import COMMIT, TxnGuard, commit_on_loop, end_transaction, rollback_quietly
from ._counters import Counters
from ._jobs import AsyncTicket, BaseJob, flush

__all__ = (
    "JOIN_RELEASE",
    "JOIN_ROLLBACK",
    "JOIN_SAVEPOINT",
    "Group",
    "Ticket",
    "lost_error",
    "undo_savepoint",
)

JOIN_SAVEPOINT = "SAVEPOINT litegate_tx"
JOIN_RELEASE = "RELEASE litegate_tx"
JOIN_ROLLBACK = "ROLLBACK TO litegate_tx"


def lost_error(why: str) -> RolledBack:
    """What a member of a lost group is told."""
    return RolledBack(
        f"this transaction shared its COMMIT with others (group commit) and {why}; nothing of "
        "it was committed. Run it again"
    )


def undo_savepoint(conn: sqlite3.Connection) -> bool:
    """Undo a joiner's part (its savepoint). False if that cannot be done (the transaction is
    gone, or the savepoint was released or broken by user SQL): the group is then lost."""
    return undo_job_savepoint(conn, JOIN_ROLLBACK, JOIN_RELEASE)


class Ticket:
    """A thread's wait for the COMMIT of the group it handed the lane on to: ``done`` (a raw
    lock) is released once the outcome is published (``result``/``error`` written before).
    (:class:`~._jobs.Job`'s answer, without a job's contextvars copy: one is made per
    grouped transaction.)"""

    __slots__ = ("answered", "done", "error", "result")

    def __init__(self) -> None:
        self.done = allocate_lock()
        self.done.acquire()
        self.result: Any = None
        self.error: BaseException | None = None
        self.answered = False

    def finish(self, result: Any = None, error: BaseException | None = None) -> None:
        self.result = result
        self.error = error
        self.answered = True
        self.done.release()

    def outcome(self) -> Any:
        err = self.error
        if err is not None:
            self.error = None  # (no traceback -> frame -> ticket cycle)
            raise err
        return self.result


Member = BaseJob | Ticket | AsyncTicket


class Group:
    """The open shared write transaction and its members waiting for its COMMIT.

    Fields (the lane holder's; handed on with the lane): ``started`` (monotonic, at BEGIN),
    ``members`` (tickets or write jobs, with the result each is answered with), ``size`` (the
    transactions run in it so far, members or not), ``here`` (every part so far was an async
    transaction's that ran light on its loop: the group may COMMIT on a loop where that costs
    no fsync) and ``changes0`` (the connection's ``total_changes`` at BEGIN, for a loop group).
    A group of a loop's one-statement writes (:mod:`._loop_group`) also has ``writes`` (how
    many such writes it holds: counted as jobs when it commits or fails) and ``end``: their
    one answer (after any members'), which the loop hands on to each of them.
    """

    __slots__ = ("changes0", "committed", "end", "here", "members", "size", "started", "writes")

    def __init__(self, here: bool = False, changes0: int = 0) -> None:
        self.committed = False  # its COMMIT went through
        self.started = monotonic()
        self.members: list[tuple[Member, Any]] = []
        self.size = 1
        self.here = here
        self.changes0 = changes0
        self.writes = 0
        self.end: AsyncTicket | None = None

    def open_for(self, max_size: int, max_age: float) -> bool:
        """May one more transaction join (the bounds: size and age)?"""
        return self.size < max_size and monotonic() - self.started < max_age

    def commit(
        self,
        conn: sqlite3.Connection,
        guard: TxnGuard,
        c: Counters,
        own: int = 0,
        loop_pages: int | None = None,
    ) -> BaseException | None:
        """COMMIT and answer every member: their results, or all fail if the COMMIT fails
        (then the transaction is rolled back). ``own``: transactions in it besides the
        members (the committer's own: counted in the batch). ``loop_pages``: on a loop, the
        connection's ``wal_autocheckpoint`` (:func:`commit_on_loop` holds the checkpoint off).
        Returns the COMMIT's error, or None -- or an interrupt that came once the COMMIT had
        gone through (every member is told it committed; the caller raises it). A member still
        unanswered when this is cut short (an interrupt) is answered by :meth:`lose`, which
        tells it the truth (``committed``)."""
        members = self.members
        interrupted: BaseException | None = None
        try:
            if loop_pages is None:
                end_transaction(conn, guard, COMMIT)
            else:
                commit_on_loop(conn, guard, loop_pages)
            self.committed = True  # (in the try: an interrupt right here is handled below)
        except BaseException as exc:
            # An interrupt raised as the COMMIT returned comes after the COMMIT: the
            # transaction is gone because it committed (no Python code runs inside the
            # statement to raise one earlier). Telling the members "rolled back" would have
            # them run it again.
            if isinstance(exc, Exception) or not is_open(conn) or conn.in_transaction:
                rollback_quietly(conn, guard)
                self.members = []
                if self.writes == 1 or not isinstance(exc, sqlite3.IntegrityError):
                    c.jobs_failed += self.writes  # (else they run again: counted then)
                for job, _ in members:
                    err = lost_error(f"the shared COMMIT failed ({exc!r})")
                    err.__cause__ = copy_error(exc)
                    job.finish(error=err)
                if self.end is not None:
                    err = lost_error(f"the shared COMMIT failed ({exc!r})")
                    err.__cause__ = copy_error(exc)
                    self._ended(err)
                return exc
            interrupted = exc
            self.committed = True
        n = len(members) + own + self.writes
        if n:
            c.batches += 1  # (a COMMIT; its transactions are counted as they end)
            c.batch_sizes.append(n)
            if n > c.max_batch:
                c.max_batch = n
        c.jobs_ok += self.writes
        # Each is answered before it leaves the list: one cut off by an interrupt in between
        # is answered by lose(), which skips those answered already (``answered`` is set with
        # no signal check between it and the answer's publication: see the jobs' finish).
        for job, result in members:
            job.finish(result)
        members.clear()
        self._ended()
        return interrupted

    def _ended(self, error: BaseException | None = None) -> None:
        """Answer ``end`` (if any, and not answered yet): the group's COMMIT is over, with
        ``error`` if it did not commit."""
        end = self.end
        if end is not None and not end.answered:
            end.finish(error=error)

    def lose(self, why: str, outbox: Any) -> None:
        """The shared transaction is gone (rolled back) -- or, after :meth:`commit` was cut
        short past its COMMIT, committed: answer every member still waiting accordingly."""
        members, self.members = self.members, []
        for job, result in members:
            if job.answered:  # (by commit, before an interrupt cut it short)
                continue
            if self.committed:
                job.finish(result)
            else:
                job.finish(error=lost_error(why))
        self._ended(None if self.committed else lost_error(why))
        flush(outbox)
