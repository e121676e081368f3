"""Run a scenario in a forked child: under a resource limit, or as an unprivileged user.

A forked child needs no interpreter on disk: the test process's own modules (already imported)
run in it. That matters for :func:`drop_privileges`, whose user may not be able to read the
interpreter's installation at all (a pyenv Python under ``/root``). A scenario therefore
imports nothing new in the child; it returns plain data (pickled back through a pipe) and the
parent asserts on it, so a failure shows in pytest's report with the child's values.
"""

from __future__ import annotations

import logging
import os
import pickle
import select
import shutil
import signal
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest

__all__ = ("LogRecords", "can_drop_privileges", "drop_privileges", "reachable_dir", "run_forked")

T = TypeVar("T")

NOBODY = 65534  # uid of "nobody" and gid of "nogroup" on Debian-like systems (and many others)


def can_drop_privileges() -> bool:
    """Tests of file permissions need a user they apply to: a non-root one (root bypasses them),
    which root gets by dropping privileges in a child."""
    return os.geteuid() == 0


def drop_privileges() -> None:
    """In a forked child: become ``nobody`` (real and effective ids, no supplementary groups,
    no effective capabilities: file permissions apply). A no-op when not root: they already
    apply to us. Root stays the *saved* id only so that :func:`run_forked` can take it back
    after the scenario, for coverage to write its data file at exit."""
    if os.geteuid() != 0:
        return
    os.setgroups([])
    os.setresgid(NOBODY, NOBODY, 0)
    os.setresuid(NOBODY, NOBODY, 0)
    assert os.geteuid() == NOBODY


def _regain_privileges() -> None:
    if os.getresuid()[2] == 0 and os.geteuid() != 0:
        os.setresuid(0, 0, 0)
        os.setresgid(0, 0, 0)


@contextmanager
def reachable_dir() -> Iterator[Path]:
    """A fresh directory the unprivileged child can enter (pytest's ``tmp_path`` lives under a
    0700 ``/tmp/pytest-of-root``). Removed afterwards, whatever modes the test left."""
    path = Path(tempfile.mkdtemp(prefix="litegate-faults-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        for root, dirs, _ in os.walk(path):
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o755)  # (a non-root owner needs it to delete)
        shutil.rmtree(path)


def run_forked(fn: Callable[[], T], *, timeout: float = 60.0) -> T:
    """``fn()`` in a forked child; returns its result, or fails the test with the child's
    traceback (or on a hang, after ``timeout`` seconds: the child is killed)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 1
        try:
            os.close(r)
            try:
                payload = pickle.dumps((True, fn()))
            except BaseException:
                payload = pickle.dumps((False, traceback.format_exc()))
            _regain_privileges()
            with os.fdopen(w, "wb") as out:
                out.write(payload)
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    with os.fdopen(r, "rb", buffering=0) as inp:
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([inp], [], [], max(left, 0.0))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail(f"the forked child did not finish within {timeout}s (hang)")
            chunk = inp.read(65536)
            if not chunk:
                break
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and chunks, f"child died: status {status}"
    ok, value = pickle.loads(b"".join(chunks))
    if not ok:
        pytest.fail(f"the forked child raised:\n{value}", pytrace=False)
    return value  # type: ignore[no-any-return]


class LogRecords(logging.Handler):
    """Collects ``(levelname, message)`` of the ``litegate`` logger while installed (used in a
    child, where pytest's caplog does not reach)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.levelname, record.getMessage()))

    def __enter__(self) -> LogRecords:
        log = logging.getLogger("litegate")
        self._level = log.level
        log.setLevel(logging.DEBUG)
        log.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        log = logging.getLogger("litegate")
        log.removeHandler(self)
        log.setLevel(self._level)
