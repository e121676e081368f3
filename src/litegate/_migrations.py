"""Schema migrations tracked with ``PRAGMA user_version``, applied on the write lane."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence

from ._engine import explain_refusal
from ._errors import MigrationError
from ._statements import run_script

__all__ = ("MIGRATION_BUSY_TIMEOUT", "Migration", "apply_migrations")

MIGRATION_BUSY_TIMEOUT = 60.0
"""Seconds a process waits for another one that is applying migrations."""

Migration = str | Callable[[sqlite3.Connection], object]
"""One step: an SQL script, or a callable given the connection (inside the transaction)."""


def apply_migrations(conn: sqlite3.Connection, migrations: Sequence[Migration]) -> tuple[int, int]:
    """Apply the steps after the database's ``user_version``; returns (before, after).

    Runs inside the caller's write transaction (``BEGIN IMMEDIATE``): concurrent processes
    serialise on the write lock, and the later ones find the version already raised.

    :raises MigrationError: a step failed (the caller's transaction is then rolled back, so the
        database keeps the version it had), or the database is newer than ``migrations``
    """
    if isinstance(migrations, str | bytes):
        raise TypeError("migrations must be a sequence of steps, not one string")
    before = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if before > len(migrations):
        raise MigrationError(
            f"the database is at schema version {before}, newer than the {len(migrations)} "
            "migration(s) this code knows; deploy the newer code or restore a matching backup"
        )
    for version in range(before + 1, len(migrations) + 1):
        step = migrations[version - 1]
        try:
            if isinstance(step, str):
                run_script(conn, step)
            elif callable(step):
                step(conn)
            else:
                raise TypeError(f"a migration is an SQL string or a callable, got {step!r}")
        except Exception as exc:
            cause = explain_refusal(exc)  # (on the thread that ran it: a refused PRAGMA, named)
            raise MigrationError(
                f"migration {version} of {len(migrations)} failed: {cause}; nothing was "
                f"applied (the database stays at version {before})"
            ) from cause
        conn.execute(f"PRAGMA user_version = {version}")
    return before, len(migrations)
