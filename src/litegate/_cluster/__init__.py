"""A second implementation of the engine interface: a dqlite cluster (``dqlite://`` URLs).

:class:`~._engine.ClusterEngine` gives ``Database`` and ``AsyncDatabase`` the same API on a
Raft-replicated SQLite cluster; :mod:`._link` is one connection to its leader (reopened on
failover, refusing the statements that crash a dqlite node). The driver, ``dqlitedbapi``, is
the extra ``litegate[dqlite]`` (Python >= 3.13): nothing here imports it until a cluster is
opened.
"""

from __future__ import annotations

from ._driver import load_driver
from ._engine import ClusterEngine
from ._link import Link, LinkLost, OpenSession, Outcome, Session, refusal
from ._url import SCHEME, ClusterAddress, is_cluster, parse

__all__ = (
    "SCHEME",
    "ClusterAddress",
    "ClusterEngine",
    "Link",
    "LinkLost",
    "OpenSession",
    "Outcome",
    "Session",
    "is_cluster",
    "load_driver",
    "parse",
    "refusal",
)
