"""A stand-in for the ``dqlitedbapi`` driver on local SQLite files, with faults on demand.

It has the driver's surface that :class:`litegate._cluster.Link` uses (``connect`` with the
driver's keywords, ``Connection.connect/execute/cursor/close/force_close_transport``,
``closed``, ``in_transaction``, ``row_factory``) and the driver's way of failing: a lost wire
session leaves the connection closed and raises; a COMMIT cut off after the Raft apply raises
``AmbiguousCommitError``. Each cluster "database name" is a file in ``root``. Faults:

- ``down``: seed addresses that refuse connections;
- ``fail(kind, match, times)``: the next ``times`` statements whose text contains ``match``
  fail: ``"lost"`` (the session dies before the statement runs: nothing of it happens; for a
  COMMIT the client cannot tell that), ``"ambiguous"`` (a COMMIT that *did* commit, then the
  leadership was lost).

The cluster engine's logic (group commit, replay, failover, outcomes) is tested on it on every
Python; tests/dqlite/ runs the same engine on a real cluster.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any


class Error(Exception):
    pass


class DatabaseError(Error):
    pass


class OperationalError(DatabaseError):
    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class IntegrityError(DatabaseError):
    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class AmbiguousCommitError(OperationalError):
    pass


for _cls in (Error, DatabaseError, OperationalError, IntegrityError, AmbiguousCommitError):
    _cls.__module__ = "dqlitedbapi.exceptions"  # (what the engine's translation recognises)

Row = sqlite3.Row  # (the driver's own Row takes its cursors; this stand-in's are sqlite3's)


class FakeDriver:
    """The module-like driver object (see the module docstring)."""

    Row = sqlite3.Row

    def __init__(self, root: Path) -> None:
        self.root = root
        self.down: set[str] = set()
        self.connects: list[str] = []  # seeds connected through, in order
        self.statements = 0  # statements sent (BEGIN/COMMIT included)
        self._lock = threading.Lock()
        self._faults: list[list[Any]] = []  # [kind, match, times left]
        self.live: list[FakeConnection] = []

    def fail(self, kind: str, match: str, times: int = 1) -> None:
        with self._lock:
            self._faults.append([kind, match, times])

    def _fault(self, sql: str) -> str | None:
        with self._lock:
            for f in self._faults:
                if f[1] in sql and f[2] > 0:
                    f[2] -= 1
                    return str(f[0])
        return None

    def connect(
        self,
        address: str,
        *,
        database: str = "default",
        timeout: float = 10.0,
        busy_timeout: float = 5.0,
        check_same_thread: bool = True,
    ) -> FakeConnection:
        conn = FakeConnection(self, address, self.root / f"{database}.db", busy_timeout)
        with self._lock:
            self.live.append(conn)
        return conn

    def kill_all(self) -> None:
        """Every open session dies (a leader's crash)."""
        with self._lock:
            live = list(self.live)
        for conn in live:
            conn.die()


class FakeCursor:
    def __init__(self, conn: FakeConnection) -> None:
        self._conn = conn
        self._cur: sqlite3.Cursor | None = None

    def execute(self, sql: str, params: Any = ()) -> FakeCursor:
        self._cur = self._conn._run(sql, params)
        return self

    def executemany(self, sql: str, seq: Any) -> FakeCursor:
        self._cur = self._conn._run(sql, seq, many=True)
        return self

    def _live(self) -> sqlite3.Cursor:
        assert self._cur is not None
        return self._cur

    def fetchone(self) -> Any:
        return self._live().fetchone()

    def fetchmany(self, size: int = 1) -> list[Any]:
        return self._live().fetchmany(size)

    def fetchall(self) -> list[Any]:
        return self._live().fetchall()

    def __iter__(self) -> Any:
        return iter(self._live())

    def close(self) -> None:
        if self._cur is not None:
            self._cur.close()

    @property
    def description(self) -> Any:
        return self._live().description

    @property
    def rowcount(self) -> int:
        return self._live().rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._live().lastrowid

    row_factory: Any = None


class FakeConnection:
    def __init__(self, driver: FakeDriver, address: str, path: Path, busy: float) -> None:
        self._driver = driver
        self.address = address
        self._path = path
        self._busy = busy
        self._db: sqlite3.Connection | None = None
        self.closed = False
        self.row_factory: Any = None
        self._lock = threading.Lock()

    def connect(self) -> None:
        if self.address in self._driver.down:
            self.closed = True
            raise OperationalError(f"Failed to connect: {self.address} refused the connection")
        db = sqlite3.connect(
            self._path, isolation_level=None, check_same_thread=False, timeout=self._busy
        )
        db.execute("PRAGMA journal_mode=WAL")
        db.row_factory = self.row_factory
        self._db = db
        self._driver.connects.append(self.address)

    @property
    def in_transaction(self) -> bool:
        return self._db is not None and self._db.in_transaction

    def die(self) -> None:
        with self._lock:
            db, self._db = self._db, None
            self.closed = True
        if db is not None:
            db.close()  # (SQLite rolls back what was open, as the cluster does)

    def _run(self, sql: str, params: Any, many: bool = False) -> sqlite3.Cursor:
        driver = self._driver
        with self._lock:
            db = self._db
            if db is None or self.closed:
                raise OperationalError("Connection is closed")
            driver.statements += 1
            fault = driver._fault(sql)
            if fault in ("lost", "lost_commit"):
                self._db = None
                self.closed = True
                db.close()
                raise OperationalError("Connection reset by peer")
            try:
                cur = db.executemany(sql, params) if many else db.execute(sql, params)
            except sqlite3.IntegrityError as exc:
                raise IntegrityError(str(exc), code=exc.sqlite_errorcode) from exc
            except sqlite3.Error as exc:
                raise OperationalError(str(exc), code=exc.sqlite_errorcode) from exc
            if fault == "ambiguous":
                self._db = None
                self.closed = True
                db.close()
                raise AmbiguousCommitError("leadership lost during COMMIT")
            return cur

    def cursor(self) -> FakeCursor:
        if self.closed:
            raise OperationalError("Connection is closed")
        return FakeCursor(self)

    def execute(self, sql: str, params: Any = ()) -> FakeCursor:
        return self.cursor().execute(sql, params)

    def close(self) -> None:
        self.die()

    def force_close_transport(self) -> None:
        self.die()
