"""The web demonstration: the store app under uvicorn with 2 workers, under load, side by side.

:func:`run_app` serves one app (:mod:`.server`) on a fresh database, drives it with the
multi-process load generator (:mod:`.load`), stops it and checks the file; :func:`run_web_demo`
does that for litegate's app and then the naive one under the same load, server settings and
seed; :func:`format_side_by_side` prints the comparison.

Needs the ``starlette`` extra (starlette, ``uvicorn[standard]``). The apps ship inside the
package (``litegate._demo.store_app``), so this runs from an installed wheel too.
"""

from __future__ import annotations

import json
import os
import random
import re
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .load import ROUTE_NAMES, ROUTES, WEIGHTS, LoadResult, run_load
from .server import DEFAULT_WORKERS, Stack, http_get, serve, stack

__all__ = (
    "APPS",
    "DEFAULT_CLIENTS",
    "DEFAULT_REQUESTS",
    "AppRun",
    "format_side_by_side",
    "run_app",
    "run_web_demo",
    "server_errors",
    "verdict",
)

DEFAULT_REQUESTS = 8000
DEFAULT_CLIENTS = 256
APPS: dict[str, str] = {
    # label -> uvicorn import string
    "litegate": "litegate._demo.store_app.app:app",
    "naive sqlite3": "litegate._demo.store_app.naive_app:app",
}
_EXC_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Warning)): (.+)$")


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
    stack: Stack | None = None


def run_app(
    label: str,
    target: str,
    *,
    requests: int = DEFAULT_REQUESTS,
    clients: int = DEFAULT_CLIENTS,
    workers: int = DEFAULT_WORKERS,
    processes: int | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    env: dict[str, str] | None = None,
) -> AppRun:
    """Serve ``target`` on a fresh database, load it, stop it, and check the file.

    Blocks for the server's start and stop and the load (see :func:`.load.run_load`).

    :raises ServerError: the server did not start
    :raises LoadError: a load process failed
    """
    with tempfile.TemporaryDirectory(prefix="litegate-web-demo-") as tmp:
        db_path = os.path.join(tmp, "store.db")
        log_path = Path(tmp) / "server.log"
        with serve(target, db_path, workers=workers, log_path=log_path, env=env) as server:
            result = run_load(
                server.base_url,
                requests=requests,
                clients=clients,
                processes=processes,
                seed=seed,
                progress=progress,
            )
            stats = http_get(server.base_url + "/_litegate")
            result.engine = json.loads(stats) if stats else None
        log = log_path.read_text(errors="replace")
        result.retrievals_recorded = _retrievals(db_path)
        result.server_errors = server_errors(log)
        return AppRun(label, target, result, server.pid, log, server.stack)


def run_web_demo(
    *,
    requests: int = DEFAULT_REQUESTS,
    clients: int = DEFAULT_CLIENTS,
    workers: int = DEFAULT_WORKERS,
    processes: int | None = None,
    seed: int | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> list[AppRun]:
    """Each app in :data:`APPS` in turn, under the same load (same seed, same settings)."""
    seed = random.randrange(1 << 30) if seed is None else seed
    runs = []
    for label, target in APPS.items():
        cb = None if progress is None else (lambda d, t, label=label: progress(label, d, t))
        runs.append(
            run_app(
                label,
                target,
                requests=requests,
                clients=clients,
                workers=workers,
                processes=processes,
                seed=seed,
                progress=cb,
            )
        )
    return runs


def verdict(run: AppRun) -> bool:
    """litegate's bar: zero errors and the data check passed."""
    return run.result.errors == 0 and run.result.data_ok and run.result.requests > 0


def describe_load(requests: int, clients: int, processes: int) -> str:
    """One sentence on the load (the same for both apps)."""
    mix = ", ".join(f"{w}% {r}" for r, w in zip(ROUTES, WEIGHTS, strict=True))
    return (
        f"{requests} mixed requests ({mix}) from {clients} keep-alive connections in "
        f"{processes} load processes (asyncio, {stack().loop} loop, httptools parser)"
    )


def format_side_by_side(runs: list[AppRun], *, workers: int = DEFAULT_WORKERS) -> str:
    """The comparison table, the apps' errors, and the verdict for the first run."""
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
    row("requests/s (all answers)", [f"{x.throughput:,.0f}" for x in res])
    row("  2xx/s", [f"{x.ok_throughput:,.0f}" for x in res])
    row("latency p50 ms", [f"{x.p(0.5):.1f}" for x in res])
    row("latency p99 ms", [f"{x.p(0.99):.1f}" for x in res])
    lines.append("  per route: ok / sent, p50 / p99 ms")
    for route in ROUTES:
        cells = []
        for x in res:
            c = x.by_route[route]
            cells.append(f"{c['ok']}/{c['ok'] + c['error']}")
        row("    " + ROUTE_NAMES[route], cells)
        row("", [f"{x.p(0.5, route):.1f} / {x.p(0.99, route):.1f}" for x in res])
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
            if x.server_errors and any("ConnectionReset" in m for m in x.transport_errors):
                lines.append(
                    "    (uvicorn closes a connection once an exception escapes the app; the "
                    "next request already sent on it is reset)"
                )
            for msg, n in x.read_back_failures.most_common(3):
                lines.append(f"    read-back x{n}: {msg}")
    lit = runs[0]
    lines += [
        "",
        f"  Latency here is under saturation: {lit.result.connections} connections each send "
        "their next request as soon as the last one is answered, so p50 is mostly queueing "
        "(about connections / throughput).",
    ]
    if lit.result.engine:
        e = lit.result.engine
        lines.append(
            f"  {lit.label} engine (one worker's /_litegate): group commits "
            f"{e.get('batches')}, mean batch {e.get('mean_batch_size')}, "
            f"write p99 {e.get('write_p99_ms')} ms, busy retries {e.get('busy_retries')}"
        )
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
