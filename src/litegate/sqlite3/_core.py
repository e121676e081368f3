"""The drop-in's core: a connection's state, where each statement runs, and the cursor.

A statement runs in the calling thread's transaction (its :class:`~._session.Session`) if it
has one open, else as one group-committed write on the write lane or on a reader. Each runs to
its end on an engine connection, whose rows the cursor keeps: a cursor pins nothing.

=====================  ==============================================================
field                  guard
=====================  ==============================================================
``_local``             a ``threading.local``: each thread's :class:`~._session.Session`
``_closed``            set once, by :meth:`close`, under ``_lock``; read without it (a
                       call that races with ``close`` fails in the engine instead)
``_changes``,          ``_lock``
``_sessions``
``Session.running``    written by its thread only; ``interrupt()`` reads the reference
                       whole from another (it may miss a statement that starts then)
``row_factory``,       the caller's: set them before sharing the connection (as with
``text_factory``,      ``sqlite3``); every statement reads them once, when it starts
hooks, levels
=====================  ==============================================================
"""

from __future__ import annotations

import atexit
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Self

from .._engine import Engine
from .._errors import Error
from .._statements import split_script
from . import _sql
from ._pragmas import on_writer, outside, set_pragma
from ._session import EMPTY, Outcome, Session, begin_read, begin_write, end, translate
from ._shared import (
    Hooks,
    Settings,
    attach,
    check_statement,
    install_settings,
    remove_settings,
)
from ._sql import LEGACY_TRANSACTION_CONTROL, check_level, check_mode, check_open

__all__ = (
    "LEGACY_TRANSACTION_CONTROL",
    "ConnectionCore",
    "Cursor",
    "run_statement",
)


