"""What user SQL may do on the engine's connections: the authorizers' policy, and the clear
error a refusal becomes.

Every connection litegate hands to user code is shared: the writer by every caller of the
lane, a reader by whoever borrows it next. A statement that changes a *connection's* state
therefore either breaks the engine (``locking_mode=EXCLUSIVE`` locks its own readers out;
``query_only=OFF`` turns a reader into a second writer outside the lane) or applies to one
connection of several, picked by chance (``ATTACH``, ``cache_size``). So, through the API:

=====================================  ==================================================
statement                              verdict
=====================================  ==================================================
``PRAGMA name`` (no argument: a read)  allowed everywhere (``PRAGMA journal_mode``,
                                       ``PRAGMA user_version``, ``pragma_table_info(...)``)
``PRAGMA name(arg)`` / ``= value``     allowed for :data:`PRAGMAS_WITH_ARGUMENT` (reads of a
                                       table or a check, database-file values such as
                                       ``user_version``, operations such as ``optimize``);
                                       refused for every other PRAGMA
``ATTACH`` / ``DETACH``                refused (``on_connect`` attaches on every connection)
``BEGIN`` / ``COMMIT`` / ``ROLLBACK``  refused on the writer (the lane owns transaction
                                       boundaries; :class:`~._connection.TxnGuard`)
=====================================  ==================================================

The engine's own set-up statements, ``pragmas=`` and ``on_connect`` run before the authorizer
is installed, so they are not affected. A refusal is recorded for the refusing thread (the
authorizer runs on the thread preparing the statement) and :func:`explain` turns SQLite's bare
``not authorized`` into :class:`~litegate.Refused`, naming the statement and why, on that same
thread, before the error travels to its caller.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
from typing import Any, NoReturn

from .._config import ENGINE_PRAGMAS
from .._errors import Refused
from .._statements import run_execute, run_executemany, run_script, split_script

__all__ = (
    "install",
    "use_authorizer",
    "GUARDED",
    "PRAGMAS_WITH_ARGUMENT",
    "PRAGMA_READS_WITH_ARGUMENT",
    "ReaderGuard",
    "explain",
    "refuse",
    "first_word",
    "refuse_plain_savepoint",
    "refuse_plain_savepoints",
    "refuse_transaction",
    "reraise",
    "verdict",
)

_OK = sqlite3.SQLITE_OK
_DENY = sqlite3.SQLITE_DENY
_PRAGMA = sqlite3.SQLITE_PRAGMA
_ATTACH = sqlite3.SQLITE_ATTACH
_TRANSACTION = sqlite3.SQLITE_TRANSACTION
_SQLITE_AUTH = 23

GUARDED = frozenset({_PRAGMA, _ATTACH, sqlite3.SQLITE_DETACH, _TRANSACTION})
"""The authorizer actions the guards look at; every other action is allowed at once."""

PRAGMA_READS_WITH_ARGUMENT = frozenset(
    {
        "foreign_key_check",
        "foreign_key_list",
        "index_info",
        "index_list",
        "index_xinfo",
        "integrity_check",
        "quick_check",
        "table_info",
        "table_list",
        "table_xinfo",
    }
)
"""PRAGMAs that only read, taking a table, an index or a limit as their argument."""

PRAGMAS_WITH_ARGUMENT = PRAGMA_READS_WITH_ARGUMENT | frozenset(
    {
        # values stored in the database file (written through the lane, like any write)
        "application_id",
        "user_version",
        # operations on the database, not settings of the connection
        "incremental_vacuum",
        "optimize",
        "shrink_memory",
        "wal_checkpoint",
        # lasts until the end of the current transaction only
        "defer_foreign_keys",
    }
)
"""PRAGMAs allowed *with* an argument through the API; any PRAGMA is allowed without one."""

_API_REASONS = {
    **ENGINE_PRAGMAS,
    "foreign_keys": (
        "SQLite ignores it inside a transaction, and every write through litegate runs in one. "
        "Use PRAGMA defer_foreign_keys=ON inside the transaction, or "
        "connect(pragmas={'foreign_keys': 0}) for every connection"
    ),
    "journal_size_limit": "set it with connect(journal_size_limit=...)",
}

_denied = threading.local()  # .reason: this thread's last refusal, until explained


def refuse(what: str, reason: str) -> int:
    """Record why ``what`` was refused (for :func:`explain` on this thread); SQLITE_DENY."""
    _denied.reason = (what, reason)
    return _DENY


def _pragma_verdict(name: str, arg: str | None) -> int:
    if arg is None:
        return _OK
    key = name.lower()
    if key in PRAGMAS_WITH_ARGUMENT:
        return _OK
    reason = _API_REASONS.get(key)
    if reason is None:
        reason = (
            "it would change only the one connection it happens to run on (litegate has a "
            "writer and a pool of readers, and any of them may serve the next call); set it "
            f"for every connection with connect(pragmas={{{key!r}: ...}})"
        )
    return refuse(f"PRAGMA {key}={arg}", reason)


def _attach_verdict(action: int, arg: str | None) -> int:
    verb = "ATTACH" if action == _ATTACH else "DETACH"
    return refuse(
        f"{verb} {arg!r}",
        "it would apply to the one connection it happens to run on (litegate's writer or "
        "one pooled reader), and the other connections would not see it; attach on every "
        'connection with connect(on_connect=lambda conn: conn.execute("ATTACH ..."))',
    )


def refuse_transaction(verb: str | None) -> int:
    """The writer's refusal of user transaction control (see TxnGuard)."""
    return refuse(
        str(verb or "transaction control"),
        "the write lane owns transaction boundaries: a COMMIT or ROLLBACK here would end "
        "other callers' work with yours. Use db.transaction() (and tx.savepoint() to nest), "
        "or let the call's function raise to roll its work back",
    )


