"""The demo's load generator: several processes, each with its own event loop and connections.

::

    parent (litegate demo) ── spawns P processes; each opens clients/P keep-alive connections
                                      │ start barrier: all connected, the clock starts
    progress ◄── shared counters ──── load: its share of the requests, mixed routes
                                      │ load barrier: no read-back while others still load
    LoadResult ◄── result queue ───── read back every write it saw acknowledged (new
                                      connections), then exit

Each process records what it saw (statuses, latencies, the id and title of each acknowledged
write); the parent merges the parts. Throughput is all requests over the span from the start
barrier to the last process finishing its load. Requests go through :mod:`._http` (prebuilt
bytes, httptools' C parser, uvloop when installed), because one process of httpx tops out
near 400 requests/s.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import queue
import random
import time
from array import array
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from multiprocessing.synchronize import Barrier
from typing import Any
from urllib.parse import quote, urlsplit

import httptools

from .._stats import percentile
from ._http import Connection, connect, request_bytes, watchdog

__all__ = (
    "ROUTES",
    "ROUTE_NAMES",
    "WEIGHTS",
    "LoadError",
    "LoadResult",
    "DEFAULT_PROCESSES",
    "run_load",
)

ROUTES = ("add", "get", "search", "mark", "status")
WEIGHTS = (30, 30, 10, 20, 10)  # percent of each route, in ROUTES order
ROUTE_NAMES = {
    "add": "POST /api/documents",
    "get": "GET  /api/documents/{id}",
    "search": "GET  /api/documents?q=",
    "mark": "POST /api/documents/{id}/retrieved",
    "status": "GET  /api/retrieval/status",
}
_WORDS = ("alpha", "beta", "gamma", "delta")
# One process sends ~40k requests/s to a fixed-response server (`litegate demo --ceiling`),
# far above what the store app serves; a second one leaves headroom, more would only take
# CPU from the server on a small machine.
DEFAULT_PROCESSES = 2
REQUEST_TIMEOUT = 30.0
_START_TIMEOUT = 60.0  # spawning P interpreters and connecting, on a loaded machine
_LOAD_BARRIER_TIMEOUT = 300.0  # then read back anyway: the check stays correct, only mixed


class LoadError(RuntimeError):
    """A load process failed (not the server: the generator itself)."""


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
    route_latencies: dict[str, array[float]] = field(
        default_factory=lambda: {r: array("d") for r in ROUTES}
    )
    written: dict[int, str] = field(default_factory=dict)  # id -> title, acknowledged adds
    marks_ok: int = 0
    marks_unknown: int = 0  # no answer: may or may not have been committed
    read_back: int = 0
    read_back_failures: Counter[str] = field(default_factory=Counter)
    retrievals_recorded: int | None = None
    server_errors: Counter[str] = field(default_factory=Counter)
    engine: dict[str, Any] | None = None
    processes: int = 0  # load processes
    connections: int = 0  # keep-alive connections, all processes together
    started: float = 0.0  # time.monotonic() of the start barrier (the earliest process)
    finished: float = 0.0  # time.monotonic() when the last process finished its load

    @property
    def latencies(self) -> list[float]:
        """Every request's latency in seconds (all routes)."""
        return [x for r in ROUTES for x in self.route_latencies[r]]

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
    def throughput(self) -> float:
        """Requests per second (all answers, errors included)."""
        return self.requests / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def ok_throughput(self) -> float:
        """Successful (2xx) requests per second."""
        return self.ok_2xx / self.elapsed if self.elapsed > 0 else 0.0

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

    def p(self, q: float, route: str | None = None) -> float:
        """The q-quantile of the latency in milliseconds (one route, or all)."""
        samples = self.latencies if route is None else list(self.route_latencies[route])
        return percentile(samples, q) * 1000

    def merge(self, part: LoadResult) -> None:
        """Add one process's part to this result."""
        self.requests += part.requests
        self.status.update(part.status)
        for route in ROUTES:
            self.by_route[route].update(part.by_route[route])
            self.route_latencies[route].extend(part.route_latencies[route])
        self.transport_errors.update(part.transport_errors)
        self.written.update(part.written)
        self.marks_ok += part.marks_ok
        self.marks_unknown += part.marks_unknown
        self.read_back += part.read_back
        self.read_back_failures.update(part.read_back_failures)
        self.processes += 1
        self.connections += part.connections
        self.started = min(self.started or part.started, part.started)
        self.finished = max(self.finished, part.finished)
        self.elapsed = self.finished - self.started


