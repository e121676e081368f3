"""A throwaway dqlite cluster on this machine: N ``dqlite-demo`` nodes on 127.0.0.1.

For the dqlite tests (``tests/dqlite``) and ``benchmarks/dqlite_driver.py``; it lives in the
package (private, stdlib only, never imported by litegate itself) so that both can import it
without the benchmarks reaching into ``tests/``.

The nodes are Debian's ``go-dqlite`` binaries (``make dqlite`` installs them): ``dqlite-demo``
is a complete node (Raft, automatic promotion of joiners to voters, the dqlite wire protocol
on ``--db``); the ``dqlite`` shell answers the membership and leader questions (``.cluster``,
``.leader``), so no Python client is needed here. Facts this module is built on (measured,
``../shared/reference/distributed.md``):

- Start takes about 2 s until all nodes are voters. A node restarted on its old data
  directory rejoins without ``--join`` and catches up.
- A new leader is elected about 5 s after the leader dies (dqlite-demo's default timeouts).
- SIGTERM makes a node attempt a leadership handover, which can hang for more than 50 s when
  its peers are stopping too: :meth:`Cluster.stop` sends TERM to all, waits ``grace``, then KILLs.
- The shell, given only dead seeds, retries for ever: every call here has a timeout and is
  given the running nodes only.

Every node is a child of this process and is reaped here. Nodes are also killed when this
process exits without stopping them (an ``atexit`` handler over every recorded PID) and, where
``setpriv`` exists, when the thread that started them dies (``--pdeathsig KILL``), so that a
test run killed outright leaves no node behind. Start and restart nodes from a long-lived
thread (the main thread): the parent-death signal follows the starting thread.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ("DEMO", "SHELL", "Cluster", "ClusterError", "Node", "missing_binaries")

logger = logging.getLogger("litegate")

DEMO = "dqlite-demo"
SHELL = "dqlite"
DEFAULT_SIZE = 3
DEFAULT_DATABASE = "litegate"
START_TIMEOUT = 30.0
LEADER_TIMEOUT = 15.0
STOP_GRACE = 5.0
# One shell call's bound. The shell blocks until some node names a leader (an election takes
# ~5 s), so a call cut short is simply repeated until the caller's deadline.
SHELL_CALL_TIMEOUT = 1.0
_POLL = 0.05
_LOG_TAIL = 2000
_VOTER = 0  # the shell's "Role" for a voter (dqlite's DQLITE_VOTER)

# pid -> process of every node started and not yet reaped, for the exit handler.
_RUNNING: dict[int, subprocess.Popen[bytes]] = {}
_RUNNING_LOCK = threading.Lock()


class ClusterError(RuntimeError):
    """The cluster did not reach the state asked for in time (the message has the nodes'
    logs), or a node was used in a way its state does not allow."""


def missing_binaries() -> list[str]:
    """The go-dqlite programs this module needs that are not on ``PATH`` (``make dqlite``
    installs them)."""
    return [name for name in (DEMO, SHELL) if shutil.which(name) is None]


def _kill_leftovers() -> None:
    # Exit handler: the fixture's finalizer normally stopped everything already.
    with _RUNNING_LOCK:
        leftovers = list(_RUNNING.values())
        _RUNNING.clear()
    for proc in leftovers:
        with contextlib.suppress(OSError):
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(2)


atexit.register(_kill_leftovers)


def _free_ports(count: int, host: str) -> list[int]:
    """``count`` distinct ports free on ``host`` now (all held open together, so no duplicates)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Node:
    """One ``dqlite-demo`` process and its fixed identity: addresses and data directory."""

    __slots__ = ("api_address", "data_dir", "db_address", "index", "log_path", "process")

    def __init__(self, index: int, db_address: str, api_address: str, data_dir: Path) -> None:
        self.index = index
        #: ``host:port`` of the dqlite wire protocol: what clients are given as a seed.
        self.db_address = db_address
        #: the demo's unauthenticated HTTP key/value API (bound to loopback; unused here).
        self.api_address = api_address
        self.data_dir = data_dir
        self.log_path = data_dir.with_suffix(".log")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The running (or last) process's PID; ``None`` before the first start."""
        return None if self.process is None else self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the process to exit and reap it; True if it has."""
        if self.process is None:
            return True
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        with _RUNNING_LOCK:
            _RUNNING.pop(self.process.pid, None)
        return True

    def log_tail(self, chars: int = _LOG_TAIL) -> str:
        """The end of this node's combined stdout/stderr log (every start appends to it)."""
        try:
            data = self.log_path.read_bytes()
        except OSError as e:
            return f"<no log: {e}>"
        return data[-chars:].decode(errors="replace")

    def __repr__(self) -> str:
        state = "running" if self.alive else "stopped"
        return f"<Node {self.index} {self.db_address} pid={self.pid} {state}>"


