"""litegate.starlette: lifespan, sync and async routes on one engine, stats JSON/Prometheus/UI,
shutdown draining acknowledged writes."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

import litegate
import litegate.starlette as lgs
from litegate.starlette import prometheus_name

MIGRATIONS = [
    "CREATE TABLE notes(id INTEGER PRIMARY KEY, src TEXT NOT NULL, key INT)",
    "CREATE INDEX notes_src ON notes(src)",
]
# A real Prometheus server's scrape header (it lists text/plain among others).
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)
NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


def make_app(path: str, migrations: Sequence[litegate.Migration] = MIGRATIONS) -> Starlette:
    threads: dict[str, set[int]] = {"sync": set(), "async": set()}

    async def async_add(request: Request) -> JSONResponse:
        threads["async"].add(threading.get_ident())
        db = lgs.get_db(request)
        key = int(request.query_params.get("key", "0"))
        await db.execute("INSERT INTO notes(src, key) VALUES ('async', ?)", (key,))
        return JSONResponse({"ok": key})

    def sync_add(request: Request) -> JSONResponse:
        threads["sync"].add(threading.get_ident())
        db = lgs.get_sync_db(request)
        key = int(request.query_params.get("key", "0"))
        db.execute("INSERT INTO notes(src, key) VALUES ('sync', ?)", (key,))
        return JSONResponse({"ok": key})

    def slow_write(conn: sqlite3.Connection, key: int) -> None:
        conn.execute("INSERT INTO notes(src, key) VALUES ('slow', ?)", (key,))
        # Long enough that many requests are still queued when shutdown starts.
        conn.execute(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
            "WHERE x < 20000) SELECT count(*) FROM c"
        ).fetchone()

    async def slow_add(request: Request) -> JSONResponse:
        db = lgs.get_db(request)
        key = int(request.query_params["key"])
        await db.run_write(slow_write, key)
        return JSONResponse({"ok": key})

    async def count(request: Request) -> JSONResponse:
        db = lgs.get_db(request)
        rows = await db.query("SELECT src, count(*) FROM notes GROUP BY src")
        return JSONResponse(dict(rows))

    app = Starlette(
        routes=[
            Route("/async-add", async_add, methods=["POST"]),
            Route("/sync-add", sync_add, methods=["POST"]),
            Route("/slow-add", slow_add, methods=["POST"]),
            Route("/count", count),
            *lgs.stats_routes(),
        ],
        # small batches: a shutdown test needs writes still *queued* when it starts (with
        # the default max_batch the writer may take them all into one batch at once)
        lifespan=lgs.lifespan(path, migrations=migrations, max_batch=8),
    )
    app.state.threads = threads
    return app


def parse_prometheus(text: str) -> tuple[dict[str, float], dict[str, str]]:
    """Values and ``# TYPE`` kinds of a Prometheus text exposition, checking its shape."""
    assert text.endswith("\n")
    values: dict[str, float] = {}
    kinds: dict[str, str] = {}
    helped: set[str] = set()
    for line in text.splitlines():
        assert line, "no blank lines"
        if line.startswith("# HELP "):
            name, help_text = line[len("# HELP ") :].split(" ", 1)
            assert help_text.strip()
            helped.add(name)
        elif line.startswith("# TYPE "):
            name, kind = line[len("# TYPE ") :].split(" ")
            assert kind in ("counter", "gauge"), line
            assert name not in kinds, f"two TYPE lines for {name}"
            kinds[name] = kind
        else:
            assert not line.startswith("#"), line
            name, value = line.split(" ")
            assert name in kinds, f"{name} has no TYPE line before it"
            values[name] = float(value)
    assert set(values) == set(kinds) == helped
    assert all(NAME.match(n) for n in values)
    return values, kinds


def numeric_fields(stats: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in stats.items() if not isinstance(v, str)}


