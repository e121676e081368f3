"""litegate's own exceptions.

sqlite3's exceptions (``IntegrityError``, ``OperationalError``, ...) reach callers unchanged;
the conditions litegate itself detects are subclasses of :class:`Error`::

    Error
    ├── Closed            the database was closed (or is closing) when the call was made
    ├── Timeout           a bounded wait ran out (also a builtin ``TimeoutError``)
    │   ├── PoolTimeout   no reader connection became free in time
    │   ├── WriteTimeout  the write lane (queue space or the lane itself) was not had in time
    │   ├── QueryTimeout  a statement ran past its time limit and was interrupted
    │   └── Unavailable   (a dqlite cluster) no leader could be reached in time
    ├── Busy              another process held the file's write lock past the deadline
    ├── RolledBack        a transaction did not commit: SQLite rolled it back, or it was aborted
    ├── OutcomeUnknown    (a dqlite cluster) the connection died during a COMMIT: it may or may
    │                     not have taken effect
    ├── Misuse            the API was used in a way that would deadlock or corrupt state
    │   ├── Refused          a statement that would break the shared engine (a PRAGMA that
    │   │                    changes a connection's state, ATTACH, transaction control)
    │   ├── CrossThreadUse   (litegate.debug) a sqlite3 connection used from another thread
    │   └── ConcurrentUse    (litegate.debug) a shared sqlite3 connection used by two at once
    └── MigrationError    a migration failed; nothing of it was applied

``Refused`` is also a :class:`sqlite3.DatabaseError` (SQLite's authorizer refused the
statement: ``sqlite_errorcode`` is ``SQLITE_AUTH``), as the bare ``not authorized`` it replaces
was. ``CrossThreadUse`` and ``ConcurrentUse`` are raised only by the runtime misuse detector
(:mod:`litegate.debug`, which re-exports them); they are also :class:`sqlite3.ProgrammingError`,
so existing ``except sqlite3.ProgrammingError`` handlers still catch them.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

__all__ = (
    "Busy",
    "Closed",
    "ConcurrentUse",
    "CrossThreadUse",
    "Error",
    "MigrationError",
    "Misuse",
    "OutcomeUnknown",
    "PoolTimeout",
    "Origin",
    "QueryTimeout",
    "Refused",
    "RolledBack",
    "Timeout",
    "Unavailable",
    "WriteTimeout",
)


class Error(Exception):
    """Base class of every exception litegate raises itself."""


class Closed(Error):
    """The database is closed or closing; open a new one with ``litegate.connect``."""


class Timeout(Error, TimeoutError):
    """A bounded wait ran out. Every blocking wait in litegate has a timeout."""


class PoolTimeout(Timeout):
    """No reader connection became free within the timeout."""


class WriteTimeout(Timeout):
    """The write lane (queue space, or exclusive use for a transaction) was not had in time."""


class QueryTimeout(Timeout):
    """A statement ran past its time limit; it was interrupted and its writes rolled back.

    :ivar sql: the statement (or ``None`` for a callable job)
    :ivar time_limit: the limit in seconds
    """

    def __init__(self, message: str, *, sql: str | None = None, time_limit: float | None = None):
        super().__init__(message)
        self.sql = sql
        self.time_limit = time_limit


class Unavailable(Timeout):
    """A dqlite cluster: no node led to a leader within the timeout (a leader election, a
    lost quorum, or every seed address down). Nothing of the call took effect."""


class Busy(Error):
    """Another process held the database's write lock for longer than the busy deadline."""


class RolledBack(Error):
    """A transaction did not commit: SQLite rolled it back (an interrupted or failed statement,
    an ``ON CONFLICT ROLLBACK``, an I/O error) or it was aborted. Nothing of it was committed;
    run it again from the start."""


class OutcomeUnknown(Error):
    """A dqlite cluster: the connection to the leader was lost while a ``COMMIT`` was under way
    (or the leader lost its leadership during it), so the write may or may not have been
    applied. litegate never retries it blindly: check the database (or make the write
    idempotent) before you repeat it."""


class Misuse(Error):
    """The API was used in a way that would deadlock or break isolation."""


class Refused(Misuse, sqlite3.DatabaseError):
    """litegate refused a statement that would break the engine its connections share: a
    PRAGMA that changes a connection's state (``locking_mode``, ``query_only``,
    ``journal_mode``, ``cache_size``, ...), ``ATTACH``/``DETACH``, or ``BEGIN``/``COMMIT``/
    ``ROLLBACK`` on the write lane. Nothing ran; the engine is unaffected. The message says
    what to do instead (usually ``connect(pragmas=...)`` or ``on_connect=``).

    :ivar what: the refused statement, e.g. ``"PRAGMA locking_mode=EXCLUSIVE"``
    """

    def __init__(self, message: str, *, what: str | None = None) -> None:
        super().__init__(message)
        self.what = what


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a connection tracked by :mod:`litegate.debug` was made.

    :ivar thread_name: name of the creating thread
    :ivar thread_id: :func:`threading.get_ident` of the creating thread
    :ivar stack: formatted stack frames, outermost first
    :ivar check_same_thread: the value passed to :func:`sqlite3.connect`
    """

    thread_name: str
    thread_id: int
    stack: tuple[str, ...]
    check_same_thread: bool


class CrossThreadUse(Misuse, sqlite3.ProgrammingError):
    """A connection made with ``check_same_thread=True`` was used from another thread
    (raised by :mod:`litegate.debug`).

    :ivar created: where and in which thread the connection was made
    """

    def __init__(self, message: str, created: Origin) -> None:
        super().__init__(message)
        self.created = created


class ConcurrentUse(Misuse, sqlite3.ProgrammingError):
    """A shared connection was used by two threads at once, or inside another's transaction
    (raised by :mod:`litegate.debug`).

    :ivar created: where and in which thread the connection was made
    :ivar holder: the name of the thread that was using the connection
    """

    def __init__(self, message: str, created: Origin, holder: str) -> None:
        super().__init__(message)
        self.created = created
        self.holder = holder


class MigrationError(Error):
    """A migration failed; the database was left at the version before the failing step."""
