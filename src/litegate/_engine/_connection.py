"""Opening and configuring one connection, transaction control on the writer, time limits.

Nothing here starts threads or takes engine locks: these functions run on whichever thread
currently owns the connection (the writer thread, a reader's borrower, a lease holder).
"""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import time
from threading import get_ident
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from .._config import Options
from .._errors import Busy, Misuse, QueryTimeout
from .._types import Bound, Fn
from ._authorizer import (
    GUARDED,
    ReaderGuard,
    explain,
    install,
    refuse_transaction,
    reraise,
    verdict,
)
from ._commit_gate import OPEN, SHUT, CommitGate
from ._counters import Counters

__all__ = (
    "BEGIN_IMMEDIATE",
    "COMMIT",
    "ROLLBACK",
    "TxnGuard",
    "begin_immediate",
    "begin_snapshot",
    "cannot_write",
    "clear_time_limit",
    "closed_by_function",
    "commit_on_loop",
    "commit_or_rollback",
    "end_transaction",
    "is_busy",
    "is_read_only",
    "main_file",
    "open_connection",
    "rollback",
    "rollback_quietly",
    "run_limited",
    "set_time_limit",
    "translate_interrupt",
)

logger = logging.getLogger("litegate")

T = TypeVar("T")

_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SQLITE_READONLY = 8
_SQLITE_INTERRUPT = 9
_PROGRESS_STEPS = 1000
_EFFECTIVE_IDS = os.access in os.supports_effective_ids  # (os.access as SQLite's open(2) sees it)
# Writer-issued transaction control. The trailing comment keeps these statement-cache entries
# apart from a user's own "COMMIT" (which the TxnGuard must get to see and refuse).
BEGIN_IMMEDIATE = "BEGIN IMMEDIATE /* litegate */"
BEGIN_READ = "BEGIN DEFERRED /* litegate */"
COMMIT = "COMMIT /* litegate */"
ROLLBACK = "ROLLBACK /* litegate */"


class TxnGuard:
    """The writer's authorizer: refuses BEGIN/COMMIT/ROLLBACK from user code, and what
    :mod:`._authorizer` refuses on every connection (state-changing PRAGMAs, ATTACH).

    The lane owns transaction boundaries: a job that committed on its own would commit other
    callers' half-done work. Savepoints stay allowed here (a transaction's own; as plain
    writes they are refused by their text first: :func:`~._authorizer.refuse_plain_savepoint`).
    Transaction control is permitted only to the thread that opened a :meth:`permit` (the
    authorizer runs on the thread preparing the statement), so no other thread can widen or
    narrow it by accident.
    """

    __slots__ = ("_allowed", "gate", "held_pages")

    def __init__(self) -> None:
        self._allowed = 0
        # The connection's ``wal_autocheckpoint`` while :func:`commit_on_loop` holds SQLite's
        # automatic checkpoint off (0: not held): :func:`end_transaction` restores it before
        # a COMMIT off the loop. Written and read by the lane holder only (whoever runs the
        # lane's COMMITs), like ``_allowed``.
        self.held_pages = 0
        # The flag of the writer's commit gate (None: unavailable): :func:`end_transaction`
        # opens it for the lane's own COMMIT only. (Written there directly: a method call per
        # open and close cost ~4% of a single write, benchmarks/hot_paths.py.)
        self.gate: bytearray | None = None

    def set_gate(self, gate: CommitGate | None) -> None:
        """Install the commit gate of the connection this guard watches (closed)."""
        self.gate = None if gate is None else gate.flag

    def permit(self) -> None:
        """Allow the engine's own statements on this thread until :meth:`revoke`: transaction
        control, and any PRAGMA (e.g. a lane that switches ``query_only`` for lane reads)."""
        self._allowed = get_ident()

    def revoke(self) -> None:
        self._allowed = 0

    def __call__(
        self, action: int, arg1: str | None = None, arg2: str | None = None, *_: object
    ) -> int:
        # Called for every action of every statement prepared (not for cached ones): one set
        # lookup for the common actions.
        if action not in GUARDED or self._allowed == get_ident():
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_TRANSACTION:
            return refuse_transaction(arg1)
        return verdict(action, arg1, arg2)


