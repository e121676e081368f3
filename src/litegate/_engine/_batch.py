"""Group commit and lane reads: what the lane holder runs on the writer connection.

Functions of the connection only (no lane state): :class:`~._lane.WriteLane` calls them from
whichever thread holds the lane -- the writer thread, or a thread caller on an idle lane.
"""

from __future__ import annotations

import logging
import sqlite3
import time

from .._errors import Misuse, RolledBack
from .._statements import run_execute, run_executemany, run_script
from ._authorizer import explain
from ._commit_gate import refused_error
from ._connection import (
    COMMIT,
    TxnGuard,
    begin_immediate,
    end_transaction,
    rollback,
    rollback_quietly,
    run_limited,
)
from ._costs import measured
from ._counters import Counters
from ._jobs import BaseJob

__all__ = (
    "LaneBroken",
    "commit_one",
    "copy_error",
    "group_commit",
    "is_open",
    "job_error",
    "run_reads",
    "undo_savepoint",
)

logger = logging.getLogger("litegate")

_SAVEPOINT = "SAVEPOINT litegate_job"
_RELEASE = "RELEASE litegate_job"
_ROLLBACK_TO = "ROLLBACK TO litegate_job"
_YIELD_AFTER_CONTENTION = 0.0005


def _plain(fn: object) -> bool:
    """Is ``fn`` a plain write's job function? Their SQL can open no savepoint nor roll back
    to one (:func:`~._authorizer.refuse_plain_savepoints`). Any other function (``run_write``'s)
    runs in a savepoint of its own when it shares the transaction with other jobs: one it
    opened and left is released with it, and it cannot roll back to another job's (SQLite
    would undo that job's acknowledged work). By identity: a callable need not be hashable,
    and no user ``__eq__`` runs here."""
    return fn is run_execute or fn is run_executemany or fn is run_script or fn is measured


def copy_error(exc: BaseException) -> BaseException:
    """A fresh exception per caller: one object raised in many threads would share and grow one
    traceback. Falls back to the original where the type cannot be rebuilt from its args."""
    try:
        clone = type(exc)(*exc.args)
    except Exception:
        return exc
    for attr in ("sqlite_errorcode", "sqlite_errorname"):
        if hasattr(exc, attr):
            try:
                setattr(clone, attr, getattr(exc, attr))
            except AttributeError:  # pragma: no cover
                pass
    clone.__cause__ = exc.__cause__
    return clone


def run_reads(conn: sqlite3.Connection, guard: TxnGuard, jobs: list[BaseJob]) -> int:
    """Lane reads (``readers=0``), each outside any transaction, each answered at once.
    Returns how many succeeded. A function that leaves a transaction open fails: it is rolled
    back before anything else runs.

    :raises LaneBroken: a function closed the connection (the lane reopens it)
    """
    ok = 0
    for i, job in enumerate(jobs):
        job.attach(conn)
        try:
            result = run_limited(conn, job.time_limit, job.sql, job.run)
            if conn.in_transaction:
                raise Misuse(
                    "a run_read function left a transaction open on the write lane's "
                    "connection (readers=0); it was rolled back"
                )
        except BaseException as exc:
            alive = is_open(conn)
            job.finish(error=job_error(exc, alive, reading=True))
            if not alive:
                raise LaneBroken(
                    "a run_read function closed the connection", jobs[i + 1 :]
                ) from exc
            if conn.in_transaction:
                rollback(conn, guard)
            continue
        job.finish(result)
        ok += 1
    return ok


class LaneBroken(Exception):
    """The writer connection cannot be used any more (user code closed it, or a rollback
    failed). ``jobs``: those of the batch that were not answered and did not commit; the lane
    reopens its connection and runs them again."""

    def __init__(self, why: str, jobs: list[BaseJob]) -> None:
        super().__init__(why)
        self.jobs = jobs


def is_open(conn: sqlite3.Connection) -> bool:
    """False if ``conn`` was closed (by a job's function: the lane never closes it mid-use)."""
    try:
        conn.in_transaction  # noqa: B018 - raises ProgrammingError once closed
    except sqlite3.ProgrammingError:
        return False
    return True


