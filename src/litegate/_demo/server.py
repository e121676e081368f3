"""uvicorn for the web demo: start it in its own process group, wait until ready, stop it all.

:func:`serve` runs ``uvicorn <module:app> --workers N`` on a free loopback port with the
event loop and HTTP parser users deploy (``uvicorn[standard]``: uvloop and httptools, from the
``starlette`` extra). Without uvloop, uvicorn's worker processes share a listening socket on
which the stdlib asyncio loop never sets ``TCP_NODELAY`` (the socket is made with ``proto=0``
and asyncio only sets it for ``IPPROTO_TCP``; uvicorn issue #3149), so each response waits
~40 ms for the client's delayed ACK: :func:`stack` reports it so the demo can say so.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

__all__ = ("DEFAULT_WORKERS", "Server", "ServerError", "Stack", "http_get", "serve", "stack")

DEFAULT_WORKERS = 2
_READY_TIMEOUT = 30.0
_STOP_TIMEOUT = 10.0


class ServerError(RuntimeError):
    """The server could not be started (the message includes the tail of its log)."""


@dataclass(frozen=True, slots=True)
class Stack:
    """What serves the app: uvicorn's version, its event loop and its HTTP parser."""

    uvicorn: str
    loop: str  # "uvloop" or "asyncio"
    http: str  # "httptools" or "h11"

    @property
    def nagle_stall(self) -> bool:
        """True when several workers on this loop leave Nagle on (see the module docstring)."""
        return self.loop != "uvloop"

    def describe(self, workers: int) -> str:
        return f"uvicorn {self.uvicorn}, {workers} workers, {self.loop} loop, {self.http} parser"


def stack() -> Stack:
    """The best installed choice, as uvicorn's ``auto`` picks it."""
    try:
        uvicorn_version = version("uvicorn")
    except PackageNotFoundError:  # pragma: no cover - the starlette extra brings it
        uvicorn_version = "?"
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return Stack(uvicorn_version, loop, http)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(slots=True)
class Server:
    """A running uvicorn: its supervisor process (the group leader), URL and log file."""

    proc: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    workers: int
    stack: Stack

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM to the whole process group, then SIGKILL after a grace period."""
        _stop_group(self.proc)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - a reused group id we do not own
        return False
    return True


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    pgid = proc.pid  # start_new_session=True: the leader's pid is the group id
    if proc.poll() is None or _group_alive(pgid):
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        proc.wait(_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + _STOP_TIMEOUT
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if proc.poll() is None or _group_alive(pgid):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(_STOP_TIMEOUT)


def _start(target: str, env: dict[str, str], log_path: Path, workers: int) -> Server:
    port = _free_port()
    used = stack()
    cmd = [sys.executable, "-m", "uvicorn", target, "--workers", str(workers)]
    cmd += ["--loop", used.loop, "--http", used.http, "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--no-access-log", "--timeout-graceful-shutdown", "5"]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    server = Server(proc, f"http://127.0.0.1:{port}", log_path, workers, used)
    try:
        _wait_ready(server)
    except BaseException:
        server.stop()
        raise
    return server


def http_get(url: str, timeout: float = 2.0) -> bytes | None:
    """The body of a 200 answer to ``GET url``, or None (any other status, or no answer)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            body: bytes = r.read()
            return body if r.status == 200 else None
    except (urllib.error.URLError, OSError):
        return None


def _wait_ready(server: Server) -> None:
    """Bounded polling: every worker logged its startup and the port answers HTTP."""
    deadline = time.monotonic() + _READY_TIMEOUT
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise ServerError(f"uvicorn exited with {server.proc.returncode}")
        if server.log().count("Application startup complete.") >= server.workers:
            try:
                with urllib.request.urlopen(server.base_url + "/api/documents/0", timeout=2.0):
                    return
            except urllib.error.HTTPError:  # an HTTP answer (404): the server is up
                return
            except (urllib.error.URLError, OSError):
                pass
        time.sleep(0.05)
    raise ServerError(f"uvicorn was not ready within {_READY_TIMEOUT:g}s")


@contextmanager
def serve(
    target: str,
    db_path: str | os.PathLike[str],
    *,
    workers: int = DEFAULT_WORKERS,
    log_path: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[Server]:
    """Run ``uvicorn <target> --workers N`` on 127.0.0.1 and a free port; stop it at the end.

    ``target`` is an import string (``litegate._demo.store_app.app:app``); the database file
    is passed in ``$STORE_DB``. Retries on another port if the chosen one was taken. Blocks
    until every worker is ready (at most 30 s) and, on exit, until the group is gone (at most
    about 20 s, then SIGKILL).

    :raises ServerError: the server did not start
    """
    with tempfile.TemporaryDirectory(prefix="litegate-serve-") as tmp:
        log = Path(log_path) if log_path is not None else Path(tmp) / "server.log"
        full_env = {**os.environ, **(env or {}), "STORE_DB": os.fspath(db_path)}
        full_env.pop("LITEGATE_DEBUG", None)
        server: Server | None = None
        for attempt in range(3):
            try:
                server = _start(target, full_env, log, workers)
                break
            except ServerError as exc:
                text = log.read_text(errors="replace") if log.exists() else ""
                if "address already in use" in text.lower() and attempt < 2:
                    continue
                tail = "\n".join(text.splitlines()[-20:])
                raise ServerError(f"{exc}; server log:\n{tail}") from None
        assert server is not None
        try:
            yield server
        finally:
            server.stop()