_READER_GUARD = ReaderGuard()


def _retry_busy(conn: sqlite3.Connection, sql: str, deadline: float) -> Any:
    delay = 0.0005
    while True:
        try:
            return conn.execute(sql).fetchall()
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


def open_connection(opts: Options, *, reader: bool) -> sqlite3.Connection:
    """Open one connection configured for its role (writer or read-only reader).

    Blocks for at most ``opts.busy_timeout`` while another process initialises the file.
    """
    # sqlite3.Connection itself, not sqlite3.connect: litegate.debug wraps the latter to watch
    # user connections; the engine serialises its own, which it hands between threads. (Not
    # a subclass either: every method call on a subclass instance costs sqlite3 an MRO walk.)
    conn = sqlite3.Connection(
        opts.path,
        # Readers wait in SQLite's busy handler (rare in WAL: only during recovery); the
        # writer must not sleep there, it retries BEGIN IMMEDIATE itself (begin_immediate).
        timeout=opts.busy_timeout if reader else 0.0,
        isolation_level=None,
        check_same_thread=False,
        uri=opts.uri,
        detect_types=opts.detect_types,
        cached_statements=256,
    )
    try:
        conn.row_factory = opts.row_factory
        if not reader and not opts.memory:
            _use_wal(conn, opts, time.monotonic() + opts.busy_timeout)
        conn.execute(f"PRAGMA synchronous={str(opts.synchronous).upper()}")
        conn.execute(f"PRAGMA cache_size=-{int(opts.cache_kib)}")
        conn.execute("PRAGMA temp_store=MEMORY")
        conn.execute("PRAGMA foreign_keys=ON")
        if reader:
            conn.execute("PRAGMA query_only=ON")
        else:
            conn.execute(f"PRAGMA journal_size_limit={int(opts.journal_size_limit)}")
            if opts.checkpoints == "off":  # (another process owns them: Litestream)
                conn.execute("PRAGMA wal_autocheckpoint=0")
        for key, value in opts.pragmas.items():
            conn.execute(f"PRAGMA {key}={value if isinstance(value, int) else repr(str(value))}")
        if opts.on_connect is not None:
            opts.on_connect(conn)
        if reader:  # (the writer's, a TxnGuard, is installed by the lane)
            install(conn, _READER_GUARD)
    except BaseException:
        conn.close()
        raise
    return conn


def main_file(conn: sqlite3.Connection) -> str | None:
    """The path of ``conn``'s main database file (``None`` for an in-memory one). Read as
    bytes: a path that is not UTF-8 (any bytes a POSIX name may hold) still comes back."""
    row = conn.execute(
        "SELECT CAST(file AS BLOB) FROM pragma_database_list WHERE name = 'main'"
    ).fetchone()
    return os.fsdecode(row[0]) if row and row[0] else None


def _use_wal(conn: sqlite3.Connection, opts: Options, deadline: float) -> None:
    """Writer: put the database in WAL mode, unless this process cannot write it.

    A read-only database (``mode=ro``, ``immutable=1``, a file or directory this process may not
    write, a read-only file system) is used as it is: its journal mode is left alone (plain
    sqlite3 reads a rollback-journal file in a read-only directory, so litegate does too), reads
    work, and every write fails with SQLite's own ``sqlite3.OperationalError`` ("attempt to
    write a readonly database"). That is logged once here: at WARNING when nothing asked for it
    (a 0444 file is easy to miss until the first write fails), at INFO for ``mode=ro`` and
    ``immutable=1``. A file SQLite cannot read at all fails here as with plain sqlite3.
    """
    try:
        mode = _retry_busy(conn, "PRAGMA journal_mode=WAL", deadline)[0][0]
        refused: sqlite3.OperationalError | None = None
    except sqlite3.OperationalError as exc:
        if not is_read_only(exc):
            raise
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        refused = exc
    asked, why = _read_only_reason(conn, opts, refused)
    if why is None:
        if str(mode).lower() != "wal":
            logger.warning("litegate: %s could not be put in WAL mode (%s)", opts.path, mode)
    else:
        logger.log(
            logging.INFO if asked else logging.WARNING,
            "litegate: %s is read-only (%s): reads work, every write fails with "
            "sqlite3.OperationalError 'attempt to write a readonly database'; journal mode "
            "left as %s",
            opts.path,
            why,
            mode,
        )


