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

Requires the extra ``litegate[sqlalchemy]``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import pool
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine import URL
from sqlalchemy.engine.characteristics import ConnectionCharacteristic

from . import sqlite3 as _dbapi

__all__ = ("HandlePool", "LitegateDialect")


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
