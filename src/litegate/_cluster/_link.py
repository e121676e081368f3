"""One connection to a dqlite cluster's leader, as litegate's statement functions see a
``sqlite3.Connection``.

A :class:`Link` wraps a ``dqlitedbapi`` connection (PEP 249; it runs its wire protocol on a
thread of its own and serialises its callers). It:

- opens against the seed addresses in turn (any node answers with the leader; a dead seed is
  skipped), within a deadline: :class:`~litegate.Unavailable` when none leads anywhere;
- refuses, before they are sent, the statements that crash a dqlite node or that the engine
  owns (:func:`refusal`): ``RETURNING``, ``PRAGMA journal_mode=…``, ``ATTACH``/``DETACH``,
  ``BEGIN``/``COMMIT``/``ROLLBACK`` (savepoints are allowed, as on a file);
- turns the driver's SQL errors into the standard module's classes of the same name
  (``except sqlite3.IntegrityError`` works on either backend), and a lost wire session or a
  leader change into :class:`LinkLost`, which the engine answers by reopening.

A link is used by one thread at a time: its owner's (the engine's writer thread, a reader's
borrower). Fields: its owner's.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .._errors import Refused, Unavailable
from ._url import ClusterAddress

__all__ = ("LEADER_CODES", "Link", "LinkLost", "refusal", "refuse", "translate")

# SQLITE_IOERR_NOT_LEADER, SQLITE_IOERR_LEADERSHIP_LOST and their legacy codes (dqlitewire's
# LEADER_ERROR_CODES): the node is no longer the leader -- reopen against the cluster.
LEADER_CODES = frozenset({10 | (40 << 8), 10 | (41 << 8), 10 | (32 << 8), 10 | (33 << 8)})
LEADERSHIP_LOST = frozenset({10 | (41 << 8), 10 | (33 << 8)})  # raised after the Raft apply


_USER_VERSION = re.compile(
    r"\s*PRAGMA\s+(?:main\s*\.\s*)?user_version\s*(?:=\s*(\d+)|\(\s*(\d+)\s*\))?\s*;?\s*", re.I
)
_VERSION_TABLE = "litegate_user_version"


class LinkLost(Exception):
    """The wire session to the leader was lost, or the node stopped leading. The statement
    that raised it did not take effect unless it was a ``COMMIT`` (``during_commit``); the
    link must be reopened."""

    def __init__(self, message: str, *, ambiguous: bool = False) -> None:
        super().__init__(message)
        self.ambiguous = ambiguous


_STRINGS = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?(?:\*/|$)", re.S)
_RETURNING = re.compile(r"\bRETURNING\b", re.I)
_FIRST = re.compile(r"\s*(\w+)")
_JOURNAL = re.compile(r"PRAGMA\s+(?:\w+\s*\.\s*)?journal_mode\s*[=(]", re.I)
_CONTROL = frozenset({"BEGIN", "COMMIT", "END", "ROLLBACK"})  # (SAVEPOINTs are the caller's)
_ROLLBACK_TO = re.compile(r"\s*ROLLBACK\s+(?:TRANSACTION\s+)?TO\b", re.I)


def refusal(sql: str) -> str | None:
    """Why ``sql`` is refused on a cluster (``None``: it may be sent)."""
    bare = _STRINGS.sub("''", sql)
    first = _FIRST.match(bare)
    verb = first.group(1).upper() if first else ""
    if verb in ("ATTACH", "DETACH"):
        return (
            f"{verb} is refused on a dqlite cluster: the attached file would be the node's, "
            "not replicated (dqlite 1.11 fails the next write with a disk I/O error)"
        )
    if verb in _CONTROL and not _ROLLBACK_TO.match(bare):
        return (
            f"{verb} is refused: litegate runs the transactions (use db.transaction(), "
            "tx.savepoint())"
        )
    if _JOURNAL.search(bare):
        return (
            "PRAGMA journal_mode=… is refused on a dqlite cluster: dqlite runs in WAL mode "
            "only, and dqlite 1.11 aborts the leader on a change"
        )
    if _RETURNING.search(bare):
        return (
            "RETURNING is refused on a dqlite cluster: sent through its Python client it "
            "aborts the leader (dqlite 1.11 and 1.18: vfsFileShmLock assertion). Run the "
            "statement, then read the cursor's lastrowid or SELECT the row"
        )
    return None


def refuse(sql: str) -> None:
    """:class:`~litegate.Refused` if :func:`refusal` refuses ``sql``."""
    why = refusal(sql)
    if why is not None:
        raise Refused(why, what=sql.strip()[:80])


_SQLITE_CLASSES: dict[str, type[sqlite3.Error]] = {
    name: getattr(sqlite3, name)
    for name in (
        "IntegrityError",
        "OperationalError",
        "ProgrammingError",
        "DataError",
        "InternalError",
        "NotSupportedError",
        "InterfaceError",
        "DatabaseError",
    )
}


def translate(exc: BaseException) -> BaseException:
    """A driver error as the standard module's class of the same name (its message, its
    ``sqlite_errorcode``); anything else unchanged."""
    for cls in type(exc).__mro__:
        target = _SQLITE_CLASSES.get(cls.__name__)
        if target is not None and cls.__module__.startswith("dqlite"):
            mapped: sqlite3.Error = target(str(exc))
            code = getattr(exc, "code", None)
            if code is not None:
                mapped.sqlite_errorcode = code
            mapped.__cause__ = exc
            return mapped
    return exc


class _Cursor:
    """A driver cursor whose statements are checked, and whose errors are translated, as the
    link's."""

    __slots__ = ("_cur", "_link")

    def __init__(self, link: Link, cur: Any) -> None:
        self._link = link
        self._cur = cur

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Cursor:
        refuse(sql)
        self._link.call(self._cur.execute, sql, params)
        return self

    def executemany(self, sql: str, seq: Iterable[Sequence[Any]]) -> _Cursor:
        refuse(sql)
        self._link.call(self._cur.executemany, sql, seq)
        return self

    def fetchone(self) -> Any:
        return self._cur.fetchone()

    def fetchmany(self, size: int = 1) -> list[Any]:
        rows: list[Any] = self._cur.fetchmany(size)
        return rows

    def fetchall(self) -> list[Any]:
        rows: list[Any] = self._cur.fetchall()
        return rows

    def __iter__(self) -> Any:
        return iter(self._cur)

    def close(self) -> None:
        self._cur.close()

    @property
    def description(self) -> Any:
        return self._cur.description

    @property
    def rowcount(self) -> int:
        n: int = self._cur.rowcount
        return n

    @property
    def lastrowid(self) -> int | None:
        rowid: int | None = self._cur.lastrowid
        return rowid

    @property
    def row_factory(self) -> Any:
        return self._cur.row_factory

    @row_factory.setter
    def row_factory(self, value: Any) -> None:
        self._cur.row_factory = value


