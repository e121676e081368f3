"""The web demonstration: the example store app under uvicorn with 2 workers, under load.

:func:`serve` starts ``examples/store_app`` (litegate's app or the naive one) with uvicorn in
its own process group on a free loopback port and stops the whole group afterwards.
:func:`run_load` drives it with many concurrent HTTP clients (asyncio + httpx), a bounded
number of mixed requests, then reads every acknowledged write back. :func:`run_web_demo` does
both for each app; :func:`format_side_by_side` prints the comparison.

Needs the ``starlette`` extra (starlette, uvicorn, httpx) and the repository's ``examples/``
directory (an editable install or a source checkout).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

import litegate

from .._stats import percentile

__all__ = (
    "APPS",
    "ROUTES",
    "AppRun",
    "LoadResult",
    "Server",
    "ServerError",
    "examples_dir",
    "format_side_by_side",
    "run_app",
    "run_load",
    "run_web_demo",
    "serve",
)

DEFAULT_REQUESTS = 4000
DEFAULT_CLIENTS = 256
DEFAULT_WORKERS = 2
APPS: dict[str, tuple[str, str]] = {
    # label -> (uvicorn import string under examples/, description)
    "litegate": ("store_app.app:app", "litegate (one engine per worker)"),
    "naive sqlite3": ("store_app.naive_app:app", "sqlite3 connection made at startup"),
}
ROUTES = ("add", "get", "search", "mark", "status")
_WEIGHTS = (30, 30, 10, 20, 10)
ROUTE_NAMES = {
    "add": "POST /api/documents",
    "get": "GET  /api/documents/{id}",
    "search": "GET  /api/documents?q=",
    "mark": "POST /api/documents/{id}/retrieved",
    "status": "GET  /api/retrieval/status",
}
_READY_TIMEOUT = 30.0
_STOP_TIMEOUT = 10.0
_REQUEST_TIMEOUT = 30.0
_PER_POOL = 8  # concurrent clients per httpx.AsyncClient
_KEEPALIVE_EXPIRY = 2.0  # seconds; below uvicorn's --timeout-keep-alive (5 s)
_SIGNATURES = ("SQLite objects created in a thread", "database is locked")
_EXC_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Warning)): (.+)$")


class ServerError(RuntimeError):
    """The server could not be started (the message includes the tail of its log)."""


def examples_dir() -> Path | None:
    """The repository's ``examples/`` directory, or None (a non-editable install)."""
    path = Path(litegate.__file__).resolve().parents[2] / "examples"
    return path if (path / "store_app" / "app.py").is_file() else None


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


