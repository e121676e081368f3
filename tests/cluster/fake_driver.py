"""A stand-in for the dqlite driver's sessions on local SQLite files, with faults on demand.

It gives :class:`litegate._cluster.Link` what the driver's sessions give
(:class:`litegate._cluster.Session`: ``connect``, ``run``, ``closed``, ``in_transaction``,
``close``, ``force_close``) and fails as the driver does: a lost wire session leaves the session
closed and raises; a COMMIT cut off after the Raft apply raises ``AmbiguousCommitError``. Each cluster "database name" is a file in ``root``. Faults:

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

from litegate._cluster import Outcome


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


class FakeDriver:
    """The sessions' factory and the faults (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.down: set[str] = set()
        self.connects: list[str] = []  # seeds connected through, in order
        self.statements = 0  # statements sent (BEGIN/COMMIT included)
        self.sent: list[str] = []  # their texts
        self.sent_on: list[tuple[str, str]] = []  # (text, the name of the thread it came from)
        self._lock = threading.Lock()
        self._faults: list[list[Any]] = []  # [kind, match, times left]
        self.live: list[FakeSession] = []
        self.async_opened = 0  # sessions opened for event loops

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

    def open_session(
        self,
        seed: str,
        name: str,
        *,
        timeout: float,
        busy_timeout: float,
        row_factory: Any,
    ) -> FakeSession:
        """(``litegate._cluster.OpenSession``)"""
        session = FakeSession(self, seed, self.root / f"{name}.db", busy_timeout, row_factory)
        with self._lock:
            self.live.append(session)
        return session

    def open_async_session(
        self,
        seed: str,
        name: str,
        *,
        timeout: float,
        busy_timeout: float,
        row_factory: Any,
    ) -> FakeAsyncSession:
        """(``litegate._cluster.OpenAsyncSession``: the same session, awaited)"""
        session = self.open_session(
            seed, name, timeout=timeout, busy_timeout=busy_timeout, row_factory=row_factory
        )
        self.async_opened += 1
        return FakeAsyncSession(session)

    def kill_all(self) -> None:
        """Every open session dies (a leader's crash)."""
        with self._lock:
            live = list(self.live)
        for session in live:
            session.force_close()


class FakeSession:
    def __init__(
        self, driver: FakeDriver, address: str, path: Path, busy: float, row_factory: Any
    ) -> None:
        self._driver = driver
        self.address = address
        self._path = path
        self._busy = busy
        self._row_factory = row_factory
        self._db: sqlite3.Connection | None = None
        self.closed = False
        self._lock = threading.Lock()

    def connect(self) -> None:
        if self.address in self._driver.down:
            self.closed = True
            raise OperationalError(f"Failed to connect: {self.address} refused the connection")
        db = sqlite3.connect(
            self._path, isolation_level=None, check_same_thread=False, timeout=self._busy
        )
        db.execute("PRAGMA journal_mode=WAL")
        db.row_factory = self._row_factory
        self._db = db
        self._driver.connects.append(self.address)

    @property
    def in_transaction(self) -> bool:
        db = self._db
        return db is not None and db.in_transaction

    def _die(self) -> sqlite3.Connection | None:
        db, self._db = self._db, None
        self.closed = True
        return db

    def force_close(self) -> None:
        with self._lock:
            db = self._die()
        if db is not None:
            db.close()  # (SQLite rolls back what was open, as the cluster does)

    def close(self) -> None:
        self.force_close()

    def run(self, sql: str, params: Any, many: bool) -> Outcome:
        driver = self._driver
        with self._lock:
            db = self._db
            if db is None or self.closed:
                raise OperationalError("Connection is closed")
            driver.statements += 1
            driver.sent.append(sql)
            driver.sent_on.append((sql, threading.current_thread().name))
            fault = driver._fault(sql)
            if fault == "lost":
                self._die()
                db.close()
                raise OperationalError("Connection reset by peer")
            try:
                cur = db.executemany(sql, params) if many else db.execute(sql, params)
                out = Outcome(cur.description, cur.fetchall(), cur.rowcount, cur.lastrowid)
            except sqlite3.IntegrityError as exc:
                raise IntegrityError(str(exc), code=exc.sqlite_errorcode) from exc
            except sqlite3.Error as exc:
                raise OperationalError(str(exc), code=exc.sqlite_errorcode) from exc
            if fault == "ambiguous":
                self._die()
                db.close()
                raise AmbiguousCommitError("leadership lost during COMMIT")
            return out


class FakeAsyncSession:
    """A :class:`FakeSession` behind coroutines (its SQLite calls are quick)."""

    def __init__(self, session: FakeSession) -> None:
        self._session = session

    @property
    def closed(self) -> bool:
        return self._session.closed

    @property
    def in_transaction(self) -> bool:
        return self._session.in_transaction

    async def connect(self) -> None:
        self._session.connect()

    async def run(self, sql: str, params: Any, many: bool) -> Outcome:
        return self._session.run(sql, params, many)

    async def close(self) -> None:
        self._session.close()

    def force_close(self) -> None:
        self._session.force_close()
