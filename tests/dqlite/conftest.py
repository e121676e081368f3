"""Fixtures for the dqlite tests: real 3-node ``dqlite-demo`` clusters on 127.0.0.1
(:class:`litegate._dqlite_cluster.Cluster`).

They need Debian's go-dqlite (``make dqlite`` installs it; ``make pytest`` does on Python 3.13+)
and the ``dqlite-dbapi`` client, which exists for Python >= 3.13 only. Without either, every
test here is skipped with the reason printed (``-rs``, on by default in ``addopts``). Test
modules import the client inside ``try``: on 3.11 the import fails and ``_dqlite_driver``
skips each test before it runs.

Two fixtures, to keep the run short (a cluster takes ~2 s to form, an election ~5 s):
``cluster`` is shared by a module's tests and must be left with every node running;
``fresh_cluster`` is a test's own, for tests that kill, restart or stop nodes.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from litegate._dqlite_cluster import Cluster, missing_binaries


@pytest.fixture(scope="session", autouse=True)
def _dqlite_driver() -> None:
    """Skip every test here, saying why, where the client cannot be imported. Session-scoped,
    so that it runs before the cluster fixtures start any node."""
    try:
        import dqlitedbapi  # noqa: F401
    except ImportError as e:
        pytest.skip(
            f"dqlite-dbapi is not importable on Python {sys.version_info[0]}.{sys.version_info[1]}"
            f" ({e}); it is the dqlite extra, for Python >= 3.13 only: "
            "run `make pytest PYTHON=python3.13 PYTEST_ARGS=tests/dqlite`"
        )


@pytest.fixture
def anyio_backend() -> Any:
    """The stdlib asyncio loop only. dqlite-dbapi 0.8.0 fails on the others the suite runs:
    on uvloop, connecting raises ``TypeError: create_connection() got an unexpected keyword
    argument 'happy_eyeballs_delay'``; under the eager task factory (CPython 3.13.0) asyncio's
    happy-eyeballs race fails an ``assert``. Both come from the driver's default dialer, and a
    plain ``dial_func`` (test_cluster.dial) works on both loops. The debug loop is slow enough
    for 8 contending tasks to run out of the driver's 5 s busy budget."""
    return ("asyncio", {})


def _require_binaries() -> None:
    missing = missing_binaries()
    if missing:
        pytest.skip(
            f"go-dqlite is not installed ({', '.join(missing)} not on PATH): "
            "`make dqlite` installs it with apt"
        )


def _run(root: Path) -> Iterator[Cluster]:
    _require_binaries()
    c = Cluster(root)
    # start() stops whatever it started before raising; stop() in `finally` covers a failing
    # test. An exit handler in _dqlite_cluster kills any node still recorded if both are skipped.
    try:
        c.start()
        yield c
    finally:
        # SIGKILL at once: the cluster is thrown away, and nodes stopping together with
        # SIGTERM each tried to hand over leadership for the whole grace (5 s per teardown)
        c.stop(grace=0.0)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A 3-node cluster shared by the module's tests. Do not kill or stop its nodes."""
    yield from _run(tmp_path_factory.mktemp("dqlite"))


@pytest.fixture
def fresh_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A 3-node cluster of the test's own, for kills, restarts and stops."""
    yield from _run(tmp_path / "dqlite")