class Cluster:
    """``size`` dqlite nodes on ``host`` with free ports and private data directories under
    ``root``. Use as a context manager, or call :meth:`start` and (always) :meth:`stop`.

    :param root: a directory for the nodes' data directories and logs (created if needed).
    :param database: the database name the shell's queries name (any name works).
    :param verbose: start the nodes with ``--verbose`` (their logs then show Raft's steps).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        size: int = DEFAULT_SIZE,
        *,
        host: str = "127.0.0.1",
        database: str = DEFAULT_DATABASE,
        verbose: bool = False,
    ) -> None:
        if size < 1:
            raise ValueError(f"a cluster needs at least one node, got size={size}")
        self.root = Path(root)
        self.size = size
        self.host = host
        self.database = database
        self.verbose = verbose
        ports = _free_ports(2 * size, host)
        self.nodes = [
            Node(
                i,
                f"{host}:{ports[2 * i]}",
                f"{host}:{ports[2 * i + 1]}",
                self.root / f"node{i}",
            )
            for i in range(size)
        ]

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> Self:
        """Start every node and wait until all are voters. Blocks up to ``timeout`` seconds
        (about 2 s normally).

        :raises ClusterError: if a node exits or the nodes are not all voters in time; every
            node started is stopped before it is raised, with the nodes' logs in the message.
        """
        deadline = time.monotonic() + timeout
        missing = missing_binaries()
        if missing:
            raise ClusterError(
                f"not on PATH: {', '.join(missing)} (`make dqlite` installs go-dqlite)"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            first, *rest = self.nodes
            self._spawn(first, join=None)
            # The others join through the first, which must be listening by then.
            self._wait_listening(first, deadline)
            for node in rest:
                self._spawn(node, join=first.db_address)
            for node in rest:
                self._wait_listening(node, deadline)
            self.wait_voters(timeout=max(0.0, deadline - time.monotonic()))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, grace: float = STOP_GRACE) -> None:
        """Stop every running node: SIGTERM to all, up to ``grace`` seconds for them to exit
        (a node's TERM handler can hang trying to hand leadership to peers that are stopping
        too), then SIGKILL, and reap them all. Idempotent; never raises for a node that is
        already gone."""
        running = [n for n in self.nodes if n.alive]
        for node in running:
            self._signal(node, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for node in running:
            if not node.wait(max(0.0, deadline - time.monotonic())):
                logger.info("dqlite node %s ignored SIGTERM for %.1f s: killing it", node, grace)
                self._signal(node, signal.SIGKILL)
        for node in self.nodes:
            if node.process is not None and not node.wait(5.0):
                logger.warning("dqlite node %s did not exit after SIGKILL", node)

    def kill(self, node: Node, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to ``node``. For SIGKILL, also wait for the exit and reap it; for other
        signals (SIGTERM, SIGSTOP …) return at once (:meth:`Node.wait` waits)."""
        if not node.alive:
            raise ClusterError(f"{node} is not running")
        self._signal(node, sig)
        if sig == signal.SIGKILL and not node.wait(5.0):
            raise ClusterError(f"{node} did not exit within 5 s of SIGKILL")

    def restart(self, node: Node, timeout: float = START_TIMEOUT) -> None:
        """Start a stopped ``node`` again on its old data directory and addresses. It rejoins
        from its own stored membership (no ``--join``). Blocks until it listens, up to
        ``timeout``; it catches up with the leader afterwards.

        :raises ClusterError: if the node is still running, or exits before it listens.
        """
        if node.alive:
            raise ClusterError(f"{node} is still running: kill or stop it before restarting it")
        node.wait(1.0)
        self._spawn(node, join=None)
        self._wait_listening(node, time.monotonic() + timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- queries ---------------------------------------------------------------------------

    @property
    def seeds(self) -> list[str]:
        """Every node's ``host:port`` (running or not): what a client is configured with."""
        return [n.db_address for n in self.nodes]

    @property
    def running(self) -> list[Node]:
        return [n for n in self.nodes if n.alive]

    @property
    def pids(self) -> list[int]:
        return [n.process.pid for n in self.nodes if n.process is not None and n.alive]

    def node_at(self, address: str) -> Node:
        """The node whose ``--db`` address is ``address``."""
        for node in self.nodes:
            if node.db_address == address:
                return node
        raise ClusterError(f"no node of this cluster has address {address!r}: {self.seeds}")

    def voters(self, timeout: float = SHELL_CALL_TIMEOUT) -> list[str]:
        """The addresses the cluster's membership lists as voters (dead members included:
        membership does not change when a node dies). ``[]`` if no node answered in time."""
        out = self._shell(".cluster", "--format", "json", timeout=timeout)
        if not out:
            return []
        return sorted(m["Address"] for m in json.loads(out) if m.get("Role") == _VOTER)

    def wait_voters(self, count: int | None = None, timeout: float = START_TIMEOUT) -> list[str]:
        """Wait until ``count`` (default: every) node is a voter; return their addresses.

        :raises ClusterError: after ``timeout`` seconds, with the last answer and the logs.
        """
        want = self.size if count is None else count
        deadline = time.monotonic() + timeout
        voters: list[str] = []
        while True:
            remaining = deadline - time.monotonic()
            voters = self.voters(timeout=max(0.1, min(SHELL_CALL_TIMEOUT, remaining)))
            if len(voters) >= want:
                return voters
            if time.monotonic() >= deadline:
                raise self._error(
                    f"{len(voters)} of {want} wanted voters after {timeout:.1f} s ({voters})"
                )
            self._check_running()
            time.sleep(_POLL * 4)

    def wait_leader(self, timeout: float = LEADER_TIMEOUT) -> Node:
        """The running node that is the leader, waiting up to ``timeout`` seconds for one to be
        elected (about 5 s after the leader died).

        :raises ClusterError: if no running node is the leader in time.
        """
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            remaining = deadline - time.monotonic()
            out = self._shell(".leader", timeout=max(0.1, min(SHELL_CALL_TIMEOUT, remaining)))
            if out:
                last = out.strip()
                # A follower can still name the dead leader until its election timer fires.
                with contextlib.suppress(ClusterError):
                    node = self.node_at(last)
                    if node.alive:
                        return node
            if time.monotonic() >= deadline:
                raise self._error(
                    f"no running node is the leader after {timeout:.1f} s (last answer: {last!r})"
                )
            time.sleep(_POLL)

    def leader(self) -> Node:
        """The current leader (waits for an election in progress: :meth:`wait_leader`)."""
        return self.wait_leader()

    def followers(self) -> list[Node]:
        """The running nodes other than the leader."""
        leader = self.leader()
        return [n for n in self.running if n is not leader]

    # -- internals -------------------------------------------------------------------------

    def _spawn(self, node: Node, join: str | None) -> None:
        node.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            DEMO,
            "--db",
            node.db_address,
            "--api",
            node.api_address,
            "--dir",
            str(node.data_dir),
        ]
        if join is not None:
            args += ["--join", join]
        if self.verbose:
            args.append("--verbose")
        setpriv = shutil.which("setpriv")
        if setpriv is not None:
            # setpriv execs the node (same PID) with "kill me when my parent dies" set.
            args = [setpriv, "--pdeathsig", "KILL", "--", *args]
        with open(node.log_path, "ab") as log:
            log.write(f"--- {time.strftime('%H:%M:%S')} {' '.join(args)}\n".encode())
            log.flush()
            # Its own session: a Ctrl-C at the terminal reaches the tests, which stop the
            # nodes in order, not the nodes themselves.
            proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        node.process = proc
        with _RUNNING_LOCK:
            _RUNNING[proc.pid] = proc
        (self.root / f"node{node.index}.pid").write_text(f"{proc.pid}\n")
        logger.debug("dqlite node %s started", node)

    def _signal(self, node: Node, sig: int) -> None:
        if node.process is not None:
            with contextlib.suppress(ProcessLookupError):
                node.process.send_signal(sig)

    def _wait_listening(self, node: Node, deadline: float) -> None:
        host, _, port = node.db_address.rpartition(":")
        while True:
            if not node.alive:
                raise self._error(
                    f"{node} exited while starting (status {node.process and node.process.returncode})"
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection((host, int(port)), timeout=0.5),
            ):
                return
            if time.monotonic() >= deadline:
                raise self._error(f"{node} is not listening on {node.db_address} in time")
            time.sleep(_POLL)

    def _check_running(self) -> None:
        # A node that exits while the cluster forms will not come back: fail now, not at the
        # deadline.
        dead = [n for n in self.nodes if n.process is not None and n.process.poll() is not None]
        if len(dead) == len(self.nodes):
            raise self._error("every node has exited")

    def _shell(self, command: str, *extra: str, timeout: float) -> str:
        """The shell's output for ``command`` asked of the running nodes; "" on timeout or
        error (logged), since callers poll."""
        live = [n.db_address for n in self.nodes if n.alive]
        if not live:
            return ""
        args = [SHELL, "--servers", ",".join(live), *extra, self.database, command]
        try:
            done = subprocess.run(
                args, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired:
            return ""
        if done.returncode != 0:
            logger.debug("%s: exit %d: %s", " ".join(args), done.returncode, done.stderr[-500:])
            return ""
        return done.stdout.decode(errors="replace").strip()

    def _error(self, what: str) -> ClusterError:
        logs = "\n".join(
            f"--- node {n.index} {n.db_address} pid={n.pid} "
            f"{'running' if n.alive else 'exited'} ({n.log_path}):\n{n.log_tail()}"
            for n in self.nodes
        )
        return ClusterError(f"dqlite cluster under {self.root}: {what}\n{logs}")