def _read_only_reason(
    conn: sqlite3.Connection, opts: Options, refused: sqlite3.OperationalError | None
) -> tuple[bool, str | None]:
    """Why the writer cannot write the database, if it cannot: ``(asked, reason)``, where
    ``asked`` says the caller opened it read-only on purpose. Tells without writing anything."""
    if opts.uri and opts.path.startswith("file:"):
        query = parse_qs(urlsplit(opts.path).query)
        if "ro" in query.get("mode", ()):
            return True, "opened with mode=ro"
        if any(v not in ("0", "false", "no", "off") for v in query.get("immutable", ())):
            return True, "opened with immutable=1"
    path = main_file(conn)
    if path and not os.access(path, os.W_OK, effective_ids=_EFFECTIVE_IDS):
        return False, "this process may not write the file: permissions or a read-only file system"
    if refused is not None:
        code = getattr(refused, "sqlite_errorcode", 0)
        if code == sqlite3.SQLITE_READONLY_DIRECTORY:
            return False, "its directory is not writable, so no journal or WAL can be created"
        return False, f"SQLite refused to switch it to WAL: {refused} ({code})"
    return False, None


def cannot_write(conn: sqlite3.Connection, opts: Options) -> bool:
    """Whether ``conn`` (opened with ``opts``) can never write its database: opened read-only,
    or a file this process may not write. (A checkpoint then fails with ``SQLITE_READONLY``,
    or with an I/O error for a file opened read-only.)"""
    return _read_only_reason(conn, opts, None)[1] is not None