def _start(target: str, app_dir: Path, env: dict[str, str], log_path: Path, workers: int) -> Server:
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        target,
        "--app-dir",
        str(app_dir),
        "--workers",
        str(workers),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--timeout-graceful-shutdown",
        "5",
    ]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    server = Server(proc, f"http://127.0.0.1:{port}", log_path, workers)
    try:
        _wait_ready(server)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_ready(server: Server) -> None:
    """Bounded polling: every worker logged its startup and the port answers HTTP."""
    deadline = time.monotonic() + _READY_TIMEOUT
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise ServerError(f"uvicorn exited with {server.proc.returncode}")
            if server.log().count("Application startup complete.") >= server.workers:
                try:
                    client.get(server.base_url + "/api/documents/0")
                except httpx.TransportError:
                    pass
                else:
                    return
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

    ``target`` is an import string under ``examples/`` (``store_app.app:app``); the database
    file is passed in ``$STORE_DB``. Retries on another port if the chosen one was taken.

    :raises ServerError: no ``examples/`` directory, or the server did not start
    """
    app_dir = examples_dir()
    if app_dir is None:
        raise ServerError("the examples/ directory is missing (install litegate editable)")
    with tempfile.TemporaryDirectory(prefix="litegate-serve-") as tmp:
        log = Path(log_path) if log_path is not None else Path(tmp) / "server.log"
        full_env = {**os.environ, **(env or {}), "STORE_DB": os.fspath(db_path)}
        full_env.pop("LITEGATE_DEBUG", None)
        server: Server | None = None
        for attempt in range(3):
            try:
                server = _start(target, app_dir, full_env, log, workers)
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


# ---- load -----------------------------------------------------------------------------------


@dataclass(slots=True)
class LoadResult:
    """What the clients saw, and the data check."""

    requests: int = 0
    elapsed: float = 0.0
    status: Counter[int] = field(default_factory=Counter)
    by_route: dict[str, Counter[str]] = field(
        default_factory=lambda: {r: Counter[str]() for r in ROUTES}
    )
    transport_errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    route_latencies: dict[str, list[float]] = field(
        default_factory=lambda: {r: list[float]() for r in ROUTES}
    )
    written: dict[int, str] = field(default_factory=dict)  # id -> title, acknowledged adds
    marks_ok: int = 0
    marks_unknown: int = 0  # no answer: may or may not have been committed
    read_back: int = 0
    read_back_failures: Counter[str] = field(default_factory=Counter)
    retrievals_recorded: int | None = None
    server_errors: Counter[str] = field(default_factory=Counter)
    engine: dict[str, Any] | None = None

    @property
    def ok_2xx(self) -> int:
        return sum(n for code, n in self.status.items() if 200 <= code < 300)

    @property
    def non_2xx(self) -> int:
        return sum(n for code, n in self.status.items() if not 200 <= code < 300)

    @property
    def errors(self) -> int:
        """Requests that did not succeed: non-2xx responses and transport errors."""
        return self.non_2xx + sum(self.transport_errors.values())

    @property
    def lost_updates(self) -> int:
        if self.retrievals_recorded is None:
            return 0
        return max(0, self.marks_ok - self.retrievals_recorded)

    @property
    def data_ok(self) -> bool:
        """Every acknowledged write reads back intact; no acknowledged retrieval is lost."""
        recorded = self.retrievals_recorded
        marks_ok = recorded is not None and (
            self.marks_ok <= recorded <= self.marks_ok + self.marks_unknown
        )
        return self.read_back == len(self.written) and not self.read_back_failures and marks_ok

    def p(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000


async def _load(
    base_url: str,
    requests: int,
    clients: int,
    seed: int,
    progress: Callable[[int, int], None] | None,
) -> LoadResult:
    res = LoadResult()
    rng = random.Random(seed)
    ids: list[int] = []
    issued = 0
    done = 0
    # httpx's pool does work proportional to its connections on every request, so one
    # AsyncClient per few clients (sharing one SSL context) keeps the load generator cheap.
    ssl_context = httpx.create_ssl_context()
    # Idle connections are dropped by the client well before uvicorn's 5 s keep-alive timeout:
    # with both at 5 s (httpx's default) a request sent on a connection the server is closing
    # at that moment fails with "Server disconnected without sending a response".
    limits = httpx.Limits(
        max_connections=_PER_POOL,
        max_keepalive_connections=_PER_POOL,
        keepalive_expiry=_KEEPALIVE_EXPIRY,
    )
    pools = [
        httpx.AsyncClient(
            base_url=base_url, limits=limits, timeout=_REQUEST_TIMEOUT, verify=ssl_context
        )
        for _ in range(-(-clients // _PER_POOL))
    ]
    async with contextlib.AsyncExitStack() as stack:
        for pool in pools:
            await stack.enter_async_context(pool)

        async def one(http: httpx.AsyncClient, route: str, n: int) -> None:
            nonlocal done
            doc_id = rng.choice(ids) if ids else 0
            title = f"doc {n} {rng.choice(('alpha', 'beta', 'gamma', 'delta'))} {seed}"
            t0 = time.perf_counter()
            try:
                if route == "add":
                    body = " ".join(rng.choice(("lorem", "ipsum", "dolor")) for _ in range(20))
                    r = await http.post("/api/documents", json={"title": title, "body": body})
                elif route == "get":
                    r = await http.get(f"/api/documents/{doc_id}")
                elif route == "search":
                    q = rng.choice(("alpha", "beta", "gamma", "delta", f"doc {n % 50}"))
                    r = await http.get("/api/documents", params={"q": q, "limit": 10})
                elif route == "mark":
                    r = await http.post(f"/api/documents/{doc_id}/retrieved")
                else:
                    r = await http.get("/api/retrieval/status")
            except httpx.HTTPError as exc:
                res.latencies.append(time.perf_counter() - t0)
                res.transport_errors[f"{type(exc).__name__}: {str(exc)[:80]}"] += 1
                res.by_route[route]["error"] += 1
                if route == "mark":
                    res.marks_unknown += 1
                done += 1
                return
            elapsed = time.perf_counter() - t0
            res.latencies.append(elapsed)
            res.route_latencies[route].append(elapsed)
            res.status[r.status_code] += 1
            ok = 200 <= r.status_code < 300
            res.by_route[route]["ok" if ok else "error"] += 1
            if ok and route == "add":
                new_id = int(r.json()["id"])
                res.written[new_id] = title
                ids.append(new_id)
            elif ok and route == "mark":
                res.marks_ok += 1
            done += 1

        async def client(http: httpx.AsyncClient) -> None:
            nonlocal issued
            while issued < requests:
                n = issued
                issued += 1
                route = rng.choices(ROUTES, _WEIGHTS)[0]
                if route in ("get", "mark") and not ids:
                    route = "add"
                await one(http, route, n)

        async def ticker() -> None:
            while True:
                if progress is not None:
                    progress(done, requests)
                await asyncio.sleep(0.1)

        t0 = time.perf_counter()
        tick = asyncio.create_task(ticker())
        try:
            await asyncio.gather(*(client(pools[i // _PER_POOL]) for i in range(clients)))
        finally:
            tick.cancel()
        res.elapsed = time.perf_counter() - t0
        res.requests = done
        if progress is not None:
            progress(done, requests)

        # the data check: every acknowledged write, read back through the app
        sem = asyncio.Semaphore(clients)

        async def check(doc_id: int, title: str) -> None:
            http = pools[doc_id % len(pools)]
            async with sem:
                try:
                    r = await http.get(f"/api/documents/{doc_id}")
                except httpx.HTTPError as exc:
                    res.read_back_failures[f"{type(exc).__name__}"] += 1
                    return
            if r.status_code != 200:
                res.read_back_failures[f"HTTP {r.status_code}"] += 1
            elif r.json().get("title") != title:
                res.read_back_failures["wrong content"] += 1
            else:
                res.read_back += 1

        await asyncio.gather(*(check(i, t) for i, t in res.written.items()))
        try:
            r = await pools[0].get("/_litegate")
            if r.status_code == 200:
                res.engine = r.json()
        except httpx.HTTPError:
            pass
    return res


def run_load(
    base_url: str,
    *,
    requests: int = DEFAULT_REQUESTS,
    clients: int = DEFAULT_CLIENTS,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> LoadResult:
    """``requests`` mixed requests from ``clients`` concurrent connections, then read every
    acknowledged write back. ``progress(done, total)`` is called about ten times a second.
    ``retrievals_recorded`` and ``server_errors`` are filled in by :func:`run_app`."""
    return asyncio.run(_load(base_url, requests, clients, seed, progress))


def server_errors(log: str) -> Counter[str]:
    """Exceptions a server log reports (the last line of each traceback), by message."""
    found: Counter[str] = Counter()
    for line in log.splitlines():
        m = _EXC_LINE.match(line.strip())
        if m:
            found[f"{m.group(1)}: {m.group(2)[:90]}"] += 1
    return found


def _retrievals(db_path: str) -> int | None:
    """Read the stopped server's file with plain sqlite3: retrievals recorded."""
    try:
        conn = sqlite3.connect(db_path)
        try:
            row = conn.execute("SELECT coalesce(sum(retrievals), 0) FROM retrieval").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return int(row[0])


