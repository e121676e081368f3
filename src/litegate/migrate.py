"""Schema migrations tracked with ``PRAGMA user_version``.

Steps are SQL scripts or callables given the connection; they run in order, on the write lane,
in one ``BEGIN IMMEDIATE`` transaction: all or nothing. Several worker processes starting at
once serialise on the database's write lock: exactly one applies the steps, the others wait for
it (up to ``busy_timeout``) and find the version already raised::

    from litegate.migrate import migrate

    STEPS = [
        "CREATE TABLE docs(id INTEGER PRIMARY KEY, body TEXT)",
        "ALTER TABLE docs ADD COLUMN status TEXT NOT NULL DEFAULT 'new'",
        lambda conn: conn.execute("UPDATE docs SET status = 'old'"),
    ]
    version = migrate(db, STEPS)          # or: await migrate_async(adb, STEPS)

Never reorder or edit a step that has shipped: append new ones.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._database import AsyncDatabase, Database
from ._errors import MigrationError
from ._migrations import MIGRATION_BUSY_TIMEOUT, Migration
from ._types import DEFAULT, Wait

__all__ = ("Migration", "MigrationError", "current_version", "migrate", "migrate_async")


def migrate(
    db: Database,
    steps: Sequence[Migration],
    *,
    timeout: Wait = DEFAULT,
    busy_timeout: float = MIGRATION_BUSY_TIMEOUT,
) -> int:
    """Apply the steps past the database's version; returns the new version.

    :raises MigrationError: a step failed (nothing of this run was applied) or the database is
        newer than ``steps``
    :raises TypeError: ``steps`` is not a sequence of SQL strings and callables (checked before
        anything runs)
    """
    return db.migrate(steps, timeout=timeout, busy_timeout=busy_timeout)


async def migrate_async(
    db: AsyncDatabase,
    steps: Sequence[Migration],
    *,
    timeout: Wait = DEFAULT,
    busy_timeout: float = MIGRATION_BUSY_TIMEOUT,
) -> int:
    """:func:`migrate` for an :class:`~litegate.AsyncDatabase` (never blocks the loop)."""
    return await db.migrate(steps, timeout=timeout, busy_timeout=busy_timeout)


def current_version(db: Database) -> int:
    """The database's schema version (``PRAGMA user_version``)."""
    return int(db.query_value("PRAGMA user_version"))
