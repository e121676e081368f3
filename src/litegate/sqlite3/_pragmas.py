"""``PRAGMA name = value`` on a shared engine: what the drop-in does with a connection setting.

SQLite keeps these settings per connection; the engine's connections are shared by every
caller, so one caller cannot change them for itself alone. A value the engine already has is
accepted; ``busy_timeout`` is accepted (the connection's ``timeout`` bounds every wait);
``foreign_keys`` changes for the whole engine (its writer, where the checks act), as a
migration tool needs; any other is refused, saying how to set it for the engine.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from .._engine import Engine, use_authorizer
from . import _sql
from ._session import EMPTY, Outcome, Session

__all__ = ("on_writer", "outside", "set_pragma")

_TRUE = {"1", "on", "true", "yes"}
_FALSE = {"0", "off", "false", "no"}
_SYNCHRONOUS = {"0": "off", "1": "normal", "2": "full", "3": "extra"}


def _same_setting(name: str, have: object, value: str) -> bool:
    """Whether ``PRAGMA name = value`` asks for what the engine has (``have``, as ``PRAGMA
    name`` reads)."""
    want = value.strip().lower()
    got = str(have).lower()
    if name == "synchronous":
        return _SYNCHRONOUS.get(got, got) == _SYNCHRONOUS.get(want, want)
    if got in ("0", "1") and (want in _TRUE or want in _FALSE):
        return (got == "1") == (want in _TRUE)
    return got == want


def on_writer(engine: Engine, timeout: float, s: Session, fn: Callable[..., Any], args: Any) -> Any:
    """``fn(writer, *args)`` on the write lane held by this thread with no transaction open
    (in the thread's own transaction if it has one)."""
    if s.lease is not None:
        return s.lease.run(fn, args, None, None)
    lease = engine.lease(timeout, "the statement", s)
    try:
        lease.settle()  # (a group handed on with the lane: committed, so none is open)
        return lease.run(fn, args, None, None)
    finally:
        lease.release()


def outside(engine: Engine, timeout: float, s: Session, fn: Callable[..., Any], args: Any) -> Any:
    """``fn(conn, *args)`` for a statement SQLite runs only outside a transaction (``VACUUM``,
    ``PRAGMA wal_checkpoint``), on a connection of its own to the file, while this thread holds
    the write lane with no transaction open: no other writer of the process runs meanwhile,
    readers go on (WAL allows it). The side connection has no litegate authorizer: it runs
    this one statement and closes.

    :raises sqlite3.NotSupportedError: an in-memory database (one connection, always the
        engine's)
    """
    opts = engine.opts
    if opts.memory:
        raise sqlite3.NotSupportedError(
            "VACUUM and wal_checkpoint of an in-memory database are not supported by "
            "litegate.sqlite3 (its one connection is the engine's)"
        )
    lease = engine.lease(timeout, "the statement", s)
    try:
        lease.settle()
        side = sqlite3.connect(opts.path, timeout=timeout, uri=opts.uri, isolation_level=None)
        try:
            if opts.on_connect is not None:  # (its collations, say: VACUUM may need them)
                opts.on_connect(side)
            return fn(side, *args)
        finally:
            side.close()
    finally:
        lease.release()


def _set_foreign_keys(conn: sqlite3.Connection, on: bool) -> None:
    """On the writer, outside a transaction (inside one SQLite ignores it, as it would for a
    connection of one's own): switch the checks, litegate's authorizer stepped aside for it."""
    if conn.in_transaction:
        return
    conn.set_authorizer(None)
    try:
        conn.execute(f"PRAGMA foreign_keys={int(on)}")
    finally:
        use_authorizer(conn, None)  # (the engine's own back)


def set_pragma(engine: Engine, timeout: float, s: Session, sql: str) -> Outcome:
    """The outcome of ``sql``, a ``PRAGMA name = value`` of a connection setting.

    :raises sqlite3.NotSupportedError: a value the shared engine cannot take for one caller
    """
    setting = _sql.pragma_setting(sql)
    if setting is None:
        raise sqlite3.NotSupportedError(f"litegate.sqlite3 cannot read the PRAGMA in {sql!r}")
    name, value = setting
    if name == "busy_timeout":
        return EMPTY
    if name == "foreign_keys" and (value.lower() in _TRUE or value.lower() in _FALSE):
        on_writer(engine, timeout, s, _set_foreign_keys, (value.lower() in _TRUE,))
        return EMPTY
    if name == "defer_foreign_keys":  # (the transaction's own: it ends with it)
        if s.lease is not None and not s.reading:
            s.lease.run(
                lambda conn: conn.execute(f"PRAGMA defer_foreign_keys={value}"), (), None, None
            )
        return EMPTY
    # (compared with the writer's: the readers are query_only, for one)
    rows = on_writer(engine, timeout, s, lambda conn: conn.execute(f"PRAGMA {name}").fetchall(), ())
    have = rows[0][0] if rows and rows[0] else None
    if _same_setting(name, have, value):
        if name == "journal_mode":  # (it answers with the mode)
            return Outcome([(have,)], (("journal_mode",) + (None,) * 6,), -1, None)
        return EMPTY
    how = (
        f'litegate={{"{name}": ...}}'
        if name == "synchronous"
        else f'litegate={{"pragmas": {{"{name}": ...}}}}'
    )
    raise sqlite3.NotSupportedError(
        f"PRAGMA {name}={value} is not supported by litegate.sqlite3: every connection to "
        f"{engine.opts.name!r} in this process shares one engine, which has {name}={have}. "
        f"Set it for the engine when the first connection opens: sqlite3.connect(..., {how})"
    )