def test_sync_and_async_routes_share_one_engine(db_path: str) -> None:
    app = make_app(db_path)
    n = 60
    with TestClient(app) as client, ThreadPoolExecutor(8) as pool:
        futures = [
            pool.submit(client.post, f"/{kind}-add", params={"key": i})
            for i in range(n)
            for kind in ("sync", "async")
        ]
        assert [f.result(timeout=60).status_code for f in futures] == [200] * (2 * n)
        assert client.get("/count").json() == {"sync": n, "async": n}
        stats = client.get("/_litegate").json()
        db = app.state.litegate_db
        assert isinstance(db, litegate.AsyncDatabase)
    assert stats["jobs_ok"] == 2 * n
    assert stats["jobs_failed"] == 0
    assert 1 <= stats["batches"] <= 2 * n
    # The sync route ran on worker threads, the async one on the loop: one engine served both.
    loop_threads = app.state.threads["async"]
    assert len(loop_threads) == 1
    assert not loop_threads & app.state.threads["sync"]
    assert db.closed, "the lifespan closes the database at shutdown"
    with closing(sqlite3.connect(db_path)) as conn:
        rows = conn.execute("SELECT src, count(*), count(DISTINCT key) FROM notes GROUP BY src")
        assert sorted(rows) == [("async", n, n), ("sync", n, n)]
    conn.close()


def test_stats_json(db_path: str) -> None:
    with TestClient(make_app(db_path)) as client:
        for i in range(7):
            assert client.post("/async-add", params={"key": i}).status_code == 200
        r = client.get("/_litegate")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.headers["cache-control"] == "no-store"
    stats = r.json()
    assert list(stats) == list(litegate.Stats.__dataclass_fields__)
    assert stats["jobs_ok"] == 7
    assert stats["queue_depth"] == 0
    assert stats["queue_capacity"] > 0
    assert stats["max_batch_size"] >= 1
    assert stats["mean_batch_size"] >= 1.0
    assert stats["write_p99_ms"] >= stats["write_p50_ms"] > 0
    assert stats["transactions"] >= 1  # the migrations
    assert isinstance(stats["readers_mode"], str)


@pytest.mark.parametrize(
    ("headers", "params"),
    [
        pytest.param({"accept": "text/plain"}, {}, id="accept-text-plain"),
        pytest.param({"accept": PROMETHEUS_ACCEPT}, {}, id="accept-prometheus-scraper"),
        pytest.param({}, {"format": "prometheus"}, id="query-format"),
        pytest.param({"accept": "application/json"}, {"format": "prometheus"}, id="query-wins"),
    ],
)
def test_stats_prometheus(db_path: str, headers: dict[str, str], params: dict[str, str]) -> None:
    with TestClient(make_app(db_path)) as client:
        for i in range(5):
            assert client.post("/sync-add", params={"key": i}).status_code == 200
        r = client.get("/_litegate", headers=headers, params=params)
        as_json = client.get("/_litegate").json()
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert "version=0.0.4" in r.headers["content-type"]
    values, kinds = parse_prometheus(r.text)
    assert set(values) == {prometheus_name(k)[0] for k in numeric_fields(as_json)}
    assert "litegate_readers_mode" not in values
    assert values["litegate_jobs_ok_total"] == 5
    assert values["litegate_jobs_failed_total"] == 0
    assert values["litegate_queue_capacity"] == as_json["queue_capacity"]
    assert values["litegate_pool_size"] == as_json["pool_size"]
    assert kinds["litegate_jobs_ok_total"] == "counter"
    assert kinds["litegate_batches_total"] == "counter"
    assert kinds["litegate_busy_retries_total"] == "counter"
    assert kinds["litegate_queue_depth"] == "gauge"
    assert kinds["litegate_wal_bytes"] == "gauge"
    assert kinds["litegate_write_p99_seconds"] == "gauge"
    assert values["litegate_write_p99_seconds"] == pytest.approx(as_json["write_p99_ms"] / 1000)
    assert "# HELP litegate_write_p99_seconds write p99 in seconds" in r.text


@pytest.mark.parametrize(
    "accept", ["*/*", "text/html,application/xhtml+xml,*/*;q=0.8", "application/json, text/plain"]
)
def test_stats_json_for_other_accept_headers(db_path: str, accept: str) -> None:
    with TestClient(make_app(db_path)) as client:
        r = client.get("/_litegate", headers={"accept": accept})
    assert r.headers["content-type"] == "application/json"
    assert r.json()["jobs_ok"] == 0


