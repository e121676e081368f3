"""What a statement is, read from its text: the drop-in's one routing decision (and the
checks of the settings that decide when a transaction opens: ``isolation_level``,
``autocommit``).

The standard module's API takes SQL text, so ``litegate.sqlite3`` must route by it: a read runs
on a reader, a write on the write lane, transaction control changes the calling thread's
session. The rule is conservative: only a statement that is recognisably a read is routed as
one (``SELECT``, ``VALUES``, ``EXPLAIN``, a ``PRAGMA`` that only reads, a ``WITH`` that does not
write); everything else is a write. A misrouted "read" cannot write anything either: readers
are ``query_only``.
"""

from __future__ import annotations

import os
import re
from typing import Final

from .._engine import PRAGMA_READS_WITH_ARGUMENT

__all__ = (
    "BEGIN",
    "COMMIT",
    "DML",
    "INSERT",
    "LEGACY_TRANSACTION_CONTROL",
    "NO_TRANSACTION",
    "READ",
    "RELEASE",
    "ROLLBACK",
    "SET_PRAGMA",
    "WRITER_READ",
    "ROLLBACK_TO",
    "SAVEPOINT",
    "WRITE",
    "Kind",
    "check_level",
    "check_mode",
    "check_open",
    "classify",
    "inserts",
    "pragma_setting",
    "savepoint_name",
)

Kind = int
READ: Final = 1
WRITE: Final = 2  # not recognisably a read: DDL, VACUUM, a PRAGMA that sets ...
DML: Final = 3  # UPDATE, DELETE: the legacy implicit BEGIN opens before these (and INSERT)
INSERT: Final = 4  # INSERT, REPLACE: DML that sets the connection's last inserted rowid
SET_PRAGMA: Final = 6  # PRAGMA name = value of a connection setting (compared, not run)
WRITER_READ: Final = 7  # PRAGMA foreign_keys: the writer's setting (the one that acts)
NO_TRANSACTION: Final = 5  # VACUUM, PRAGMA wal_checkpoint: run only outside a transaction
BEGIN: Final = 8  # (this and above: transaction control)
COMMIT: Final = 9  # COMMIT, END
ROLLBACK: Final = 10
SAVEPOINT: Final = 11
RELEASE: Final = 12
ROLLBACK_TO: Final = 13

_WORDS: Final = {
    "SELECT": READ,
    "VALUES": READ,
    "EXPLAIN": READ,
    "INSERT": INSERT,
    "UPDATE": DML,
    "DELETE": DML,
    "REPLACE": INSERT,
    "BEGIN": BEGIN,
    "COMMIT": COMMIT,
    "END": COMMIT,
    "SAVEPOINT": SAVEPOINT,
    "RELEASE": RELEASE,
    "VACUUM": NO_TRANSACTION,
}
# PRAGMAs without an argument that change something (a checkpoint, an optimisation): writes.
_WRITING_PRAGMAS: Final = frozenset(
    {"wal_checkpoint", "optimize", "incremental_vacuum", "shrink_memory", "analysis_limit"}
)
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
_DML_WORD = re.compile(r"\b(INSERT|UPDATE|DELETE|REPLACE)\b", re.IGNORECASE)
_SKIP = " \t\n\r\f\v;\ufeff"

_cache: dict[str, Kind] = {}  # sql -> kind: a pure function's memo (a lost or doubled entry
# is harmless: every writer stores the same value; cleared whole when it grows too large)
_CACHE_MAX = 4096


def _skip(sql: str, i: int) -> int:
    """The index of the first character at or after ``i`` that SQLite does not skip (white
    space, ``;``, comments)."""
    n = len(sql)
    while i < n:
        c = sql[i]
        if c in _SKIP:
            i += 1
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            i = n if j == -1 else j + 1
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            i = n if j == -1 else j + 2
        else:
            break
    return i


def _words(sql: str, count: int) -> list[str]:
    """Up to ``count`` leading keywords, upper case (stops at anything else)."""
    out: list[str] = []
    i = 0
    while len(out) < count:
        i = _skip(sql, i)
        m = _WORD.match(sql, i)
        if m is None:
            break
        out.append(m.group().upper())
        i = m.end()
    return out


def classify(sql: str) -> Kind:
    """The kind of the statement that starts ``sql`` (one of the constants above)."""
    kind = _cache.get(sql)
    if kind is None:
        kind = _classify(sql)
        if len(_cache) >= _CACHE_MAX:
            _cache.clear()
        _cache[sql] = kind
    return kind


def _classify(sql: str) -> Kind:
    words = _words(sql, 3)
    if not words:
        return WRITE
    first = words[0]
    kind = _WORDS.get(first)
    if kind is not None:
        return kind
    if first == "ROLLBACK":
        rest = words[1:]
        if rest[:1] == ["TRANSACTION"]:
            rest = rest[1:]
        return ROLLBACK_TO if rest[:1] == ["TO"] else ROLLBACK
    if first == "WITH":
        return WRITE if _DML_WORD.search(sql) else READ
    if first == "PRAGMA":
        return _pragma(sql)
    return WRITE


def inserts(sql: str) -> bool:
    """Whether ``sql`` is an ``INSERT`` or ``REPLACE`` -- a ``WITH`` clause's main statement
    included (classified WRITE: the standard module opens no implicit transaction for it) --
    the statements that set the connection's last inserted row id."""
    kind = classify(sql)
    if kind == INSERT:
        return True
    if kind != WRITE:
        return False
    words = _words(sql, 1)
    return bool(words) and words[0] == "WITH" and _main_verb(sql) in ("INSERT", "REPLACE")