class Link:
    """A connection to the cluster's leader (see the module docstring)."""

    def __init__(
        self,
        driver: Any,
        address: ClusterAddress,
        *,
        rpc_timeout: float,
        busy_timeout: float,
        row_factory: Callable[..., Any] | None,
        on_open: Callable[[Link], None] | None = None,
    ) -> None:
        self._driver = driver
        self._address = address
        self._rpc_timeout = rpc_timeout
        self._busy_timeout = busy_timeout
        self._row_factory = row_factory
        self._on_open = on_open
        self._conn: Any = None
        self._next_seed = 0  # the seed to try first (the last one that worked)
        self.opens = 0  # times it (re)opened
        self.total_changes = 0  # rows changed through it (sqlite3's attribute; approximate)

    @property
    def is_open(self) -> bool:
        conn = self._conn
        return conn is not None and not conn.closed

    @property
    def in_transaction(self) -> bool:
        conn = self._conn
        return conn is not None and not conn.closed and bool(conn.in_transaction)

    def open(self, deadline: float) -> None:
        """Connect through the seeds in turn until one leads to the leader, or ``deadline``
        (``time.monotonic()``) passes: :class:`~litegate.Unavailable`."""
        if self.is_open:
            return
        self.drop()
        seeds = self._address.seeds
        errors: dict[str, str] = {}
        pause = 0.05
        while True:
            for i in range(len(seeds)):
                at = (self._next_seed + i) % len(seeds)
                seed = seeds[at]
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    conn = self._driver.connect(
                        seed,
                        database=self._address.name,
                        timeout=max(min(self._rpc_timeout, left), 0.05),
                        busy_timeout=self._busy_timeout,
                        check_same_thread=False,
                    )
                    if self._row_factory is not None:
                        conn.row_factory = self._row_factory
                    conn.connect()  # (the wire session now: a dead seed fails here)
                except Exception as exc:  # (each seed's reason is reported)
                    errors[seed] = f"{type(exc).__name__}: {exc}"
                    continue
                self._conn = conn
                self._next_seed = at
                self.opens += 1
                if self._on_open is not None:
                    self._on_open(self)
                return
            if time.monotonic() + pause >= deadline:
                reasons = "; ".join(f"{s}: {e}" for s, e in errors.items()) or "no time left"
                raise Unavailable(
                    f"no leader of {self._address} could be reached in time ({reasons})"
                )
            time.sleep(pause)  # (an election takes seconds: no busy loop)
            pause = min(pause * 2, 0.5)

    def drop(self) -> None:
        """Close the connection (a lost one, or at the end). Never raises."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.force_close_transport()
            except Exception:  # (it is being discarded)
                pass

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                try:
                    conn.force_close_transport()
                except Exception:  # (it is being discarded)
                    pass

    def _live(self) -> Any:
        conn = self._conn
        if conn is None or conn.closed:
            raise LinkLost("the connection to the leader is closed")
        return conn

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` (a driver call on this link), its errors translated."""
        try:
            return fn(*args)
        except Exception as exc:
            raise self._translated(exc, commit=False) from exc

    def _translated(self, exc: Exception, *, commit: bool) -> BaseException:
        conn = self._conn
        code = getattr(exc, "code", None)
        lost = conn is None or bool(getattr(conn, "closed", True)) or code in LEADER_CODES
        if type(exc).__name__ == "AmbiguousCommitError" or (commit and code in LEADERSHIP_LOST):
            self.drop()
            return LinkLost(f"the leader changed during COMMIT: {exc}", ambiguous=True)
        if lost:
            self.drop()
            return LinkLost(f"the connection to the leader was lost: {exc}", ambiguous=commit)
        return translate(exc)

    # ---- what the statement functions use (sqlite3.Connection's names) -------------------------

    def cursor(self) -> _Cursor:
        return _Cursor(self, self._live().cursor())

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Cursor:
        if "user_version" in sql and (m := _USER_VERSION.fullmatch(sql)) is not None:
            return self._user_version(m.group(1) or m.group(2))
        cur = self.cursor()
        cur.execute(sql, params)
        n = cur.rowcount
        if n > 0:
            self.total_changes += n
        return cur

    def executemany(self, sql: str, seq: Iterable[Sequence[Any]]) -> _Cursor:
        cur = self.cursor()
        cur.executemany(sql, seq)
        n = cur.rowcount
        if n > 0:
            self.total_changes += n
        return cur

    def _user_version(self, value: str | None) -> _Cursor:
        """``PRAGMA user_version`` (migrations keep the schema's version there): dqlite
        refuses to set it ("not an error"), so on a cluster it is kept in a table of its own,
        replicated with the data, and read from there once it exists."""
        if value is not None:
            self.execute(f"CREATE TABLE IF NOT EXISTS {_VERSION_TABLE}(v INTEGER NOT NULL)")
            self.execute(f"DELETE FROM {_VERSION_TABLE}")
            return self.execute(f"INSERT INTO {_VERSION_TABLE}(v) VALUES (?)", (int(value),))
        found = self.execute(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?",
            (_VERSION_TABLE,),
        ).fetchone()[0]
        if found:
            return self.execute(f"SELECT coalesce(max(v), 0) AS user_version FROM {_VERSION_TABLE}")
        return self.execute("SELECT 0 AS user_version")

    # ---- the engine's own transaction control ---------------------------------------------------

    def control(self, sql: str) -> None:
        """``BEGIN IMMEDIATE``, ``SAVEPOINT x``, ``ROLLBACK`` ...: sent as they are."""
        conn = self._live()
        try:
            conn.execute(sql).close()
        except Exception as exc:
            raise self._translated(exc, commit=False) from exc

    def commit(self) -> None:
        """``COMMIT``: :class:`LinkLost` with ``ambiguous`` set when the connection died or the
        leadership was lost while it was under way (it may have been applied)."""
        conn = self._live()
        try:
            conn.execute("COMMIT").close()
        except Exception as exc:
            raise self._translated(exc, commit=True) from exc

    def rollback(self) -> None:
        """``ROLLBACK`` if a transaction is open; a lost link is simply dropped (the cluster
        ends the transaction of a closed session). Never raises."""
        conn = self._conn
        if conn is None or conn.closed or not conn.in_transaction:
            return
        try:
            conn.execute("ROLLBACK").close()
        except Exception:  # (the session is dropped: the cluster rolls back)
            self.drop()
