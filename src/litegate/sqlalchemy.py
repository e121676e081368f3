"""SQLAlchemy on litegate: ``create_engine("sqlite+litegate:///app.db")``.

The dialect is SQLAlchemy's pysqlite dialect on :mod:`litegate.sqlite3`, so every connection
of the engine shares one litegate engine (one write lane with group commit, one read pool) and
``database is locked`` does not happen between the threads of the process. It differs from
``sqlite://`` in two ways:

- **A transaction is a write transaction from its first statement** (``BEGIN IMMEDIATE``, the
  choice Rails 8 made for SQLite): a Session's read-modify-write never loses an update and
  never fails with a busy snapshot, and its reads see its writes. While it runs, the other
  sessions' writes wait for it (at most ``timeout``, 5 s by default).
- **A read-only transaction runs on a reader, in parallel**: give the execution option
  ``litegate_read_only=True`` (``Session(bind=engine.execution_options(litegate_read_only=True))``
  or ``session.connection(execution_options={"litegate_read_only": True})`` before the first
  query); its statements see one snapshot and a write in it fails.

The pool is :class:`HandlePool`: a ``litegate.sqlite3`` connection is a handle on the shared
engine (no SQLite connection of its own), so the pool never waits for one.

``create_async_engine("sqlite+litegate_async:///app.db")`` is the same dialect on
:mod:`litegate.aio` (:class:`LitegateAsyncDialect`, pool :class:`AsyncHandlePool`), with the
same two rules. A transaction belongs to the asyncio task that began it (SQLAlchemy's asyncio
layer runs a session's statements in the task that awaits them): a session whose statements run
in one task, or in tasks it starts while its transaction is open, is one transaction. One begun
in a child task -- ``asyncio.wait_for`` runs its awaitable in one on Python 3.11 -- is rolled
back when that task ends, with a ``ResourceWarning``.

Requires the extra ``litegate[sqlalchemy]``.
"""

from __future__ import annotations

import sqlite3 as stdlib_sqlite3
from types import ModuleType
from typing import Any, NoReturn

from sqlalchemy import pool, util
from sqlalchemy.connectors.asyncio import (
    AsyncAdapt_dbapi_connection,
    AsyncAdapt_dbapi_cursor,
    AsyncAdapt_dbapi_module,
    AsyncAdapt_dbapi_ss_cursor,
    AsyncAdapt_terminate,
)
from sqlalchemy.dialects.sqlite.base import SQLiteExecutionContext
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine import URL
from sqlalchemy.engine.characteristics import ConnectionCharacteristic

from . import sqlite3 as _dbapi
from ._version import __version__

try:
    from sqlalchemy.util import await_
except ImportError:  # (SQLAlchemy 2.0's name for it)
    from sqlalchemy.util import await_only as await_

__all__ = ("AsyncHandlePool", "HandlePool", "LitegateAsyncDialect", "LitegateDialect")


class HandlePool(pool.QueuePool):
    """A QueuePool of ``litegate.sqlite3`` handles that never makes a checkout wait: past
    ``pool_size`` idle handles, extra ones are opened (cheap: the engine is shared) and closed
    when given back."""

    def __init__(self, creator: Any, pool_size: int = 16, max_overflow: int = -1, **kw: Any):
        super().__init__(creator, pool_size=pool_size, max_overflow=max_overflow, **kw)


class _ReadOnly(ConnectionCharacteristic):
    """The ``litegate_read_only`` execution option: the handle's next transactions are
    snapshots on a reader."""

    transactional = True

    def reset_characteristic(self, dialect: Any, dbapi_conn: Any) -> None:
        dbapi_conn.read_only = False

    def set_characteristic(self, dialect: Any, dbapi_conn: Any, value: Any) -> None:
        dbapi_conn.read_only = bool(value)

    def get_characteristic(self, dialect: Any, dbapi_conn: Any) -> Any:
        return dbapi_conn.read_only