def _main_verb(sql: str) -> str | None:
    """The first keyword of a ``WITH`` statement's main statement: the first of the words
    that start one, outside parentheses, quotes and comments (a common table expression's
    name that is such a keyword must be quoted)."""
    depth, i, n = 0, 0, len(sql)
    while i < n:
        c = sql[i]
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c in "'\"`[":
            j = sql.find("]" if c == "[" else c, i + 1)
            while j != -1 and c != "[" and sql.startswith(c * 2, j):  # ('' inside '...')
                j = sql.find(c, j + 2)
            i = n if j == -1 else j + 1
            continue
        elif sql.startswith("--", i) or sql.startswith("/*", i):
            i = _skip(sql, i)
            continue
        elif depth == 0 and (m := _WORD.match(sql, i)) is not None:
            word = m.group().upper()
            if word in _MAIN_VERBS:
                return word
            i = m.end()
            continue
        i += 1
    return None


_MAIN_VERBS: Final = frozenset({"SELECT", "VALUES", "INSERT", "REPLACE", "UPDATE", "DELETE"})


def _pragma(sql: str) -> Kind:
    """A PRAGMA that only reads: no ``=`` and no argument, or a reading one with an argument
    (``table_info(t)``); anything else is a write (the engine refuses what it must)."""
    i = _skip(sql, 0) + len("PRAGMA")
    body = sql[i:].strip(_SKIP)
    name = _WORD.match(body)
    if name is None:
        return WRITE
    rest = body[name.end() :].lstrip()
    if rest.startswith("."):  # schema.name
        name = _WORD.match(rest, 1)
        if name is None:
            return WRITE
        rest = rest[name.end() :].lstrip()
    lowered = name.group().lower()
    if lowered == "wal_checkpoint":
        return NO_TRANSACTION
    if lowered in _WRITING_PRAGMAS:
        return WRITE
    if rest.startswith("="):
        return WRITE if lowered in _FILE_VALUES else SET_PRAGMA
    if rest.startswith("("):
        if lowered in PRAGMA_READS_WITH_ARGUMENT:
            return READ
        return WRITE if lowered in _FILE_VALUES else SET_PRAGMA  # (name(value): a setting)
    return WRITER_READ if lowered == "foreign_keys" else READ


# Values of the database file, written as any write (through the lane).
_FILE_VALUES: Final = frozenset(
    {"user_version", "application_id", "auto_vacuum", "page_size", "max_page_count"}
)
_PRAGMA_SET = re.compile(
    r"\s*PRAGMA\s+(?:(\w+)\s*\.\s*)?(\w+)\s*(?:=\s*(.+?)|\(\s*(.+?)\s*\))[\s;]*$",
    re.IGNORECASE | re.DOTALL,
)
_COMMENT = re.compile(r"--[^\n]*|/\*.*?(?:\*/|$)", re.DOTALL)


def pragma_setting(sql: str) -> tuple[str, str] | None:
    """``(name, value)`` of a ``PRAGMA [schema.]name = value`` or ``name(value)`` (name lower
    case, value unquoted, comments dropped), or ``None`` if ``sql`` is not one."""
    m = _PRAGMA_SET.match(_COMMENT.sub(" ", sql[_skip(sql, 0) :]))
    if m is None:
        return None
    value = (m.group(3) or m.group(4)).strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    return m.group(2).lower(), value


_SAVEPOINT_WORDS: Final = frozenset({"ROLLBACK", "TRANSACTION", "TO", "SAVEPOINT", "RELEASE"})


def savepoint_name(sql: str) -> str:
    """The savepoint a ``SAVEPOINT``/``RELEASE``/``ROLLBACK TO`` statement names (folded to
    lower case, as SQLite compares them; ``""`` if it names none)."""
    words = _words(sql, 5)
    while words and words[0] in _SAVEPOINT_WORDS:
        words = words[1:]
    if words:
        return words[0].lower()
    # A quoted name: "sp 1", [sp], `sp`, 'sp'
    m = re.search(r"""(?:"([^"]*)"|\[([^\]]*)\]|`([^`]*)`|'([^']*)')""", sql)
    return next((g for g in m.groups() if g is not None), "").lower() if m else ""


# ---- the transaction-control settings ---------------------------------------------------------
LEGACY_TRANSACTION_CONTROL = -1
_LEVELS = ("", "DEFERRED", "IMMEDIATE", "EXCLUSIVE")


def check_level(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError("isolation_level must be str or None")
    if "\0" in value or str.upper(value) not in _LEVELS:
        raise ValueError(
            "isolation_level string must be '', 'DEFERRED', 'IMMEDIATE', or 'EXCLUSIVE'"
        )
    return value


def check_mode(value: object) -> bool | int:
    if value is True or value is False or value == LEGACY_TRANSACTION_CONTROL:
        return value if isinstance(value, bool) else LEGACY_TRANSACTION_CONTROL
    raise ValueError("autocommit must be True, False, or sqlite3.LEGACY_TRANSACTION_CONTROL")


def check_open(database: object, timeout: object, detect_types: object) -> tuple[str, float]:
    """``connect``'s file and timeout, checked as sqlite3 checks them: (path, seconds)."""
    if isinstance(database, bytes):
        database = os.fsdecode(database)
    path = os.fspath(database)  # type: ignore[call-overload]
    if not isinstance(timeout, int | float):
        raise TypeError(f"timeout must be a number, not {type(timeout).__name__}")
    if not isinstance(detect_types, int):
        raise TypeError("detect_types must be an int")
    return path, float(timeout)