@dataclass(frozen=True, slots=True)
class _Job:
    """One process's share."""

    index: int
    host: str
    port: int
    requests: int
    clients: int
    seed: int
    timeout: float
    weights: tuple[int, ...]


class _Workload:
    """The mixed requests of one process: routes by weight, ids from its own acknowledged adds."""

    def __init__(self, job: _Job) -> None:
        self.job = job
        self.host = f"{job.host}:{job.port}"
        self.rng = random.Random(f"{job.seed}-{job.index}")
        self.ids: list[int] = []
        self.issued = 0

    def next(self) -> tuple[str, bytes, str]:
        """The next request: its route, its bytes and (for an add) the title it writes."""
        n = self.issued
        self.issued += 1
        rng = self.rng
        route = rng.choices(ROUTES, self.job.weights)[0]
        if route in ("get", "mark") and not self.ids:
            route = "add"
        title = ""
        if route == "add":
            title = f"doc {self.job.index}-{n} {rng.choice(_WORDS)} {self.job.seed}"
            body = " ".join(rng.choice(("lorem", "ipsum", "dolor")) for _ in range(20))
            payload = json.dumps({"title": title, "body": body}).encode()
            return route, request_bytes("POST", "/api/documents", self.host, payload), title
        if route == "get":
            target = f"/api/documents/{rng.choice(self.ids)}"
        elif route == "search":
            q = quote(rng.choice((*_WORDS, f"doc {self.job.index}-{n % 50}")))
            target = f"/api/documents?q={q}&limit=10"
        elif route == "mark":
            target = f"/api/documents/{rng.choice(self.ids)}/retrieved"
        else:
            target = "/api/retrieval/status"
        method = "POST" if route == "mark" else "GET"
        return (
            route,
            request_bytes(method, target, self.host, b"" if method == "POST" else None),
            "",
        )


async def _open(job: _Job, conns: set[Connection]) -> Connection:
    """A new connection registered with the watchdog; raises ``OSError``."""
    conn = await connect(job.host, job.port)
    conns.add(conn)
    return conn


async def _load(job: _Job, res: LoadResult, conns: set[Connection], done: Any) -> None:
    """Every client of this process sends requests until the process's share is issued."""
    work = _Workload(job)
    initial = await asyncio.gather(
        *(_open(job, conns) for _ in range(job.clients)), return_exceptions=True
    )

    async def client(conn: Connection | None) -> None:
        while work.issued < job.requests:
            route, data, title = work.next()
            t0 = time.perf_counter()
            try:
                if conn is None or not conn.is_open:
                    if conn is not None:
                        conns.discard(conn)
                    conn = await _open(job, conns)
                status, body = await conn.request(data)
                doc_id = int(json.loads(body)["id"]) if route == "add" and status == 201 else 0
            except (OSError, httptools.HttpParserError, ValueError, KeyError) as exc:
                res.route_latencies[route].append(time.perf_counter() - t0)
                res.transport_errors[f"{type(exc).__name__}: {str(exc)[:80]}"] += 1
                res.by_route[route]["error"] += 1
                if route == "mark":
                    res.marks_unknown += 1
                if conn is not None:
                    conn.abort()
            else:
                res.route_latencies[route].append(time.perf_counter() - t0)
                res.status[status] += 1
                ok = 200 <= status < 300
                res.by_route[route]["ok" if ok else "error"] += 1
                if doc_id:
                    res.written[doc_id] = title
                    work.ids.append(doc_id)
                if ok and route == "mark":
                    res.marks_ok += 1
            res.requests += 1
            done[job.index] = res.requests
        if conn is not None:
            conn.close()

    await asyncio.gather(*(client(c if isinstance(c, Connection) else None) for c in initial))


async def _read_back(job: _Job, res: LoadResult, conns: set[Connection]) -> None:
    """GET every acknowledged write on new connections and compare its title."""
    host = f"{job.host}:{job.port}"
    items = iter(list(res.written.items()))

    async def reader() -> None:
        conn: Connection | None = None
        for doc_id, title in items:  # one iterator shared by the readers of this loop
            try:
                if conn is None or not conn.is_open:
                    conn = await _open(job, conns)
                status, body = await conn.request(
                    request_bytes("GET", f"/api/documents/{doc_id}", host)
                )
                intact = status == 200 and json.loads(body).get("title") == title
            except (OSError, httptools.HttpParserError, ValueError) as exc:
                res.read_back_failures[type(exc).__name__] += 1
                if conn is not None:
                    conn.abort()
                continue
            if intact:
                res.read_back += 1
            else:
                res.read_back_failures[f"HTTP {status}" if status != 200 else "wrong content"] += 1
        if conn is not None:
            conn.close()

    await asyncio.gather(*(reader() for _ in range(min(job.clients, len(res.written)))))