@dataclass(slots=True)
class AppRun:
    label: str
    target: str
    result: LoadResult
    server_pid: int
    log: str


def run_app(
    label: str,
    target: str,
    *,
    requests: int = DEFAULT_REQUESTS,
    clients: int = DEFAULT_CLIENTS,
    workers: int = DEFAULT_WORKERS,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    env: dict[str, str] | None = None,
) -> AppRun:
    """Serve ``target`` on a fresh database, load it, stop it, and check the file."""
    with tempfile.TemporaryDirectory(prefix="litegate-web-demo-") as tmp:
        db_path = os.path.join(tmp, "store.db")
        log_path = Path(tmp) / "server.log"
        with serve(target, db_path, workers=workers, log_path=log_path, env=env) as server:
            result = run_load(
                server.base_url,
                requests=requests,
                clients=clients,
                seed=seed,
                progress=progress,
            )
        log = log_path.read_text(errors="replace")
        result.retrievals_recorded = _retrievals(db_path)
        result.server_errors = server_errors(log)
        return AppRun(label, target, result, server.pid, log)


def run_web_demo(
    *,
    requests: int = DEFAULT_REQUESTS,
    clients: int = DEFAULT_CLIENTS,
    workers: int = DEFAULT_WORKERS,
    seed: int | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> list[AppRun]:
    """Each app in :data:`APPS` in turn, under the same load (same seed)."""
    seed = random.randrange(1 << 30) if seed is None else seed
    runs = []
    for label, (target, _) in APPS.items():
        cb = None if progress is None else (lambda d, t, label=label: progress(label, d, t))
        runs.append(
            run_app(
                label,
                target,
                requests=requests,
                clients=clients,
                workers=workers,
                seed=seed,
                progress=cb,
            )
        )
    return runs


def verdict(run: AppRun) -> bool:
    """litegate's bar: zero errors and the data check passed."""
    return run.result.errors == 0 and run.result.data_ok and run.result.requests > 0


def format_side_by_side(runs: list[AppRun], *, workers: int = DEFAULT_WORKERS) -> str:
    """The comparison table, the naive app's errors, and the verdict for the first run."""
    w = 22
    head = f"  {'':<40}" + "".join(f"{r.label:>{w}}" for r in runs)
    lines = [head, "  " + "-" * (40 + w * len(runs))]

    def row(name: str, cells: list[str]) -> None:
        lines.append(f"  {name:<40}" + "".join(f"{c:>{w}}" for c in cells))

    res = [r.result for r in runs]
    row("requests", [str(x.requests) for x in res])
    row("  2xx", [str(x.ok_2xx) for x in res])
    for code in sorted({c for x in res for c in x.status if not 200 <= c < 300}):
        row(f"  {code}", [str(x.status.get(code, 0)) for x in res])
    row("  transport errors", [str(sum(x.transport_errors.values())) for x in res])
    row("requests/s", [f"{x.requests / max(x.elapsed, 1e-9):,.0f}" for x in res])
    row("latency p50 ms", [f"{x.p(0.5):.1f}" for x in res])
    row("latency p99 ms", [f"{x.p(0.99):.1f}" for x in res])
    lines.append("  per route (ok / sent)")
    for route in ROUTES:
        cells = []
        for x in res:
            c = x.by_route[route]
            cells.append(f"{c['ok']}/{c['ok'] + c['error']}")
        row("    " + ROUTE_NAMES[route], cells)
    lines.append("  data check")
    row("    writes acknowledged", [str(len(x.written)) for x in res])
    row("    read back intact", [f"{x.read_back}/{len(x.written)}" for x in res])
    row("    retrievals acked/recorded", [_marks(x) for x in res])
    row("    data check", ["ok" if x.data_ok else "FAIL" for x in res])
    row("server exceptions logged", [str(sum(x.server_errors.values())) for x in res])
    for r in runs:
        x = r.result
        if x.server_errors or x.transport_errors or x.read_back_failures:
            lines += ["", f"  {r.label}: errors"]
            for msg, n in x.server_errors.most_common(5):
                lines.append(f"    server x{n}: {msg}")
            for msg, n in x.transport_errors.most_common(3):
                lines.append(f"    client x{n}: {msg}")
            for msg, n in x.read_back_failures.most_common(3):
                lines.append(f"    read-back x{n}: {msg}")
    lit = runs[0]
    if lit.result.engine:
        e = lit.result.engine
        lines += [
            "",
            f"  {lit.label} engine (one worker's /_litegate): group commits "
            f"{e.get('batches')}, mean batch {e.get('mean_batch_size')}, "
            f"write p99 {e.get('write_p99_ms')} ms, busy retries {e.get('busy_retries')}",
        ]
    lines.append("")
    if verdict(lit):
        lines.append(
            f"PASS: {lit.label} served {lit.result.requests} requests over {workers} worker "
            f"processes with 0 errors; all {len(lit.result.written)} acknowledged writes "
            "read back"
        )
    else:
        lines.append(
            f"FAIL: {lit.label} had {lit.result.errors} error(s); data check "
            f"{'ok' if lit.result.data_ok else 'FAILED'}"
        )
    return "\n".join(lines)


def _marks(x: LoadResult) -> str:
    rec = "?" if x.retrievals_recorded is None else str(x.retrievals_recorded)
    text = f"{x.marks_ok}/{rec}"
    if x.lost_updates:
        text += f" ({x.lost_updates} lost)"
    return text
