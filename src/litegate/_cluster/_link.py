"""One connection to a dqlite cluster's leader, as litegate's statement functions see a
``sqlite3.Connection``.

A :class:`Link` wraps a :class:`Session` -- the driver's (``dqlitedbapi``) asyncio connection,
run by :class:`~._driver.DriverSession` on a private event loop of the calling thread's. It:

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
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple, Protocol, cast

from .._errors import Misuse, Refused, Unavailable
from ._url import ClusterAddress

__all__ = (
    "LEADER_CODES",
    "Link",
    "LinkLost",
    "AsyncSession",
    "OpenAsyncSession",
    "OpenSession",
    "Outcome",
    "SeedTurns",
    "Session",
    "classify",
    "replayed",
    "refusal",
    "refuse",
    "translate",
)


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


class Outcome(NamedTuple):
    """What a statement gave: its rows read in full (dqlite sends them all at once)."""

    description: Any
    rows: list[Any]
    rowcount: int
    lastrowid: int | None


NOTHING = Outcome(None, [], -1, None)  # (a cursor before its first statement; shared: rows is
# never appended to)


class Session(Protocol):
    """One wire session to the leader, as :class:`Link` uses it (the driver's, run by
    :class:`DriverSession`; the tests' stand-in). Used by one thread at a time."""

    @property
    def closed(self) -> bool: ...

    @property
    def in_transaction(self) -> bool: ...

    def connect(self) -> None:
        """Open the wire session now (a dead seed fails here)."""

    def run(self, sql: str, params: Any, many: bool) -> Outcome: ...

    def close(self) -> None: ...

    def force_close(self) -> None:
        """Drop the socket without a word to the server. Never raises."""


OpenSession = Callable[..., Session]
"""``open_session(seed, name, *, timeout, busy_timeout, row_factory)``."""


class AsyncSession(Protocol):
    """One wire session to the leader on the running loop (the driver's, or a stand-in)."""

    @property
    def closed(self) -> bool: ...

    @property
    def in_transaction(self) -> bool: ...

    async def connect(self) -> None: ...

    async def run(self, sql: str, params: Any, many: bool) -> Outcome: ...

    async def close(self) -> None: ...

    def force_close(self) -> None:
        """Drop the socket now; from any thread; never raises."""


OpenAsyncSession = Callable[..., AsyncSession]
"""``open_async_session(seed, name, *, timeout, busy_timeout, row_factory)``."""


def classify(exc: Exception, closed: bool, commit: bool) -> BaseException:
    """What a driver error means: :class:`LinkLost` (``ambiguous`` for a COMMIT) when the
    session is gone (``closed`` after it) or its node stopped leading, else the standard
    module's error (:func:`translate`)."""
    code = getattr(exc, "code", None)
    if type(exc).__name__ == "AmbiguousCommitError" or (commit and code in LEADERSHIP_LOST):
        return LinkLost(f"the leader changed during COMMIT: {exc}", ambiguous=True)
    if closed or code in LEADER_CODES:
        return LinkLost(f"the connection to the leader was lost: {exc}", ambiguous=commit)
    return translate(exc)


class SeedTurns:
    """The seeds to try, round after round, until ``deadline``: each round starts at the one
    that worked last; between rounds a pause that doubles (50 ms to 0.5 s: an election takes
    seconds); the reasons each failed, for :class:`~litegate.Unavailable`."""

    def __init__(self, address: ClusterAddress, first: int, deadline: float) -> None:
        self._address = address
        self._first = first
        self._deadline = deadline
        self._errors: dict[str, str] = {}
        self._pause = 0.05

    def round(self) -> Iterator[tuple[int, str, float]]:
        """(index, seed, seconds left) for each seed of a round, while time is left."""
        seeds = self._address.seeds
        for i in range(len(seeds)):
            at = (self._first + i) % len(seeds)
            left = self._deadline - time.monotonic()
            if left <= 0:
                return
            yield at, seeds[at], left

    def failed(self, seed: str, exc: BaseException) -> None:
        self._errors[seed] = f"{type(exc).__name__}: {exc}"

    def pause(self) -> float:
        """The pause before the next round. :raises Unavailable: no time is left for one"""
        pause = self._pause
        if time.monotonic() + pause >= self._deadline:
            reasons = "; ".join(f"{s}: {e}" for s, e in self._errors.items()) or "no time left"
            raise Unavailable(f"no leader of {self._address} could be reached in time ({reasons})")
        self._pause = min(pause * 2, 0.5)
        return pause


class _Cursor:
    """A statement's outcome as a ``sqlite3.Cursor`` shows it (its rows already here), and a
    way to run the next on the link."""

    __slots__ = ("_at", "_link", "_out")

    def __init__(self, link: Link | None, out: Outcome = NOTHING) -> None:
        self._link = link
        self._out = out
        self._at = 0

    def _live(self) -> Link:
        if self._link is None:
            raise Misuse("a replayed statement's cursor runs nothing more")
        return self._link

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Cursor:
        refuse(sql)
        self._out, self._at = self._live().run(sql, params, False), 0
        return self

    def executemany(self, sql: str, seq: Iterable[Sequence[Any]]) -> _Cursor:
        refuse(sql)
        self._out, self._at = self._live().run(sql, list(seq), True), 0
        return self

    def fetchone(self) -> Any:
        rows = self._out.rows
        if self._at >= len(rows):
            return None
        self._at += 1
        return rows[self._at - 1]

    def fetchmany(self, size: int = 1) -> list[Any]:
        rows = self._out.rows[self._at : self._at + max(size, 0)]
        self._at += len(rows)
        return rows

    def fetchall(self) -> list[Any]:
        rows = self._out.rows[self._at :]
        self._at = len(self._out.rows)
        return rows

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())

    def close(self) -> None:
        self._out, self._at = NOTHING, 0

    @property
    def description(self) -> Any:
        return self._out.description

    @property
    def rowcount(self) -> int:
        return self._out.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._out.lastrowid