def test_ui_page_is_served(db_path: str) -> None:
    with TestClient(make_app(db_path)) as client:
        r = client.get("/_litegate/ui")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    page = r.text
    assert page.startswith("<!doctype html>")
    for field in litegate.Stats.__dataclass_fields__:
        assert f'id="m-{field}"' in page, field
    assert '"/_litegate"' in page
    assert "__STATS_URL__" not in page
    assert 'id="spark"' in page
    # Self-contained: no external scripts, styles, fonts or images.
    assert not re.search(r"""(src|href)\s*=|https?://|@import|url\(""", page)


def test_ui_page_under_a_custom_prefix(db_path: str) -> None:
    app = Starlette(routes=lgs.stats_routes("/admin/db"), lifespan=lgs.lifespan(db_path))
    with TestClient(app) as client:
        assert client.get("/admin/db").json()["jobs_ok"] == 0
        page = client.get("/admin/db/ui").text
        assert client.get("/_litegate").status_code == 404
    assert '"/admin/db"' in page


def test_state_key(db_path: str) -> None:
    async def route(request: Request) -> JSONResponse:
        db = lgs.get_db(request, "store")
        assert request.state.store is db
        await db.execute("CREATE TABLE IF NOT EXISTS t(x)")
        return JSONResponse({"ok": True})

    app = Starlette(
        routes=[Route("/", route), *lgs.stats_routes(state_key="store")],
        lifespan=lgs.lifespan(db_path, state_key="store"),
    )
    with TestClient(app) as client:
        assert client.get("/").json() == {"ok": True}
        assert client.get("/_litegate").json()["jobs_ok"] == 1


def test_missing_lifespan_is_a_clear_error(db_path: str) -> None:
    async def route(request: Request) -> JSONResponse:
        lgs.get_db(request)
        return JSONResponse({})

    def sync_route(request: Request) -> JSONResponse:
        lgs.get_sync_db(request)
        return JSONResponse({})

    app = Starlette(routes=[Route("/a", route), Route("/s", sync_route), *lgs.stats_routes()])
    with TestClient(app) as client:
        for url in ("/a", "/s", "/_litegate", "/_litegate/ui"):
            with pytest.raises(RuntimeError, match=r"lifespan=litegate\.starlette\.lifespan"):
                client.get(url)