class LitegateDialect(SQLiteDialect_pysqlite):
    """``sqlite+litegate://``: the pysqlite dialect on :mod:`litegate.sqlite3`."""

    driver = "litegate"
    supports_statement_cache = True
    connection_characteristics = SQLiteDialect_pysqlite.connection_characteristics.union(
        {"litegate_read_only": _ReadOnly()}
    )

    @classmethod
    def import_dbapi(cls) -> Any:
        return _dbapi

    @classmethod
    def get_pool_class(cls, url: URL) -> type[pool.Pool]:
        if cls._is_url_file_db(url):
            return HandlePool
        # An in-memory database is private to one connection: one handle, shared by every
        # thread (safe: each thread's transaction is its own).
        return pool.StaticPool

    def on_connect(self) -> Any:
        functions = super().on_connect()

        def connect(dbapi_conn: Any) -> None:
            dbapi_conn.isolation_level = None  # (BEGIN is do_begin's: see below)
            if functions is not None:
                functions(dbapi_conn)

        return connect

    def do_begin(self, dbapi_connection: Any) -> None:
        if dbapi_connection.autocommit is True:  # the AUTOCOMMIT isolation level
            return
        # BEGIN IMMEDIATE whatever it says; with read_only, a snapshot on a reader
        dbapi_connection.execute("BEGIN")

    def set_isolation_level(self, dbapi_connection: Any, level: Any) -> None:
        if level == "AUTOCOMMIT":
            dbapi_connection.autocommit = True
            return
        dbapi_connection.autocommit = _dbapi.LEGACY_TRANSACTION_CONTROL
        dbapi_connection.isolation_level = None
        super(SQLiteDialect_pysqlite, self).set_isolation_level(dbapi_connection, level)

    def get_isolation_level(self, dbapi_connection: Any) -> Any:
        if dbapi_connection.autocommit is True:
            return "AUTOCOMMIT"
        return super().get_isolation_level(dbapi_connection)  # type: ignore[no-untyped-call]

    def detect_autocommit_setting(self, dbapi_conn: Any) -> bool:
        return dbapi_conn.autocommit is True


# ---- sqlite+litegate_async:// -------------------------------------------------------------------


class AsyncHandlePool(pool.AsyncAdaptedQueuePool):
    """:class:`HandlePool` for the asyncio dialect: ``litegate.aio`` connections are handles on
    the shared engine, so a checkout never waits for one."""

    def __init__(self, creator: Any, pool_size: int = 16, max_overflow: int = -1, **kw: Any):
        super().__init__(creator, pool_size=pool_size, max_overflow=max_overflow, **kw)


class _CursorErrors:
    """Opening a cursor on a closed connection is a disconnect (as SQLAlchemy 2.1 has it;
    2.0 lets the driver's ``ValueError`` through)."""

    __slots__ = ()

    def _aenter_cursor(self, cursor: Any) -> Any:
        try:
            return await_(cursor.__aenter__())
        except Exception as error:
            self._adapt_connection._handle_exception(error)  # type: ignore[attr-defined]


class AsyncAdapt_litegate_cursor(_CursorErrors, AsyncAdapt_dbapi_cursor):
    __slots__ = ()


class AsyncAdapt_litegate_ss_cursor(_CursorErrors, AsyncAdapt_dbapi_ss_cursor):
    __slots__ = ()


class AsyncAdapt_litegate_connection(AsyncAdapt_terminate, AsyncAdapt_dbapi_connection):
    """A ``litegate.aio.Connection`` seen as a DBAPI connection from SQLAlchemy's greenlet.

    A pooled handle to a file is one session's at a time (the pool's checkout), so its
    transaction is the handle's (``per_task`` off), not the task's: a session's statements may
    run in tasks of their own (``asyncio.wait_for`` makes one on Python 3.11). The in-memory
    handle is shared by every task (``StaticPool``): there each task's transaction is its own.
    ``autocommit`` is the adapter's own: ``True`` under the AUTOCOMMIT isolation level, when
    ``do_begin`` issues no BEGIN."""

    __slots__ = ("autocommit",)

    _cursor_cls = AsyncAdapt_litegate_cursor
    _ss_cursor_cls = AsyncAdapt_litegate_ss_cursor

    def __init__(self, dbapi: Any, connection: Any) -> None:
        super().__init__(dbapi, connection)
        self.autocommit: Any = _dbapi.LEGACY_TRANSACTION_CONTROL
        # litegate.aio takes concurrent tasks: SQLAlchemy's per-connection lock would make a
        # task whose BEGIN waits for the lane (another task's transaction on StaticPool's
        # shared in-memory handle) block that very transaction's next statement
        self._execute_mutex = _NO_LOCK  # type: ignore[assignment]

    @property
    def isolation_level(self) -> str | None:
        return self._connection.isolation_level  # type: ignore[no-any-return]

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        self._connection.isolation_level = value

    @property
    def read_only(self) -> bool:
        """The calling task's next transactions are snapshots on a reader."""
        return self._connection.read_only  # type: ignore[no-any-return]

    @read_only.setter
    def read_only(self, value: bool) -> None:
        self._connection.read_only = value

    @property
    def in_transaction(self) -> bool:
        return self._connection.in_transaction  # type: ignore[no-any-return]

    def create_function(self, *args: Any, **kw: Any) -> None:
        try:
            await_(self._connection.create_function(*args, **kw))
        except Exception as error:
            self._handle_exception(error)

    def rollback(self) -> None:
        if not self._connection.closed:
            super().rollback()

    def commit(self) -> None:
        if not self._connection.closed:
            super().commit()

    def close(self) -> None:
        try:
            await_(self._connection.close())  # (idempotent)
        except Exception as error:
            self._handle_exception(error)

    def _handle_exception(self, error: Exception) -> NoReturn:
        if isinstance(error, ValueError) and str(error).lower() in _CLOSED:
            raise self.dbapi.OperationalError(str(error)) from error  # (a disconnect)
        super()._handle_exception(error)

    async def _terminate_graceful_close(self) -> None:
        await self._connection.close()

    def _terminate_force_close(self) -> None:
        self._connection.stop()