async def _work(job: _Job, start: Barrier, loaded: Barrier, done: Any) -> LoadResult:
    res = LoadResult(processes=1, connections=job.clients)
    conns: set[Connection] = set()
    guard = asyncio.create_task(watchdog(conns, job.timeout))
    try:
        # the barrier waits block, so they run on a thread while this loop stays free
        await asyncio.to_thread(start.wait, _START_TIMEOUT)
        res.started = time.monotonic()
        await _load(job, res, conns, done)
        res.finished = time.monotonic()
        try:
            await asyncio.to_thread(loaded.wait, _LOAD_BARRIER_TIMEOUT)
        except Exception:  # threading.BrokenBarrierError: another process failed or is slow
            pass
        await _read_back(job, res, conns)
    finally:
        guard.cancel()
        for conn in conns:
            conn.close()
    return res


def _run(coro: Coroutine[Any, Any, LoadResult]) -> LoadResult:
    """Run ``coro`` on uvloop when it is installed (as uvicorn does), else on asyncio's loop."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop
    except ImportError:
        pass
    else:
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def _process_main(
    job: _Job, start: Barrier, loaded: Barrier, results: multiprocessing.Queue[Any], done: Any
) -> None:
    """A load process: its result, or the reason it failed, goes to ``results``."""
    try:
        results.put((job.index, _run(_work(job, start, loaded, done)), ""))
    except BaseException as exc:  # report everything: the parent must not wait for ever
        start.abort()
        loaded.abort()
        results.put((job.index, None, f"{type(exc).__name__}: {exc}"))


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (i < total % parts) for i in range(parts)]


def run_load(
    base_url: str,
    *,
    requests: int,
    clients: int,
    processes: int | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    timeout: float = REQUEST_TIMEOUT,
    weights: tuple[int, ...] = WEIGHTS,
) -> LoadResult:
    """``requests`` mixed requests from ``clients`` keep-alive connections spread over
    ``processes`` processes, then read every acknowledged write back.

    Blocks until every process has reported: at most about the load itself plus the spawn
    (bounded by a 60 s start barrier) and ``timeout`` per request in flight.
    ``progress(done, total)`` is called about ten times a second. ``retrievals_recorded``,
    ``server_errors`` and ``engine`` are filled in by the caller (it owns the server).

    :raises LoadError: a load process failed or died
    """
    url = urlsplit(base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    n = max(1, min(processes or DEFAULT_PROCESSES, clients, requests))
    ctx = multiprocessing.get_context("spawn")  # never fork: the caller may run threads
    start, loaded = ctx.Barrier(n), ctx.Barrier(n)
    results: multiprocessing.Queue[Any] = ctx.Queue()
    done = ctx.Array("q", n, lock=False)  # slot i is written by process i only
    jobs = [
        _Job(i, host, port, r, c, seed, timeout, weights)
        for i, (r, c) in enumerate(zip(_split(requests, n), _split(clients, n), strict=True))
    ]
    procs = [
        ctx.Process(
            target=_process_main,
            args=(job, start, loaded, results, done),
            name=f"litegate-demo-load-{job.index}",
            daemon=True,
        )
        for job in jobs
    ]
    for proc in procs:
        proc.start()
    total = LoadResult()
    try:
        failures: list[str] = []
        pending = set(range(n))
        while pending:
            try:
                index, part, error = results.get(timeout=0.1)
            except queue.Empty:
                for i in list(pending):
                    code = procs[i].exitcode
                    if code not in (None, 0):  # died without reporting (killed, crashed)
                        pending.discard(i)
                        failures.append(f"load process {i} exited with code {code}")
                        start.abort()
                        loaded.abort()
            else:
                pending.discard(index)
                if part is None:
                    failures.append(f"load process {index}: {error}")
                else:
                    total.merge(part)
            if progress is not None:
                progress(sum(done[:]), requests)
        if failures:
            raise LoadError("; ".join(failures))
    finally:
        for proc in procs:
            proc.join(5.0)
            if proc.is_alive():
                proc.kill()
                proc.join()
        results.close()
    return total