def test_migrations_applied_at_startup(db_path: str) -> None:
    with TestClient(make_app(db_path, MIGRATIONS[:1])) as client:
        assert client.post("/async-add", params={"key": 1}).status_code == 200
    with closing(sqlite3.connect(db_path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (1,)
    conn.close()
    # A second start with one more step applies only that step and keeps the data.
    with TestClient(make_app(db_path)) as client:
        assert client.get("/count").json() == {"async": 1}
        stats = client.get("/_litegate").json()
    assert stats["jobs_ok"] == 0  # the migration ran as a transaction, not as a write job
    with closing(sqlite3.connect(db_path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (2,)
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert {"notes", "notes_src"} <= names


def test_failed_migration_aborts_startup(db_path: str) -> None:
    app = make_app(db_path, [*MIGRATIONS, "CREATE TABLE notes(x)"])
    with pytest.raises(litegate.MigrationError, match="migration 3 of 3"):
        with TestClient(app):
            pass  # pragma: no cover
    with closing(sqlite3.connect(db_path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (0,)
    conn.close()


# ---- shutdown drains queued writes ---------------------------------------------------------
async def drain_on_shutdown(app: Any, n: int, url: Callable[[int], str]) -> dict[str, Any]:
    """Serve ``app`` the way an ASGI server does (lifespan messages, state copied into each
    request's scope), fire ``n`` concurrent writes, and send ``lifespan.shutdown`` while many
    of them are still queued. Returns what happened."""
    state: dict[str, Any] = {}
    to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": state}
    lifespan_task = asyncio.create_task(app(scope, to_app.get, from_app.put))
    await to_app.put({"type": "lifespan.startup"})
    assert (await asyncio.wait_for(from_app.get(), 10))["type"] == "lifespan.startup.complete"

    async def with_state(scope: Any, receive: Any, send: Any) -> None:
        await app(dict(scope, state=dict(state)), receive, send)

    shutdown = asyncio.Event()
    started = 0

    async def one(client: httpx.AsyncClient, i: int) -> tuple[int, int, bool]:
        nonlocal started
        started += 1
        r = await client.post(url(i))
        return i, r.status_code, shutdown.is_set()

    transport = httpx.ASGITransport(app=with_state, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        tasks = []
        for i in range(n):
            tasks.append(asyncio.create_task(one(client, i)))
            # let the loop turn after each request: requests started together build and parse
            # (httpx, the framework) in one loop iteration -- with an eager task factory inside
            # this very step; four at a time held the loop 28-37 ms in CI under coverage, the
            # stall samples in request parsing: the test's load, not what this measures
            await asyncio.sleep(0)
        db = app.state.litegate_db
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while True:
            queued_at_shutdown = (await db.stats()).queue_depth
            if started == n and queued_at_shutdown >= n // 4:
                break
            assert loop.time() < deadline, "the writes never queued up"
            await asyncio.sleep(0.001)
        shutdown.set()
        await to_app.put({"type": "lifespan.shutdown"})
        # Writes that arrive during shutdown fail cleanly (Closed -> 500) or commit; none hang.
        for i in range(n, n + 20):  # (one per loop turn, as above: 20 at once held it 38 ms)
            tasks.append(asyncio.create_task(one(client, i)))
            await asyncio.sleep(0)
        done = await asyncio.wait_for(from_app.get(), 60)
        results = await asyncio.wait_for(asyncio.gather(*tasks), 60)
    await asyncio.wait_for(lifespan_task, 10)
    assert done["type"] == "lifespan.shutdown.complete", done
    return {"results": results, "queued_at_shutdown": queued_at_shutdown, "closed": db.closed}


def check_drained(db_path: str, outcome: dict[str, Any], n: int) -> None:
    results = outcome["results"]
    assert len(results) == n + 20
    acked = {i for i, status, _ in results if status == 200}
    assert {status for _, status, _ in results} <= {200, 500}
    assert outcome["closed"]
    assert outcome["queued_at_shutdown"] >= n // 4
    # Writes still queued when shutdown began were committed and acknowledged, not dropped.
    assert any(late and status == 200 for _, status, late in results)
    with closing(sqlite3.connect(db_path)) as conn:
        stored = {k for (k,) in conn.execute("SELECT key FROM notes WHERE src = 'slow'")}
    conn.close()
    assert acked <= stored, f"acknowledged but lost: {sorted(acked - stored)[:10]}"
    assert stored == acked, f"stored but reported as failed: {sorted(stored - acked)[:10]}"


@pytest.mark.usefixtures("no_sniffio_scan")
async def test_shutdown_drains_acknowledged_writes(db_path: str) -> None:
    n = 300
    app = make_app(db_path)
    outcome = await drain_on_shutdown(app, n, lambda i: f"/slow-add?key={i}")
    await asyncio.to_thread(check_drained, db_path, outcome, n)  # plain sqlite3: off the loop


def test_lifespan_closes_on_testclient_exit(tmp_path: Path) -> None:
    path = str(tmp_path / "x.db")
    app = make_app(path)
    with TestClient(app) as client:
        client.post("/async-add", params={"key": 1})
        db = app.state.litegate_db
        assert not db.closed
    assert db.closed


def test_exception_handlers_answer_503_for_closed_and_timeouts(db_path: str) -> None:
    async def closed(request: Request) -> JSONResponse:
        raise litegate.Closed("closing")

    async def timed_out(request: Request) -> JSONResponse:
        raise litegate.PoolTimeout("no reader")

    async def bug(request: Request) -> JSONResponse:
        raise litegate.Misuse("a bug stays a 500")

    app = Starlette(
        routes=[Route("/closed", closed), Route("/timeout", timed_out), Route("/bug", bug)],
        lifespan=lgs.lifespan(db_path),
        exception_handlers=lgs.exception_handlers,
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/closed")
        assert (r.status_code, r.headers["retry-after"], r.json()["error"]) == (503, "5", "Closed")
        r = client.get("/timeout")
        assert (r.status_code, r.headers["retry-after"]) == (503, "1")
        assert r.json()["error"] == "PoolTimeout"
        assert client.get("/bug").status_code == 500