def job_error(exc: BaseException, alive: bool = True, *, reading: bool = False) -> BaseException:
    """What the caller of a failed lane job is told: ``exc``, except where the lane knows
    better (the function closed the connection; its statement was refused by the commit gate).
    """
    if alive:
        return refused_error(explain(exc), in_transaction=not reading)
    err = Misuse(
        "the function closed the write lane's connection; it failed (the lane opened a new "
        "connection). Never close a connection litegate lends you"
    )
    err.__cause__ = exc
    return err


def undo_savepoint(
    conn: sqlite3.Connection, rollback_to: str = _ROLLBACK_TO, release: str = _RELEASE
) -> bool:
    """Undo a savepoint (by default the failed job's; a group's joiner passes its own).
    False if that cannot be done (the transaction is gone, or user SQL released or broke the
    savepoint): the caller rolls back all."""
    try:
        if not conn.in_transaction:
            return False
        conn.execute(rollback_to)
        conn.execute(release)
    except sqlite3.Error:
        return False
    return True


def _rollback_all(conn: sqlite3.Connection, guard: TxnGuard, again: list[BaseJob]) -> None:
    """Roll the batch's transaction back.

    :raises LaneBroken: the connection is closed or refuses the rollback (``again`` are the
        jobs to run again on a new one)
    """
    try:
        rollback(conn, guard)
    except BaseException as exc:
        if isinstance(exc, sqlite3.Error) or not is_open(conn):
            raise LaneBroken(
                f"the lane could not roll back its transaction: {exc!r}", again
            ) from exc
        raise


def _swallowed() -> RolledBack:
    return RolledBack(
        "this write's function caught an error after which SQLite rolled the whole "
        "transaction back: the write failed (the others of its batch are run again). Let "
        "such errors propagate"
    )


def _savepoint_gone() -> RolledBack:
    return RolledBack(
        "this write's function released or rolled back past the savepoint litegate ran it in "
        "(its batch shares one transaction): the write failed and nothing of it is kept (the "
        "others of its batch are kept). Use savepoints of your own only"
    )


def _begin_failed(
    conn: sqlite3.Connection, guard: TxnGuard, c: Counters, jobs: list[BaseJob], exc: BaseException
) -> None:
    """The batch's BEGIN failed: every job fails with (a copy of) its error."""
    if conn.in_transaction:  # (interrupted just after the BEGIN)
        rollback(conn, guard)
    c.jobs_failed += len(jobs)
    for job in jobs:
        job.finish(error=copy_error(exc))


def commit_one(
    conn: sqlite3.Connection, guard: TxnGuard, busy_timeout: float, c: Counters, job: BaseJob
) -> bool:
    """:func:`group_commit` of one job: the same outcome, hand-inlined for a lone write (the
    idle lane's hot path, benchmarks/hot_paths.py). Keep the two in step."""
    if job.time_limit is not None:
        return group_commit(conn, guard, busy_timeout, c, [job])
    retries = c.busy_retries
    try:
        begin_immediate(conn, guard, busy_timeout, c)
    except BaseException as exc:
        _begin_failed(conn, guard, c, [job], exc)
        return False
    try:
        try:
            result = job.ctx.run(job.fn, conn, *job.args)
            if not conn.in_transaction:  # it swallowed an error that ended the txn
                raise _swallowed()
        except BaseException as exc:  # it fails alone; its partial work is undone
            alive = is_open(conn)
            c.jobs_failed += 1
            job.finish(error=job_error(exc, alive))
            if not alive:
                raise LaneBroken("a write's function closed the connection", []) from exc
            _rollback_all(conn, guard, [])
            return False
    except BaseException:  # escaping: never leave the transaction open
        if is_open(conn) and conn.in_transaction:
            rollback(conn, guard)
        raise
    try:
        end_transaction(conn, guard, COMMIT)
    except BaseException as exc:
        rollback_quietly(conn, guard)
        c.jobs_failed += 1
        job.finish(error=copy_error(exc))
        return False
    c.batches += 1
    c.jobs_ok += 1
    c.batch_sizes.append(1)
    if c.max_batch < 1:
        c.max_batch = 1
    job.finish(result)
    if c.busy_retries != retries:  # (see group_commit)
        time.sleep(_YIELD_AFTER_CONTENTION)
    return True