_CLOSED = ("no active connection", "connection closed")


class _NoLock:
    """An ``async with`` that does nothing (see ``AsyncAdapt_litegate_connection``)."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


_NO_LOCK = _NoLock()


class AsyncAdapt_litegate_dbapi(AsyncAdapt_dbapi_module):
    """``litegate.aio`` as SQLAlchemy's asyncio layer expects a DBAPI module to look."""

    def __init__(self, aio: ModuleType) -> None:
        self.driver = self.aio = aio
        self.dbapi_module = stdlib_sqlite3  # (its exceptions: SQLAlchemy 2.1 looks there)
        self.paramstyle = "qmark"
        for name in (
            "DatabaseError",
            "Error",
            "IntegrityError",
            "InterfaceError",
            "NotSupportedError",
            "OperationalError",
            "ProgrammingError",
            "PARSE_COLNAMES",
            "PARSE_DECLTYPES",
            "Binary",
            "sqlite_version",
            "sqlite_version_info",
        ):
            setattr(self, name, getattr(stdlib_sqlite3, name))

    def connect(self, *args: Any, **kw: Any) -> AsyncAdapt_litegate_connection:
        creator_fn = kw.pop("async_creator_fn", None)
        connecting = creator_fn(*args, **kw) if creator_fn else self.aio.connect(*args, **kw)
        connection = await_(connecting)
        database = str(args[0] if args else kw.get("database", ""))
        if database not in ("", ":memory:") and "mode=memory" not in database:
            # (a pooled handle -- get_pool_class's file case, SQLAlchemy's _is_url_file_db --
            # is one session's at a time; StaticPool's one handle is every task's)
            connection.per_task = False
        return AsyncAdapt_litegate_connection(self, connection)


class _AsyncExecutionContext(SQLiteExecutionContext):
    def create_server_side_cursor(self) -> Any:
        return self._dbapi_connection.cursor(server_side=True)


class LitegateAsyncDialect(LitegateDialect):
    """``sqlite+litegate_async://``: :class:`LitegateDialect`'s transactions on
    :mod:`litegate.aio`, for ``create_async_engine``."""

    driver = "litegate_async"
    supports_statement_cache = True
    is_async = True
    has_terminate = True
    supports_server_side_cursors = True
    execution_ctx_cls = _AsyncExecutionContext

    @classmethod
    def import_dbapi(cls) -> Any:
        from . import aio

        return AsyncAdapt_litegate_dbapi(aio)

    @classmethod
    def get_pool_class(cls, url: URL) -> type[pool.Pool]:
        if cls._is_url_file_db(url):
            return AsyncHandlePool
        # An in-memory database is private to one connection: one handle, shared by every
        # task (safe: each task's transaction is its own).
        return pool.StaticPool

    def retrieve_dbapi_version(self, dbapi: Any) -> Any:
        return util.parse_version_string(__version__)

    def is_disconnect(self, e: Any, connection: Any, cursor: Any) -> bool:
        if isinstance(e, stdlib_sqlite3.OperationalError) and str(e).lower() in _CLOSED:
            return True
        return super().is_disconnect(e, connection, cursor)

    def get_driver_connection(self, connection: Any) -> Any:
        return connection.driver_connection  # (the adapter's: the litegate.aio connection)

    def do_terminate(self, dbapi_connection: Any) -> None:
        dbapi_connection.terminate()
