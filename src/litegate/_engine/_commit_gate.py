"""The commit gate: nothing commits on the writer connection outside the lane's own ``COMMIT``.

When SQLite rolls the lane's transaction back in the middle of a job (``INSERT OR ROLLBACK``,
an interrupt, an I/O error) and the job's function catches the error and carries on, its later
statements would run in autocommit mode: each one committed at once, outside the group commit,
although the job then fails. The authorizer cannot stop them (it runs only when a statement is
prepared, and statements are cached), so the lane installs an SQLite *commit hook* that turns
every commit into a rollback unless the lane opened the gate for its own ``COMMIT``.

The standard ``sqlite3`` module has no ``commit_hook``, so the hook is set through ``ctypes``
on the library the ``_sqlite3`` extension is linked against. The hook is libc's ``strlen`` and
its argument a one-byte flag: ``strlen("")`` is 0 (commit), ``strlen("x")`` is 1 (roll back) --
no Python callback, so a commit costs nothing extra. Where any of this is unavailable (another
Python implementation, a statically linked ``_sqlite3`` that hides the symbols, a layout that
fails the check below), :func:`install` returns ``None`` and the lane keeps its weaker,
detect-after-the-fact check (the job fails with :class:`~litegate.RolledBack`; statements it ran
after the rollback stay committed). :func:`available` tells which.

Shared state: a gate belongs to one writer connection and is opened and closed only by the lane
holder (the lane's one-holder-at-a-time rule is its guard).
"""

from __future__ import annotations

import ctypes
import logging
import sqlite3
import sys
from typing import Any

from .._errors import Misuse, RolledBack

__all__ = ("OPEN", "SHUT", "CommitGate", "available", "install", "is_refused", "refused_error")

logger = logging.getLogger("litegate")

OPEN, SHUT = 0, ord("x")  # the flag's first byte: strlen 0 (commit) or 1 (roll back)
_LIMIT = sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER
_PROBE = 12_345  # a limit value nobody sets: proves the pointer is this connection's


def _load() -> tuple[Any, int, int] | None:
    """The sqlite3 library, the address of ``strlen`` and the offset of the ``sqlite3*`` in a
    ``sqlite3.Connection`` object, or None where that cannot be had."""
    if sys.implementation.name != "cpython" or not hasattr(sqlite3.Connection, "setlimit"):
        return None
    try:
        import _sqlite3

        lib = ctypes.CDLL(_sqlite3.__file__)
        hook = lib.sqlite3_commit_hook
        limit = lib.sqlite3_limit
        strlen = ctypes.cast(ctypes.CDLL(None).strlen, ctypes.c_void_p).value
    except (ImportError, OSError, AttributeError):
        return None
    if not strlen:
        return None
    hook.restype = ctypes.c_void_p
    hook.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
    limit.restype = ctypes.c_int
    limit.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_int)
    # CPython's pysqlite_Connection starts with ``PyObject_HEAD; sqlite3 *db;`` (3.11-3.14).
    return lib, strlen, object.__basicsize__


_LIB = _load()


def available() -> bool:
    """Whether commit gates can be installed in this interpreter."""
    return _LIB is not None


def _db_pointer(conn: sqlite3.Connection) -> int | None:
    """The connection's ``sqlite3*``, checked: a limit set through Python must read back
    through the C API at that address (else None: the object layout is not the known one)."""
    if _LIB is None:
        return None
    lib, _, offset = _LIB
    db = ctypes.c_void_p.from_address(id(conn) + offset).value
    if not db:
        return None
    old = conn.getlimit(_LIMIT)
    try:
        conn.setlimit(_LIMIT, _PROBE)
        if lib.sqlite3_limit(db, _LIMIT, -1) != _PROBE:
            return None
    finally:
        conn.setlimit(_LIMIT, old)
    return int(db)


class CommitGate:
    """Turns every commit on one connection into a rollback, except while the first byte of
    :attr:`flag` is :data:`OPEN` (:class:`~._connection.TxnGuard` writes it)."""

    __slots__ = ("_conn", "_view", "flag")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        # A bytearray whose buffer is exported (so it cannot move or be resized) and whose
        # address is the hook's argument: a store into it is one C-level byte write.
        self.flag = bytearray((SHUT, 0))
        self._view = ctypes.c_char.from_buffer(self.flag)

    @property
    def address(self) -> int:
        return ctypes.addressof(self._view)

    def open(self) -> None:
        """Let the next commit through (the lane's own COMMIT)."""
        self.flag[0] = OPEN

    def close(self) -> None:
        """Refuse commits again."""
        self.flag[0] = SHUT


def install(conn: sqlite3.Connection) -> CommitGate | None:
    """Install a closed gate on ``conn`` (a writer connection); None where unavailable."""
    db = _db_pointer(conn)
    if db is None or _LIB is None:
        return None
    lib, strlen, _ = _LIB
    gate = CommitGate(conn)
    lib.sqlite3_commit_hook(db, strlen, gate.address)
    return gate


def is_refused(exc: BaseException) -> bool:
    """Whether ``exc`` is a gate's refusal of a commit."""
    return (
        isinstance(exc, sqlite3.IntegrityError)
        and getattr(exc, "sqlite_errorname", "") == "SQLITE_CONSTRAINT_COMMITHOOK"
    )


def refused_error(exc: BaseException, *, in_transaction: bool = True) -> BaseException:
    """What a caller is told for ``exc``: itself, unless it is a gate's refusal -- then
    :class:`~litegate.RolledBack` (``in_transaction``: the call ran in a transaction that SQLite
    had already rolled back) or :class:`~litegate.Misuse` (a read wrote through the writer
    connection outside any transaction)."""
    if not is_refused(exc):
        return exc
    err: BaseException
    if in_transaction:
        err = RolledBack(
            "a function caught an error after which SQLite rolled the whole transaction "
            "back, and kept writing: those statements were refused (nothing commits outside "
            "the lane's COMMIT). Let such errors propagate"
        )
    else:
        err = Misuse(
            "a read wrote through the write lane's connection outside any transaction; the "
            "write was refused (write with execute/run_write/a transaction)"
        )
    err.__cause__ = exc
    return err
