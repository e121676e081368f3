"""Process-wide bookkeeping of open engines: ``fork()`` safety, and closing at exit.

SQLite keeps per-process lock bookkeeping (per inode) in memory, and a child inherits a copy.
The child must never use the parent's connections, and its new connections must not share that
stale bookkeeping. So ``fork()`` first waits (up to :data:`FORK_QUIESCE` seconds) until each
engine is between two uses and holds it still; in the child each engine then closes the
inherited connections on first use (safe when no thread was inside them: closing releases no
lock the parent holds, and the parent's own shared locks stop any WAL checkpoint-and-delete)
and opens its own. If a connection was in use at the fork, the child cannot tell what state it
carries: that engine refuses with :class:`~litegate.Misuse` instead.

Shared fields: ``_registry`` is guarded by ``_lock``, which ``fork()`` holds from the
before-hook to the after-hooks (so the child never inherits it taken); ``_forking`` and
``_unsafe`` are written only by the forking thread inside those hooks (under ``_lock`` too).
Nothing here runs from ``__del__`` (an unclosed database's finaliser takes no lock at all).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from typing import Protocol

from ._lane_state import end_groups_here

__all__ = ("FORK_QUIESCE", "Forkable", "live", "register", "unregister")

logger = logging.getLogger("litegate")

FORK_QUIESCE = 1.0
"""Seconds ``fork()`` may wait for an engine to be between two uses."""


class Forkable(Protocol):
    """What an engine does around ``fork()`` and at exit."""

    @property
    def open_in_this_process(self) -> bool: ...

    def before_fork(self, deadline: float) -> None:
        """Hold the engine still (nobody may start using a connection), waiting until
        ``deadline`` for it to be idle."""

    def after_fork_in_parent(self) -> None:
        """Undo :meth:`before_fork`."""

    def after_fork_in_child(self) -> None:
        """Undo :meth:`before_fork` and mark the connections inherited (no I/O here)."""

    def refuse_after_fork(self) -> None:
        """In the child, for an engine that could not be held still: refuse every use."""

    def close(self, timeout: float | None = None) -> None: ...


_lock = threading.Lock()
_registry: weakref.WeakSet[Forkable] = weakref.WeakSet()
_forking: list[Forkable] = []  # held still by the before-hook
_unsafe: list[Forkable] = []  # the before-hook was interrupted before holding these still
_EXIT_CLOSE_TIMEOUT = 5.0


def register(engine: Forkable) -> None:
    with _lock:
        _registry.add(engine)


def unregister(engine: Forkable) -> None:
    with _lock:
        _registry.discard(engine)


def live() -> list[Forkable]:
    """The engines open in this process (for tests and exit)."""
    with _lock:
        return list(_registry)


def _before_fork() -> None:
    end_groups_here()  # (a group this thread's loop holds would keep its lane busy)
    _lock.acquire()
    engines = [e for e in _registry if e.open_in_this_process]
    deadline = time.monotonic() + FORK_QUIESCE
    for i, engine in enumerate(engines):
        try:
            engine.before_fork(deadline)  # (undoes its own part if interrupted)
        except BaseException:  # e.g. KeyboardInterrupt: the fork goes ahead regardless
            _unsafe.extend(engines[i:])
            logger.exception("litegate: holding the databases still for fork() failed")
            return
        _forking.append(engine)


def _after_fork_in_parent() -> None:
    for engine in _forking:
        engine.after_fork_in_parent()
    _forking.clear()
    _unsafe.clear()
    _lock.release()


def _after_fork_in_child() -> None:
    for engine in _forking:
        engine.after_fork_in_child()
    for engine in _unsafe:
        engine.refuse_after_fork()
    _forking.clear()
    _unsafe.clear()
    _lock.release()


def _close_all_at_exit() -> None:
    """Drain and close engines nobody closed, so an unclosed engine loses no acknowledged
    write and never keeps the interpreter from exiting (the writer thread is a daemon)."""
    for engine in live():
        if not engine.open_in_this_process:
            continue
        try:
            engine.close(timeout=_EXIT_CLOSE_TIMEOUT)
        except Exception:  # pragma: no cover
            logger.exception("litegate: closing a database at exit failed")


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)
atexit.register(_close_all_at_exit)