def is_read_only(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite's ``SQLITE_READONLY`` (any extended code): this connection can
    never write the database, so retrying is pointless."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.OperationalError) and (code or 0) & 0xFF == _SQLITE_READONLY


def is_busy(exc: sqlite3.OperationalError) -> bool:
    """Whether SQLite raised ``exc`` as SQLITE_BUSY or SQLITE_LOCKED (by its code: an error
    the sqlite3 module raises itself has none, and its text may quote a row's data)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and (code & 0xFF) in (_SQLITE_BUSY, _SQLITE_LOCKED)


def begin_immediate(
    conn: sqlite3.Connection,
    guard: TxnGuard,
    busy_timeout: float,
    counter: Counters,
    sql: str = BEGIN_IMMEDIATE,
) -> None:
    """``BEGIN IMMEDIATE``, retrying while another process holds the write lock.

    SQLite's own busy handler sleeps up to 100 ms between tries, so under contention a waiter
    misses most windows in which the lock is free (multi-second stalls). Here we poll with short
    jittered sleeps (0.1-2 ms), up to ``busy_timeout`` seconds, then raise :class:`Busy`.
    """
    # guard.permit() and .revoke() inlined here and in end_transaction: twice per write
    # (benchmarks/hot_paths.py: ~1,000 instructions of a write).
    guard._allowed = get_ident()
    try:
        try:
            conn.execute(sql)
            return
        except sqlite3.OperationalError as exc:
            if not is_busy(exc):
                raise
        start = time.monotonic()
        deadline = start + busy_timeout
        delay = 0.0002
        while True:
            now = time.monotonic()
            if now >= deadline:
                counter.busy_timeouts += 1
                raise Busy(
                    f"another connection held the database's write lock for {now - start:.2f}s "
                    f"(busy_timeout={busy_timeout}s); raise busy_timeout, or find the process "
                    "that keeps a write transaction open"
                ) from None
            counter.busy_retries += 1
            time.sleep(min(delay * (0.5 + random.random()), deadline - now))
            delay = min(delay * 1.5, 0.002)
            try:
                conn.execute(sql)
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    raise
                continue
            waited = time.monotonic() - start
            if waited > counter.busy_wait_max:
                counter.busy_wait_max = waited
            return
    finally:
        guard._allowed = 0


def end_transaction(conn: sqlite3.Connection, guard: TxnGuard, sql: str) -> None:
    """COMMIT or ROLLBACK on a connection guarded by ``guard`` (no-op outside a transaction).
    A COMMIT first gives SQLite its automatic checkpoint back if :func:`commit_on_loop` held
    it off (so this COMMIT checkpoints when the WAL has grown past it)."""
    if not conn.in_transaction:
        return
    guard._allowed = get_ident()  # (permit() inlined: see begin_immediate)
    gate = guard.gate
    if gate is not None:
        gate[0] = OPEN  # (the lane's own COMMIT: the one the gate lets through)
    try:
        if guard.held_pages and sql == COMMIT:
            _restore_autocheckpoint(conn, guard)
        conn.execute(sql)
    finally:
        if gate is not None:
            gate[0] = SHUT
        guard._allowed = 0


def run_autocommit(conn: sqlite3.Connection, guard: TxnGuard, fn: Fn[T], args: Any) -> T:
    """``fn(conn, *args)`` -- one statement, run to its end or closed (its cursor reset even
    when fetching its rows fails) -- in SQLite's autocommit mode on a connection guarded by
    ``guard`` (the lane holder, no transaction open): the commit gate is open for the call,
    so SQLite commits the statement as it ends. A statement left unfinished past the call
    would keep SQLite's write transaction open unseen (``in_transaction`` stays False) and
    take later writes into it; its commit, when it is reset, meets the shut gate and rolls
    them all back. ``fn`` must never leave one."""
    if guard.held_pages:  # (as end_transaction's: this commit may checkpoint)
        guard._allowed = get_ident()
        try:
            _restore_autocheckpoint(conn, guard)
        finally:
            guard._allowed = 0
    gate = guard.gate
    if gate is not None:
        gate[0] = OPEN
    try:
        return fn(conn, *args)
    finally:
        if gate is not None:
            gate[0] = SHUT


_AUTOCHECKPOINT_OFF = "PRAGMA wal_autocheckpoint=0 /* litegate */"


def commit_on_loop(conn: sqlite3.Connection, guard: TxnGuard, pages: int) -> None:
    """:func:`end_transaction`'s COMMIT with SQLite's automatic checkpoint held off, for a
    COMMIT run on an event loop where it costs no fsync (WAL at synchronous NORMAL or OFF):
    one that took the WAL past ``wal_autocheckpoint`` pages would checkpoint -- and fsync --
    right there. ``pages``: the connection's setting (0: off already). It stays held off
    for the loop's next COMMITs (``guard.held_pages``) and is given back by the next COMMIT
    off the loop (:func:`end_transaction`), which checkpoints then: a setting PRAGMA is
    prepared anew each time it runs (SQLite expires it after one run), so switching it off
    and on around every COMMIT here cost two compilations per COMMIT."""
    if not conn.in_transaction:
        return
    guard._allowed = get_ident()  # (the engine's own PRAGMA and COMMIT: see end_transaction)
    gate = guard.gate
    if gate is not None:
        gate[0] = OPEN
    try:
        if pages and not guard.held_pages:
            guard.held_pages = pages  # (first: an interrupt after the PRAGMA still restores)
            conn.execute(_AUTOCHECKPOINT_OFF)
        conn.execute(COMMIT)
    finally:
        if gate is not None:
            gate[0] = SHUT
        guard._allowed = 0


def _restore_autocheckpoint(conn: sqlite3.Connection, guard: TxnGuard) -> None:
    """Give SQLite back the automatic checkpoint :func:`commit_on_loop` held off (the lane
    holder, transaction control permitted). A failure is logged, never raised: the COMMIT
    that follows is what counts (the WAL is then checkpointed by the writer when idle)."""
    try:
        conn.execute(f"PRAGMA wal_autocheckpoint={guard.held_pages} /* litegate */")
    except Exception:
        logger.exception("litegate: restoring wal_autocheckpoint failed")
    # (An interrupt just before this line leaves the setting on but recorded as held: until
    # the next COMMIT off the loop, a COMMIT on one may then checkpoint there. Clearing first
    # would instead risk the setting off and unrecorded.)
    guard.held_pages = 0


def begin_snapshot(conn: sqlite3.Connection, guard: TxnGuard | None) -> None:
    """Open a read transaction and pin its snapshot now (a deferred BEGIN takes its snapshot
    at the first read). ``guard``: the writer's authorizer, which must permit the BEGIN."""
    if guard is not None:
        guard.permit()
    try:
        conn.execute(BEGIN_READ)
    finally:
        if guard is not None:
            guard.revoke()
    conn.execute("SELECT count(*) FROM sqlite_schema").fetchall()


def rollback(conn: sqlite3.Connection, guard: TxnGuard) -> None:
    """``ROLLBACK`` on the writer (nothing when no transaction is open)."""
    end_transaction(conn, guard, ROLLBACK)


def commit_or_rollback(conn: sqlite3.Connection, guard: TxnGuard) -> None:
    """``COMMIT``; if it fails, ``ROLLBACK`` (so the connection is never left in a failed
    transaction) and re-raise the COMMIT's error (a failed rollback is logged, never raised
    in its place)."""
    try:
        end_transaction(conn, guard, COMMIT)
    except BaseException:
        rollback_quietly(conn, guard)
        raise


def rollback_quietly(conn: sqlite3.Connection, guard: TxnGuard) -> None:
    """:func:`rollback` after a failure: its own failure is logged, never raised in place of
    the first error."""
    try:
        rollback(conn, guard)
    except Exception:
        logger.exception("litegate: rollback after a failed COMMIT failed")


def set_time_limit(conn: sqlite3.Connection, limit: float) -> float:
    """Interrupt statements on ``conn`` that run past ``limit`` seconds from now."""
    deadline = time.monotonic() + limit
    conn.set_progress_handler(lambda: time.monotonic() > deadline, _PROGRESS_STEPS)
    return deadline


def clear_time_limit(conn: sqlite3.Connection) -> None:
    conn.set_progress_handler(None, 0)


def translate_interrupt(
    exc: BaseException, deadline: float, limit: float, sql: str | None
) -> BaseException:
    """Turn the OperationalError of a progress-handler interrupt into QueryTimeout."""
    if (
        isinstance(exc, sqlite3.OperationalError)
        and (getattr(exc, "sqlite_errorcode", 0) & 0xFF) == _SQLITE_INTERRUPT
        and time.monotonic() >= deadline
    ):
        err = QueryTimeout(
            f"statement interrupted after its time limit of {limit}s; its writes were rolled "
            "back. Raise time_limit= for this call, or add an index",
            sql=sql,
            time_limit=limit,
        )
        err.__cause__ = exc
        return err
    return exc


def run_limited(
    conn: sqlite3.Connection, limit: Bound, sql: str | None, fn: Fn[T], *args: Any
) -> T:
    """``fn(conn, *args)``, interrupted with :class:`QueryTimeout` after ``limit`` seconds.

    :raises Refused: ``fn`` ran a statement the connection's authorizer refused
    :raises Misuse: ``fn`` closed the connection (it is the engine's, shared)
    """
    if limit is None:
        try:
            result = fn(conn, *args)
        except sqlite3.DatabaseError as exc:
            reraise(exc)
    else:
        deadline = set_time_limit(conn, limit)
        try:
            result = fn(conn, *args)
        except BaseException as exc:
            err = translate_interrupt(explain(exc), deadline, limit, sql)
            if err is exc:
                raise
            raise err from exc
        finally:
            try:
                clear_time_limit(conn)
            except sqlite3.ProgrammingError:  # fn closed it: reported below
                pass
    try:
        conn.in_transaction  # noqa: B018 (raises on a closed connection)
    except sqlite3.ProgrammingError:
        raise closed_by_function() from None
    return result


def closed_by_function() -> Misuse:
    """The error for a function that closed the shared connection it was lent."""
    return Misuse(
        "the function closed the connection it was given: litegate's connections are shared "
        "and must stay open (a closed reader is replaced when it is given back)"
    )
