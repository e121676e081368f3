"""litegate's own exceptions.

sqlite3's exceptions (``IntegrityError``, ``OperationalError``, ...) reach callers unchanged;
the conditions litegate itself detects are subclasses of :class:`Error`::

    Error
    ├── Closed            the database was closed (or is closing) when the call was made
    ├── Timeout           a bounded wait ran out (also a builtin ``TimeoutError``)
    │   ├── PoolTimeout   no reader connection became free in time
    │   ├── WriteTimeout  the write lane (queue space or the lane itself) was not had in time
    │   └── QueryTimeout  a statement ran past its time limit and was interrupted
    ├── Busy              another process held the file's write lock past the deadline
    ├── Misuse            the API was used in a way that would deadlock or corrupt state
    └── MigrationError    a migration failed; nothing of it was applied
"""

from __future__ import annotations

__all__ = (
    "Busy",
    "Closed",
    "Error",
    "MigrationError",
    "Misuse",
    "PoolTimeout",
    "QueryTimeout",
    "Timeout",
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


class Busy(Error):
    """Another process held the database's write lock for longer than the busy deadline."""


class Misuse(Error):
    """The API was used in a way that would deadlock or break isolation."""


class MigrationError(Error):
    """A migration failed; the database was left at the version before the failing step."""
