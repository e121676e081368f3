"""What the sync and async facades share: the engine they front, option defaults, and the
unclosed-database warning."""

from __future__ import annotations

import warnings

from ._args import limit_arg, timeout_arg
from ._config import Options
from ._engine import Engine
from ._types import DEFAULT, Limit, Wait

__all__ = ("Facade",)


class Facade:
    """Base of :class:`~litegate.Database` and :class:`~litegate.AsyncDatabase`.

    A facade holds no state of its own but the engine and two defaults (set once, read by
    any thread).
    """

    _close_hint = "close it"  # how to close it, for the ResourceWarning

    def __init__(self, engine: Engine, *, owner: bool = True) -> None:
        self._engine = engine
        self._owner = owner  # the facade that opened the engine closes it
        self._timeout = engine.opts.timeout  # the defaults, kept here for the hot paths
        self._time_limit = engine.opts.time_limit

    def _t(self, timeout: Wait) -> float | None:
        """The bound a call waits for. :raises TypeError, ValueError: a bad ``timeout``"""
        return self._timeout if timeout is DEFAULT else timeout_arg(timeout)

    def _l(self, time_limit: Limit) -> float | None:
        """A call's statement time limit. :raises TypeError, ValueError: a bad ``time_limit``"""
        return self._time_limit if time_limit is DEFAULT else limit_arg(time_limit)

    @property
    def path(self) -> str:
        return self._engine.opts.path

    @property
    def options(self) -> Options:
        return self._engine.opts

    @property
    def closed(self) -> bool:
        return self._engine.closed

    def __del__(self) -> None:
        # Keep this minimal: warn and signal the writer to drain and stop.
        engine = getattr(self, "_engine", None)
        if engine is None or not self._owner or not engine.open_in_this_process:
            return
        warnings.warn(
            f"litegate database {engine.opts.name!r} was never closed; {self._close_hint}",
            ResourceWarning,
            source=self,
            stacklevel=1,
        )
        engine.start_close()