_SAVEPOINT_WORDS = ("SAVEPOINT", "RELEASE", "ROLLBACK")
_BLANK = " \t\n\r\f\v;\ufeff"  # (SQLite skips a BOM, U+FEFF, as white space)
_NOT_SAVEPOINT = frozenset("ABCDEFGHIJKLMNOPQTUVWXYZabcdefghijklmnopqtuvwxyz")
"""First characters no savepoint word starts with: a text that does is let through at once
(every plain write pays this check: one set lookup for the usual text)."""


def first_word(sql: str) -> str:
    """The start of ``sql``'s first statement, upper-cased (9 characters: enough for any
    transaction-control word), past what SQLite skips before it: white space (a byte-order
    mark too), ``;`` and comments."""
    if sql[:1].isalpha():  # (the usual text: no scan)
        return sql[:9].upper()
    i, n = 0, len(sql)
    while i < n:
        if sql[i] in _BLANK:
            i += 1
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            i = n if j < 0 else j + 1
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            i = n if j < 0 else j + 2
        else:
            break
    return sql[i : i + 9].upper()


def refuse_plain_savepoint(sql: str) -> None:
    """Raise :class:`Refused` if ``sql``, sent as a plain write (``execute``,
    ``executemany``), is a savepoint statement (``SAVEPOINT``, ``RELEASE``, ``ROLLBACK
    TO``) or a ``ROLLBACK``: a plain write runs in a transaction shared with other callers'
    writes (group commit), where ``ROLLBACK TO`` would undo their acknowledged writes. By its
    first word (:func:`first_word`): the authorizer cannot tell, since a statement re-run from
    the connection's statement cache is not authorized again."""
    if sql[:1] in _NOT_SAVEPOINT:
        return
    head = first_word(sql)
    if head.startswith(_SAVEPOINT_WORDS):
        verb = next(w for w in _SAVEPOINT_WORDS if head.startswith(w))
        err = Refused(
            f"litegate refused {verb} in a plain write: it runs in a transaction shared with "
            "other callers' writes (group commit), so a savepoint or ROLLBACK there would "
            "span, release or undo their work with yours. Use db.transaction() (and "
            "tx.savepoint() to nest); there, SAVEPOINT statements are the transaction's own",
            what=verb,
        )
        err.sqlite_errorcode = _SQLITE_AUTH
        err.sqlite_errorname = "SQLITE_AUTH"
        raise err