class _Replay:
    """A connection-like object whose one statement has already run: for a statement function
    (``run_query``, ``fetch``) given its outcome from an asyncio session."""

    __slots__ = ("_out", "_sql")

    def __init__(self, sql: str, out: Outcome) -> None:
        self._sql = sql
        self._out = out

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Cursor:
        if sql != self._sql:
            raise Misuse("a replayed connection runs only the statement it was given")
        return _Cursor(None, self._out)


def replayed(sql: str, out: Outcome) -> sqlite3.Connection:
    """A stand-in connection on which ``execute(sql)`` gives ``out`` (see :class:`_Replay`)."""
    return cast(sqlite3.Connection, _Replay(sql, out))


class Link:
    """A connection to the cluster's leader (see the module docstring)."""

    def __init__(
        self,
        open_session: OpenSession,
        address: ClusterAddress,
        *,
        rpc_timeout: float,
        busy_timeout: float,
        row_factory: Callable[..., Any] | None,
        on_open: Callable[[Link], None] | None = None,
    ) -> None:
        self._open_session = open_session
        self._address = address
        self._rpc_timeout = rpc_timeout
        self._busy_timeout = busy_timeout
        self._row_factory = row_factory
        self._on_open = on_open
        self._conn: Session | None = None
        self._next_seed = 0  # the seed to try first (the last one that worked)
        self.total_changes = 0  # rows changed through it (sqlite3's attribute)

    @property
    def is_open(self) -> bool:
        conn = self._conn
        return conn is not None and not conn.closed

    @property
    def in_transaction(self) -> bool:
        conn = self._conn
        return conn is not None and not conn.closed and conn.in_transaction

    def open(self, deadline: float) -> None:
        """Connect through the seeds in turn until one leads to the leader, or ``deadline``
        (``time.monotonic()``) passes: :class:`~litegate.Unavailable`."""
        if self.is_open:
            return
        self.drop()
        turns = SeedTurns(self._address, self._next_seed, deadline)
        while True:
            for at, seed, left in turns.round():
                conn: Session | None = None
                try:
                    conn = self._open_session(
                        seed,
                        self._address.name,
                        timeout=max(min(self._rpc_timeout, left), 0.05),
                        busy_timeout=self._busy_timeout,
                        row_factory=self._row_factory,
                    )
                    conn.connect()
                except Exception as exc:  # (each seed's reason is reported)
                    if conn is not None:
                        conn.force_close()
                    turns.failed(seed, exc)
                    continue
                self._conn = conn
                self._next_seed = at
                if self._on_open is not None:
                    self._on_open(self)
                return
            time.sleep(turns.pause())  # (an election takes seconds: no busy loop)

    def drop(self) -> None:
        """Close the connection (a lost one, or at the end). Never raises."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.force_close()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # (it is being discarded)
                conn.force_close()

    def _live(self) -> Session:
        conn = self._conn
        if conn is None or conn.closed:
            raise LinkLost("the connection to the leader is closed")
        return conn

    def run(self, sql: str, params: Any, many: bool, *, commit: bool = False) -> Outcome:
        """One statement, its errors translated (see the module docstring)."""
        conn = self._live()
        try:
            out = conn.run(sql, params, many)
        except Exception as exc:
            raise self._translated(exc, commit=commit) from exc
        if out.rowcount > 0:
            self.total_changes += out.rowcount
        return out

    def _translated(self, exc: Exception, *, commit: bool) -> BaseException:
        conn = self._conn
        error = classify(exc, conn is None or conn.closed, commit)
        if isinstance(error, LinkLost):
            self.drop()
        return error

    # ---- what the statement functions use (sqlite3.Connection's names) -------------------------

    def cursor(self) -> _Cursor:
        self._live()
        return _Cursor(self)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Cursor:
        if "user_version" in sql and (m := _USER_VERSION.fullmatch(sql)) is not None:
            return self._user_version(m.group(1) or m.group(2))
        return self.cursor().execute(sql, params)

    def executemany(self, sql: str, seq: Iterable[Sequence[Any]]) -> _Cursor:
        return self.cursor().executemany(sql, seq)

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
        self.run(sql, (), False)

    def commit(self) -> None:
        """``COMMIT``: :class:`LinkLost` with ``ambiguous`` set when the connection died or the
        leadership was lost while it was under way (it may have been applied)."""
        self.run("COMMIT", (), False, commit=True)

    def rollback(self) -> None:
        """``ROLLBACK`` if a transaction is open; a lost link is simply dropped (the cluster
        ends the transaction of a closed session). Never raises."""
        conn = self._conn
        if conn is None or conn.closed or not conn.in_transaction:
            return
        try:
            conn.run("ROLLBACK", (), False)
        except Exception:  # (the session is dropped: the cluster rolls back)
            self.drop()
