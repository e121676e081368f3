"""Group commit and lane reads: what the lane holder runs on the writer connection.

Functions of the connection only (no lane state): :class:`~._lane.WriteLane` calls them from
whichever thread holds the lane -- the writer thread, or a thread caller on an idle lane.
"""

from __future__ import annotations

import logging
import sqlite3
import time

from .._errors import RolledBack
from ._authorizer import explain
from ._connection import (
    COMMIT,
    TxnGuard,
    begin_immediate,
    end_transaction,
    rollback,
    rollback_quietly,
    run_limited,
)
from ._counters import Counters
from ._jobs import BaseJob

__all__ = ("copy_error", "group_commit", "run_reads")

logger = logging.getLogger("litegate")

_SAVEPOINT = "SAVEPOINT litegate_job"
_RELEASE = "RELEASE litegate_job"
_ROLLBACK_TO = "ROLLBACK TO litegate_job"
_YIELD_AFTER_CONTENTION = 0.0005


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
    Returns how many succeeded."""
    ok = 0
    for job in jobs:
        job.attach(conn)
        if job.execute(conn):
            ok += 1
        if conn.in_transaction:  # pragma: no cover - the guard forbids BEGIN
            rollback(conn, guard)
    return ok


def group_commit(
    conn: sqlite3.Connection, guard: TxnGuard, busy_timeout: float, c: Counters, jobs: list[BaseJob]
) -> bool:
    """BEGIN IMMEDIATE; the jobs; one COMMIT; then answer everyone.

    Optimistic first: the jobs run back to back, with no savepoint each (every statement
    hands the GIL back and forth, so two more per job cost real time under load). When a
    job fails, it fails alone: the transaction is rolled back and the others are run again,
    this time each inside its own SAVEPOINT so that a later failure is undone on its own.
    If SQLite itself rolls the transaction back (interrupt, ``OR ROLLBACK``, I/O error),
    the survivors are likewise run again. Nobody is answered before the COMMIT returned.
    If the COMMIT fails on a deferred constraint, each job is retried alone so only the
    guilty one fails; any other COMMIT failure fails every job of the batch.

    Runs on the lane holder's thread. Returns whether anything was committed.
    """
    pending = jobs
    careful = False  # savepoint per job, after a failure in this batch
    while pending:
        retries = c.busy_retries
        try:
            begin_immediate(conn, guard, busy_timeout, c)
        except BaseException as exc:
            c.jobs_failed += len(pending)
            for job in pending:
                job.finish(error=copy_error(exc))
            return False
        savepoints = careful and len(pending) > 1
        done: list[tuple[BaseJob, object]] = []
        restart: list[BaseJob] | None = None
        for i, job in enumerate(pending):
            try:
                if savepoints:
                    conn.execute(_SAVEPOINT)
                if job.time_limit is None:  # job.run inline: this runs once per write
                    result = job.ctx.run(job.fn, conn, *job.args)
                else:
                    result = run_limited(conn, job.time_limit, job.sql, job.run)
                if savepoints:
                    conn.execute(_RELEASE)
                if not conn.in_transaction:  # it swallowed an error that ended the txn
                    raise RolledBack(
                        "this write's function caught an error after which SQLite rolled "
                        "the whole transaction back: the write failed (the others of its "
                        "batch are run again). Let such errors propagate"
                    )
            except BaseException as exc:
                c.jobs_failed += 1
                job.finish(error=explain(exc))  # (a refused statement: say what and why)
                if savepoints and conn.in_transaction:
                    conn.execute(_ROLLBACK_TO)
                    conn.execute(_RELEASE)
                    continue
                # Undo everything (it may hold the failed job's partial work) and run
                # the others again, carefully.
                rollback(conn, guard)
                restart = [j for j, _ in done] + pending[i + 1 :]
                careful = True
                break
            else:
                done.append((job, result))
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