class ConnectionCore:
    """The state of a drop-in connection and how its statements are routed (the public API is
    :class:`~._connection.Connection`'s)."""

    Warning = sqlite3.Warning
    Error = sqlite3.Error
    InterfaceError = sqlite3.InterfaceError
    DatabaseError = sqlite3.DatabaseError
    DataError = sqlite3.DataError
    OperationalError = sqlite3.OperationalError
    IntegrityError = sqlite3.IntegrityError
    InternalError = sqlite3.InternalError
    ProgrammingError = sqlite3.ProgrammingError
    NotSupportedError = sqlite3.NotSupportedError

    _closed: bool | None = None  # (None: __init__ never ran)

    def __init__(
        self,
        database: str | bytes | Any,
        timeout: float = 5.0,
        detect_types: int = 0,
        isolation_level: str | None = "",
        check_same_thread: bool = True,
        factory: Any = None,
        cached_statements: int = 128,
        uri: bool = False,
        *,
        autocommit: bool | int = LEGACY_TRANSACTION_CONTROL,
        litegate: Mapping[str, Any] | None = None,
    ) -> None:
        path, self._timeout = check_open(database, timeout, detect_types)
        self._isolation_level = check_level(isolation_level)
        self._autocommit = check_mode(autocommit)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._closed = False
        self._changes = 0
        self._sessions: weakref.WeakSet[Session] = weakref.WeakSet()  # (for interrupt)
        self.row_factory: Any = None
        self._text_factory: Any = str
        self._trace: Callable[[str], object] | None = None
        self._progress: tuple[Callable[[], object], int] | None = None
        self._authorizer: Callable[..., int] | None = None
        self._sql_limit: int | None = None  # SQLITE_LIMIT_SQL_LENGTH, if set
        self._custom = False
        del check_same_thread, factory, cached_statements  # (accepted: see the docs)
        try:
            self._shared = attach(
                path,
                uri=bool(uri),
                detect_types=detect_types,
                timeout=self._timeout,
                options=litegate,
            )
        except Error as exc:
            raise translate(exc) from exc
        except ValueError as exc:
            raise sqlite3.ProgrammingError(str(exc)) from exc
        self._engine: Engine = self._shared.engine
        self._fsyncs = str(self._engine.opts.synchronous).upper() in ("FULL", "EXTRA")  # (_write)
        with _open_lock:
            _open.add(self)

    def _check(self) -> None:
        if self._closed is not False:
            if self._closed is None:
                raise sqlite3.ProgrammingError("Base Connection.__init__ not called.")
            # Closed (maybe by another thread) while this thread had a transaction open: it
            # is rolled back now, its first call since, so the lane is not held for nothing.
            s = getattr(self._local, "s", None)
            if s is not None and s.lease is not None:
                try:
                    end(s, commit=False)
                except Exception:  # (it is being discarded: the error below says why)
                    pass
            raise sqlite3.ProgrammingError("Cannot operate on a closed database.")

    def _session(self) -> Session:
        try:
            s: Session = self._local.s
        except AttributeError:
            s = self._local.s = Session()
            with self._lock:
                self._sessions.add(s)
        return s

    @property
    def read_only(self) -> bool:
        """litegate's extension, for the calling thread: its next transactions are read-only
        snapshots on a reader (SQLAlchemy's ``litegate_read_only`` execution option sets it)."""
        return self._session().read_only

    @read_only.setter
    def read_only(self, value: bool) -> None:
        self._session().read_only = bool(value)

    def _running(self) -> list[sqlite3.Connection]:
        """The engine connections this connection's statements run on now (any thread's)."""
        with self._lock:
            sessions = list(self._sessions)
        return [conn for s in sessions if (conn := s.running) is not None]

    def _count_changes(self, n: int) -> None:
        with self._lock:
            self._changes += n

    def _settings(self) -> Settings:
        """This connection's own hooks and text factory, read once for a statement (another
        thread may change them meanwhile): what :func:`install_settings` puts on."""
        return (self._trace, self._progress, self._authorizer, self._text_factory)

    def _run(
        self, cur: Cursor, sql: str, params: Any, many: bool, implicit: bool = True
    ) -> Outcome:
        """One statement for ``cur``, routed by what it is and the thread's session
        (``implicit``: the legacy implicit BEGIN applies; not in ``executescript``)."""
        if not isinstance(sql, str):
            raise TypeError(f"execute() argument 1 must be str, not {type(sql).__name__}")
        if self._sql_limit is not None:
            self._check_length(sql)
        kind = _sql.classify(sql)
        try:
            s: Session = self._local.s
        except AttributeError:
            s = self._session()
        try:
            if (
                kind == _sql.READ
                and s.lease is None
                and not many
                and not self._custom
                and self._autocommit is not False
            ):  # (the hot path: a read outside a transaction, no hooks to apply)
                job = (cur, sql, params, s, self._shared.hooks)
                read: Outcome = self._engine.read(run_read, job, self._timeout, None, sql)
                cur.lastrowid = s.lastrowid if s.lastrowid is not None else 0
                return read
            if kind == _sql.SET_PRAGMA:
                return set_pragma(self._engine, self._timeout, s, sql)
            if kind >= _sql.BEGIN:
                return self._control(s, kind, sql, params, cur)
            lease = s.lease
            if lease is None:
                if self._autocommit is False:  # (its BEGIN was traced when it "opened")
                    lease = self._begin(s, None)
                elif (
                    implicit
                    and kind in (_sql.DML, _sql.INSERT)
                    and self._isolation_level is not None
                    and self._autocommit == LEGACY_TRANSACTION_CONTROL
                ):
                    lease = self._begin(s, "BEGIN " + self._isolation_level)
                elif kind == _sql.NO_TRANSACTION or kind == _sql.WRITER_READ:
                    side = outside if kind == _sql.NO_TRANSACTION else on_writer
                    work = (self, cur, sql, params, many and kind == _sql.WRITER_READ, s)
                    done: Outcome = side(self._engine, self._timeout, s, run_statement, work)
                    return done
            elif s.reading and kind != _sql.READ and kind != _sql.WRITER_READ:
                # (readers refuse writes themselves; with readers=0 the "reader" is the lane)
                raise sqlite3.OperationalError("attempt to write a readonly database")
            args = (self, cur, sql, params, many, s)
            if lease is not None:
                try:
                    out: Outcome = lease.run(run_statement, args, sql, None)
                except BaseException:
                    if s.lease is lease and not lease.in_transaction:
                        self._end(s, commit=False)  # SQLite ended it (ON CONFLICT ROLLBACK ...)
                    raise
            elif kind == _sql.READ:
                out = self._engine.read(run_statement, args, self._timeout, None, sql)
            else:
                out = self._write(args, sql)
        except Error as exc:
            raise translate(exc) from exc
        if not many:
            if out.lastrowid is not None and (
                (kind == _sql.INSERT and out.rowcount > 0)
                or (kind == _sql.WRITE and _sql.inserts(sql))  # (WITH … INSERT: rowcount -1)
            ):
                s.lastrowid = out.lastrowid
            cur.lastrowid = s.lastrowid if s.lastrowid is not None else 0
        return out

    def _write(self, args: tuple[Any, ...], sql: str) -> Outcome:
        """A write outside the thread's transaction: at FULL (and for executemany) a lane job,
        group-committed (the writer thread commits those waiting under one fsync: 8.5k vs
        6k/s on 6 threads); else run here, committed by SQLite as it ends (``run_alone``: no
        hop to the writer thread, no BEGIN and COMMIT around it)."""
        if self._fsyncs or args[4]:
            out: Outcome = self._engine.write(run_statement, args, self._timeout, None, sql)
            return out
        lease = self._engine.lease(self._timeout, "the write", args[-1])
        try:
            out = lease.run_alone(run_statement, args, sql, None)
        finally:
            lease.release()
        return out

    def _control(self, s: Session, kind: int, sql: str, params: Any, cur: Cursor) -> Outcome:
        """BEGIN, COMMIT, ROLLBACK and savepoints: the calling thread's session."""
        check_statement(sql)
        lease = s.lease
        if kind == _sql.BEGIN:
            if lease is not None:
                raise sqlite3.OperationalError("cannot start a transaction within a transaction")
            self._begin(s, sql)
            s.explicit = True
            return EMPTY
        if kind == _sql.COMMIT or kind == _sql.ROLLBACK:
            if lease is None:
                verb = "commit" if kind == _sql.COMMIT else "rollback"
                raise sqlite3.OperationalError(f"cannot {verb} - no transaction is active")
            self._end(s, commit=kind == _sql.COMMIT, text=sql)
            return EMPTY
        name = _sql.savepoint_name(sql)
        if lease is None:
            if kind != _sql.SAVEPOINT:
                raise sqlite3.OperationalError(f"no such savepoint: {name}")
            lease = self._begin(s, None)
            if self._autocommit is not False:  # (there a transaction is always open)
                s.savepoints = []
                s.explicit = True
            try:
                return self._control(s, kind, sql, params, cur)
            except BaseException:
                self._end(s, commit=False)  # (the SAVEPOINT failed: nothing was begun)
                raise
        out: Outcome = lease.run(run_statement, (self, cur, sql, params, False, s), sql, None)
        marks = s.savepoints
        if marks is not None:
            if kind == _sql.SAVEPOINT:
                marks.append(name)
            elif name in marks:
                i = len(marks) - 1 - marks[::-1].index(name)
                del marks[i if kind == _sql.RELEASE else i + 1 :]
                if not marks and kind == _sql.RELEASE:
                    self._end(s, commit=True)
        return out

    def _begin(self, s: Session, text: str | None) -> Any:
        """Open the calling thread's transaction: take the write lane, ``BEGIN IMMEDIATE``,
        or with ``read_only`` a snapshot on a reader (``text``: the statement sqlite3 would
        have run, for a trace callback)."""
        if text is not None:
            self._traced(text)
        if s.read_only:
            return begin_read(self._engine, self._timeout, s)
        return begin_write(self._engine, self._timeout, s)

    def _end(self, s: Session, *, commit: bool, text: str | None = None) -> None:
        """End the calling thread's transaction (if any) and give the lane back."""
        if s.lease is not None:
            self._traced(text or ("COMMIT" if commit else "ROLLBACK"))
            end(s, commit)

    def _script(self, cur: Cursor, script: str) -> None:
        if not isinstance(script, str):
            raise TypeError(f"executescript() argument must be str, not {type(script).__name__}")
        if "\x00" in script:
            raise ValueError("embedded null character")
        s = self._session()
        if self._autocommit == LEGACY_TRANSACTION_CONTROL and s.lease is not None:
            self._commit(s)
        for statement in split_script(script):
            self._run(cur, statement, (), False, implicit=False)
        cur.description = None
        cur.rowcount = -1

    def _commit(self, s: Session) -> None:
        try:
            self._end(s, commit=True)
        except Error as exc:
            raise translate(exc) from exc

    def _traced(self, text: str) -> None:
        """Show ``text`` to the trace callback, as sqlite3 shows its own BEGIN and COMMIT (an
        exception raised there is dropped, as sqlite3 does)."""
        trace = self._trace
        if trace is not None:
            try:
                trace(text)
            except Exception:
                pass

    def _check_length(self, sql: str) -> None:
        limit = self._sql_limit
        if limit is not None and len(sql.encode("utf-8", "surrogatepass")) > limit:
            raise sqlite3.DataError("query string is too large")