def refuse_plain_savepoints(fn: object, args: tuple[Any, ...]) -> None:
    """:func:`refuse_plain_savepoint` for a plain write's job ``fn(conn, *args)``: the
    statement of ``execute``/``executemany``, every statement of ``executescript``."""
    if fn is run_execute or fn is run_executemany:
        if args[0][:1] not in _NOT_SAVEPOINT:  # (refuse_plain_savepoint's test, inlined)
            refuse_plain_savepoint(args[0])
    elif fn is run_script:
        for statement in split_script(args[0]):
            refuse_plain_savepoint(statement)


def verdict(action: int, arg1: str | None, arg2: str | None) -> int:
    """The verdict on a guarded action other than transaction control."""
    if action == _PRAGMA:
        return _pragma_verdict(arg1 or "", arg2)
    return _attach_verdict(action, arg1)


class ReaderGuard:
    """The readers' authorizer (stateless: one instance serves every reader). Transaction
    control stays allowed there: a reader's transactions are its borrower's own, and the pool
    rolls back whatever is left open when it is given back."""

    __slots__ = ()

    def __call__(
        self, action: int, arg1: str | None = None, arg2: str | None = None, *_: object
    ) -> int:
        if action in GUARDED and action != _TRANSACTION:
            return verdict(action, arg1, arg2)
        return _OK


def explain(exc: BaseException) -> BaseException:
    """``exc``, or -- if it is SQLite's ``not authorized`` for a refusal recorded on this
    thread -- the :class:`Refused` that says what was refused and why (caused by ``exc``).

    Call it on the thread that ran the statement, where the refusal was recorded."""
    denied = getattr(_denied, "reason", None)
    if denied is None or not isinstance(exc, sqlite3.DatabaseError):
        return exc
    if getattr(exc, "sqlite_errorcode", _SQLITE_AUTH) != _SQLITE_AUTH:
        return exc
    _denied.reason = None
    what, reason = denied
    err = Refused(f"litegate refused {what}: {reason}", what=what)
    err.sqlite_errorcode = _SQLITE_AUTH
    err.sqlite_errorname = "SQLITE_AUTH"
    err.__cause__ = exc
    return err


def reraise(exc: BaseException) -> NoReturn:
    """Raise ``exc`` again -- or the :class:`Refused` it stands for (see :func:`explain`).
    For the ``except sqlite3.DatabaseError`` of a path that runs user SQL; it costs nothing
    until something fails (a traceback then shows this frame too)."""
    err = explain(exc)
    if err is exc:
        raise exc
    raise err from exc


# ---- a caller's own authorizer, next to the engine's -------------------------------------------
# The guard each engine connection has (id -> (connection, guard)): written when the engine
# installs it, read to put it back after a caller's statement. Guarded by _guards_lock. The
# connection is kept to tell a reused id apart; closed ones are dropped as the table grows.
_guards: dict[int, tuple[sqlite3.Connection, Any]] = {}
_guards_lock = threading.Lock()


def install(conn: sqlite3.Connection, guard: Any) -> None:
    """Install the engine's ``guard`` as ``conn``'s authorizer (and remember it)."""
    conn.set_authorizer(guard)
    with _guards_lock:
        if len(_guards) > 256:
            for key, (old, _) in list(_guards.items()):
                try:
                    old.total_changes  # noqa: B018 (raises once closed)
                except sqlite3.ProgrammingError:
                    del _guards[key]
        _guards[id(conn)] = (conn, guard)


def _both(base: Any, user: Any) -> Any:
    """The engine's guard first (its refusals stand), then the caller's authorizer (whose
    name it carries: SQLite reports an exception raised there under it)."""

    @functools.wraps(user)
    def both(*args: Any) -> int:
        verdict_: int = base(*args)
        if verdict_ != _OK:
            return verdict_
        mine: int = user(*args)
        return mine

    return both


def use_authorizer(conn: sqlite3.Connection, user: Any) -> None:
    """Run ``conn``'s next statements (the caller owns it) with ``user``'s authorizer too;
    ``user=None`` puts the engine's guard back alone. (Each call makes SQLite prepare the
    connection's statements anew, as ``set_authorizer`` does.)"""
    with _guards_lock:
        entry = _guards.get(id(conn))
    base = entry[1] if entry is not None and entry[0] is conn else None
    if base is None:
        conn.set_authorizer(user)
    else:
        conn.set_authorizer(base if user is None else _both(base, user))
