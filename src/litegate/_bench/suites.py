"""The two suites by name: what a child process rebuilds from a run's spec.

* ``sync`` (:mod:`.sync_suite`): OS threads, litegate's ``Database`` against the folk
  remedies;
* ``async`` (:mod:`.async_suite`): asyncio tasks, litegate's facades against aiosqlite and
  ``asyncio.to_thread`` remedies.
"""

from __future__ import annotations

from typing import Any

from .async_suite import async_suite
from .session import Suite
from .sync_suite import sync_suite

__all__ = ("build_suite",)


def build_suite(name: str, params: dict[str, Any]) -> Suite[Any]:
    """The suite called ``name`` (``sync`` or ``async``) built with ``params``.

    :raises KeyError: an unknown suite
    """
    builders: dict[str, Any] = {"sync": sync_suite, "async": async_suite}
    suite: Suite[Any] = builders[name](params)
    return suite