def group_commit(
    conn: sqlite3.Connection, guard: TxnGuard, busy_timeout: float, c: Counters, jobs: list[BaseJob]
) -> bool:
    """BEGIN IMMEDIATE; the jobs; one COMMIT; then answer everyone.

    Optimistic first: the jobs run back to back, with no savepoint each (every statement
    hands the GIL back and forth, so two more per job cost real time under load) -- but a
    ``run_write`` function's, which runs in its own when others share the transaction
    (:func:`_plain`; a failure there is undone alone). When a
    job fails, it fails alone: the transaction is rolled back and the others are run again,
    this time each inside its own SAVEPOINT so that a later failure is undone on its own.
    If SQLite itself rolls the transaction back (interrupt, ``OR ROLLBACK``, I/O error),
    the survivors are likewise run again. Nobody is answered before the COMMIT returned.
    If the COMMIT fails on a deferred constraint, each job is retried alone so only the
    guilty one fails; any other COMMIT failure fails every job of the batch.

    Whatever a job raises (any ``BaseException``) fails that job alone and goes to its caller
    only. An exception that escapes (an interrupt of the lane holder's own thread) leaves no
    transaction open.

    Runs on the lane holder's thread. Returns whether anything was committed.

    :raises LaneBroken: a job closed the connection, or it refuses to roll back
    """
    pending = jobs
    careful = False  # savepoint per job, after a failure in this batch
    while pending:
        retries = c.busy_retries
        try:
            begin_immediate(conn, guard, busy_timeout, c)
        except BaseException as exc:
            _begin_failed(conn, guard, c, pending, exc)
            return False
        shared = len(pending) > 1
        savepoints = careful and shared
        done: list[tuple[BaseJob, object]] = []
        restart: list[BaseJob] | None = None
        try:
            for i, job in enumerate(pending):
                own = savepoints or (shared and not _plain(job.fn))
                try:
                    if own:
                        conn.execute(_SAVEPOINT)
                    if job.time_limit is None:  # job.run inline: this runs once per write
                        result = job.ctx.run(job.fn, conn, *job.args)
                    else:
                        result = run_limited(conn, job.time_limit, job.sql, job.run)
                    if not conn.in_transaction:  # it swallowed an error that ended the txn
                        raise _swallowed()
                    if own:  # (never the end of the transaction: BEGIN began it)
                        try:
                            conn.execute(_RELEASE)
                        except sqlite3.OperationalError as exc:  # (its function's doing)
                            raise _savepoint_gone() from exc
                except BaseException as exc:
                    alive = is_open(conn)
                    c.jobs_failed += 1
                    job.finish(error=job_error(exc, alive))
                    rest = [j for j, _ in done] + pending[i + 1 :]
                    if not alive:
                        raise LaneBroken("a write's function closed the connection", rest) from exc
                    if own and undo_savepoint(conn):
                        continue
                    # Undo everything (it may hold the failed job's partial work) and run
                    # the others again, carefully.
                    _rollback_all(conn, guard, rest)
                    restart = rest
                    careful = True
                    break
                else:
                    done.append((job, result))
        except BaseException:  # escaping the loop: never leave the transaction open
            if is_open(conn) and conn.in_transaction:
                rollback(conn, guard)
            raise
        if restart is not None:
            pending = restart
            continue
        if not done:
            rollback(conn, guard)
            return False
        try:
            end_transaction(conn, guard, COMMIT)  # (commit_or_rollback inlined: one frame less)
        except BaseException as exc:
            rollback_quietly(conn, guard)
            if isinstance(exc, sqlite3.IntegrityError) and len(done) > 1:
                # A deferred constraint failed at COMMIT: find the guilty job by running
                # each alone, so that it fails alone (none of them was acknowledged).
                alone = [group_commit(conn, guard, busy_timeout, c, [job]) for job, _ in done]
                return any(alone)
            c.jobs_failed += len(done)
            for job, _ in done:
                job.finish(error=copy_error(exc))
            return False
        n = len(done)
        c.batches += 1
        c.jobs_ok += n
        c.batch_sizes.append(n)
        if n > c.max_batch:
            c.max_batch = n
        for job, result in done:
            job.finish(result)
        if c.busy_retries != retries:
            # Another process wanted the lock too: leave it a window before our next
            # BEGIN (its retries poll every <= 2 ms), so no process is starved.
            time.sleep(_YIELD_AFTER_CONTENTION)
        return True
    return False