_open: weakref.WeakSet[ConnectionCore] = weakref.WeakSet()  # guarded by _open_lock
_open_lock = threading.Lock()


@atexit.register
def _discard_at_exit() -> None:
    """At exit, roll back the exiting thread's open transactions, as the standard module
    discards them. (Registered after litegate's own exit handler, so it runs before it: the
    engines it closes would otherwise wait for a lane this thread still holds.)"""
    with _open_lock:
        connections = list(_open)
    for s in (getattr(cx._local, "s", None) for cx in connections):
        try:
            end(s, commit=False) if s is not None else None
        except Exception:  # (exiting: nothing left to tell)
            pass


def run_statement(
    conn: sqlite3.Connection,
    cx: ConnectionCore,
    cur: Cursor,
    sql: str,
    params: Any,
    many: bool,
    s: Session,
) -> Outcome:
    """Run ``sql`` on ``conn`` (an engine connection the caller owns now) as ``cx`` would on a
    connection of its own: its functions, text factory, hooks and ``cur``'s row factory.
    ``s``: the calling thread's session (its ``running`` is what ``interrupt()`` reaches)."""
    hooks = cx._shared.hooks
    if hooks.version:
        hooks.sync(conn)
    installed = cx._settings() if cx._custom else None
    if installed is not None:
        install_settings(conn, installed)
    before = conn.total_changes
    s.running = conn
    try:
        raw = conn.executemany(sql, params) if many else conn.execute(sql, params)
        description = raw.description
        try:  # (a fetch that fails -- a row not UTF-8, a converter -- leaves it unfinished)
            rows: list[Any] = raw.fetchall() if description is not None else []
        except BaseException:
            raw.close()  # (reset now: an unfinished write would hold the writer's transaction)
            raise
        if rows and cur.row_factory is not None:
            rows = _made(cur, raw, rows, description)
        # (the writer's last inserted row is this statement's only if it changed rows: the
        # caller takes it for an INSERT, a WITH's included -- _sql.inserts)
        lastrowid = raw.lastrowid if conn.total_changes != before else None
        return Outcome(rows, description, raw.rowcount, lastrowid)
    finally:
        s.running = None
        if installed is not None:
            remove_settings(conn, installed)
        changes = conn.total_changes - before
        if changes:
            cx._count_changes(changes)


