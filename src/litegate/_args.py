"""Checks of the public methods' own arguments, made in the caller's thread or task before
anything is queued or any connection is taken.

The policy (README "Bad input"): an argument litegate itself interprets that has the wrong
*type* raises :class:`TypeError` naming it and what was expected; one of the right type but out
of range raises :class:`ValueError`. SQL text and statement parameters are sqlite3's to judge:
what sqlite3 raises for them (``sqlite3.ProgrammingError``, ``OverflowError`` for an int outside
64 bits, ``UnicodeEncodeError`` for a lone surrogate, ...) reaches the caller unchanged.

Why up front: a bad ``timeout`` used to be noticed only after the write was queued, so the caller
got a ``TypeError`` while the write went on to commit. The checks stay off the hot paths: the
SQL check is one ``type(sql) is str`` test on the write paths (whose jobs may be queued), and
free on the read paths (:func:`not_a_str`); the others run only when an argument is given
(``timeout`` and ``time_limit`` left at ``DEFAULT`` are not looked at).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = (
    "HUGE",
    "check_arraysize",
    "check_callable",
    "check_close_timeout",
    "check_migrations",
    "check_param_sets",
    "check_seconds",
    "check_sql",
    "limit_arg",
    "not_a_str",
    "param_sets",
    "timeout_arg",
)

HUGE = threading.TIMEOUT_MAX / 2
"""Seconds (~146 years) past which a bound means "no bound": longer ones overflow the waits of
``threading`` and ``time`` (``OverflowError``), so they are treated as ``None``."""


def _type_name(value: object) -> str:
    return "None" if value is None else type(value).__name__


def not_a_str(value: object, name: str = "sql") -> TypeError:
    """The error for SQL text that is not a ``str``. The read paths, which run in the caller's
    thread, raise it from their ``except TypeError`` (sqlite3 refuses non-str SQL itself before
    running anything): an up-front check there would cost every query."""
    return TypeError(f"{name} must be a str, not {_type_name(value)}")


def check_sql(sql: object, name: str = "sql") -> None:
    """:raises TypeError: ``sql`` is not a ``str`` (bytes included: decode it first)"""
    if not isinstance(sql, str):
        raise not_a_str(sql, name)


def _number(value: object, name: str, what: str) -> float:
    """``value`` as a number of seconds >= 0 (not NaN). :raises TypeError, ValueError:"""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be {what}, not {_type_name(value)}")
    if value < 0 or (isinstance(value, float) and math.isnan(value)):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return value


def _bound(value: object, name: str) -> float | None:
    if value is None:
        return None
    seconds = _number(value, name, "None or a number of seconds >= 0 (or litegate.DEFAULT)")
    return None if seconds > HUGE else seconds  # math.inf means "no bound", as None does


def timeout_arg(value: object) -> float | None:
    """A per-call ``timeout`` other than ``DEFAULT``: seconds, or ``None`` (no bound).

    :raises TypeError: not a number nor ``None``
    :raises ValueError: negative or NaN
    """
    return _bound(value, "timeout")


def limit_arg(value: object) -> float | None:
    """A per-call ``time_limit`` other than ``DEFAULT``: seconds, or ``None`` (no limit).

    :raises TypeError: not a number nor ``None``
    :raises ValueError: negative or NaN
    """
    return _bound(value, "time_limit")


def check_seconds(value: object, name: str) -> float:
    """A number of seconds >= 0 that may not be ``None`` (``busy_timeout``), capped at
    :data:`HUGE`. :raises TypeError, ValueError:"""
    return min(_number(value, name, "a number of seconds >= 0"), HUGE)


def check_close_timeout(value: object) -> float | None:
    """``close(timeout)``: ``None`` (the default bound) or seconds, capped at :data:`HUGE`.

    Checked before closing starts: a bad value must not leave a half-closed database.
    """
    return None if value is None else check_seconds(value, "timeout")


def check_callable(fn: object, name: str = "fn") -> None:
    """:raises TypeError: ``fn`` is not callable"""
    if not callable(fn):
        raise TypeError(f"{name} must be a callable fn(conn, *args), not {_type_name(fn)}")


def check_arraysize(value: object) -> None:
    """:raises TypeError: not an int; :raises ValueError: below 1"""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"arraysize must be an int >= 1, not {_type_name(value)}")
    if value < 1:
        raise ValueError(f"arraysize must be an int >= 1, got {value!r}")


def _not_param_sets(seq: object) -> TypeError:
    return TypeError(
        f"seq must be an iterable of parameter sets (tuples or dicts), not {_type_name(seq)}"
    )


def check_param_sets(seq: object) -> None:
    """:raises TypeError: ``seq`` (``executemany``'s parameter sets) is not iterable"""
    if not isinstance(seq, Iterable):
        raise _not_param_sets(seq)


def param_sets(seq: object) -> list[Any] | tuple[Any, ...]:
    """``executemany``'s parameter sets, materialised in the caller's thread before the job is
    queued (an iterator's own exceptions are raised there, not on the writer).

    :raises TypeError: ``seq`` is not iterable
    """
    if isinstance(seq, list | tuple):
        return seq
    if not isinstance(seq, Iterable):
        raise _not_param_sets(seq)
    return list(seq)


def check_migrations(migrations: object) -> None:
    """:raises TypeError: not a sequence of steps, or a step neither an SQL str nor callable"""
    if isinstance(migrations, str | bytes) or not isinstance(migrations, Sequence):
        raise TypeError(
            "migrations must be a sequence (list or tuple) of steps, "
            f"not {_type_name(migrations)}"
            + (" (wrap the one script in a list)" if isinstance(migrations, str) else "")
        )
    for i, step in enumerate(migrations, 1):
        if not isinstance(step, str) and not callable(step):
            raise TypeError(
                f"migration {i} must be an SQL str or a callable fn(conn), not {_type_name(step)}"
            )