def run_read(
    conn: sqlite3.Connection, cur: Cursor, sql: str, params: Any, s: Session, hooks: Hooks
) -> Outcome:
    """:func:`run_statement` for a read outside a transaction, on a reader, by a connection
    with no hooks or text factory of its own (``_run`` checks): nothing changes."""
    if hooks.version:
        hooks.sync(conn)
    s.running = conn
    try:
        raw = conn.execute(sql, params)
        try:
            rows: list[Any] = raw.fetchall()
        except BaseException:
            raw.close()  # (as run_statement's)
            raise
    finally:
        s.running = None
    if rows and cur.row_factory is not None:
        rows = _made(cur, raw, rows, raw.description)
    return Outcome(rows, raw.description, raw.rowcount, None)


def _made(cur: Cursor, raw: sqlite3.Cursor, rows: list[Any], description: Any) -> list[Any]:
    """``rows`` made by ``cur``'s row factory."""
    factory = cur.row_factory
    if isinstance(factory, type) and issubclass(factory, sqlite3.Row):
        return [factory(raw, row) for row in rows]
    cur.description = description
    return [factory(cur, row) for row in rows]


class Cursor:
    """A ``sqlite3.Cursor`` of a :class:`~litegate.sqlite3.Connection`."""

    __slots__ = (
        "__weakref__",
        "_at",
        "_closed",
        "_connection",
        "_rows",
        "arraysize",
        "description",
        "lastrowid",
        "row_factory",
        "rowcount",
    )

    def __init__(self, connection: ConnectionCore, /) -> None:
        if not isinstance(connection, ConnectionCore):
            raise TypeError(
                "Cursor() argument must be a litegate.sqlite3.Connection, not "
                f"{type(connection).__name__}"
            )
        self._connection = connection
        self.arraysize = 1
        self.row_factory: Any = connection.row_factory
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self._rows: list[Any] = []
        self._at = 0
        self._closed = False

    def _ok(self) -> ConnectionCore:
        """The connection, if this cursor and it are open (the hot path of :meth:`_check`)."""
        try:
            if not self._closed:
                cx = self._connection
                if cx._closed is False:
                    return cx
        except AttributeError:  # (__init__ never ran)
            pass
        return self._check()

    def _check(self) -> ConnectionCore:
        if getattr(self, "_connection", None) is None:
            raise sqlite3.ProgrammingError("Base Cursor.__init__ not called.")
        if self._closed:
            raise sqlite3.ProgrammingError("Cannot operate on a closed cursor.")
        cx = self._connection
        cx._check()
        return cx

    @property
    def connection(self) -> ConnectionCore:
        return self._connection

    def _take(self, out: Outcome) -> None:
        self.description = out.description
        self._rows = out.rows
        self._at = 0
        self.rowcount = out.rowcount

    def execute(self, sql: str, parameters: Any = (), /) -> Self:
        """Run one statement (see :meth:`Connection.execute` for where it runs)."""
        cx = self._ok()
        try:
            out = cx._run(self, sql, parameters, False)
        except BaseException:
            self._take(EMPTY)
            raise
        self.description = out.description  # (_take inlined: every statement runs it)
        self._rows = out.rows
        self._at = 0
        self.rowcount = out.rowcount
        return self

    def executemany(self, sql: str, seq_of_parameters: Iterable[Any], /) -> Self:
        """Run one DML statement once for each parameter set."""
        cx = self._ok()
        try:
            out = cx._run(self, sql, seq_of_parameters, True)
        except BaseException:
            self._take(EMPTY)
            raise
        self._take(out)
        return self

    def executescript(self, sql_script: str, /) -> Self:
        """Run a script, statement by statement (transaction control statements included)."""
        cx = self._check()
        self._take(EMPTY)
        cx._script(self, sql_script)
        return self

    def fetchone(self) -> Any:
        self._ok()
        at = self._at
        rows = self._rows
        if at >= len(rows):
            return None
        self._at = at + 1
        return rows[at]

    def fetchmany(self, size: int | None = None) -> list[Any]:
        self._check()
        n = self.arraysize if size is None else size
        if not isinstance(n, int):
            raise TypeError(f"fetchmany() size must be an int, not {type(n).__name__}")
        at = self._at
        if n < 0:
            n = len(self._rows) - at
        out = self._rows[at : at + n]
        self._at = at + len(out)
        return out

    def fetchall(self) -> list[Any]:
        self._ok()
        at = self._at
        out = self._rows[at:] if at else list(self._rows)
        self._at = len(self._rows)
        return out

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        self._ok()
        at = self._at
        rows = self._rows
        if at >= len(rows):
            raise StopIteration
        self._at = at + 1
        return rows[at]

    def close(self) -> None:
        """Close the cursor (it holds no connection; its rows are dropped)."""
        if getattr(self, "_connection", None) is None:
            raise sqlite3.ProgrammingError("Base Cursor.__init__ not called.")
        self._closed = True
        self._rows = []

    def setinputsizes(self, sizes: object, /) -> None:
        """Does nothing (DB-API)."""

    def setoutputsize(self, size: object, column: object = None, /) -> None:
        """Does nothing (DB-API)."""
