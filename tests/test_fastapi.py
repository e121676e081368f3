"""litegate.fastapi: Depends aliases on one engine, the stats router, shutdown draining."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from typing import Annotated

import pytest
from fastapi import Depends, FastAPI
from starlette.testclient import TestClient

import litegate
import litegate.fastapi as lgf
import litegate.starlette as lgs
from litegate.starlette import prometheus_name
from test_starlette import (
    MIGRATIONS,
    PROMETHEUS_ACCEPT,
    check_drained,
    drain_on_shutdown,
    numeric_fields,
    parse_prometheus,
)


def slow_write(conn: sqlite3.Connection, key: int) -> None:
    conn.execute("INSERT INTO notes(src, key) VALUES ('slow', ?)", (key,))
    conn.execute(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20000) "
        "SELECT count(*) FROM c"
    ).fetchone()


def make_app(path: str, migrations: Sequence[litegate.Migration] = MIGRATIONS) -> FastAPI:
    app = FastAPI(lifespan=lgf.lifespan(path, migrations=migrations, max_batch=8))
    app.include_router(lgf.stats_router())
    app.state.threads = {"sync": set(), "async": set()}

    @app.post("/async-add")
    async def async_add(db: lgf.DB, key: int = 0) -> dict[str, int]:
        app.state.threads["async"].add(threading.get_ident())
        await db.execute("INSERT INTO notes(src, key) VALUES ('async', ?)", (key,))
        return {"ok": key}

    @app.post("/sync-add")
    def sync_add(db: lgf.SyncDB, key: int = 0) -> dict[str, int]:
        app.state.threads["sync"].add(threading.get_ident())
        db.execute("INSERT INTO notes(src, key) VALUES ('sync', ?)", (key,))
        return {"ok": key}

    @app.post("/slow-add")
    async def slow_add(db: lgf.DB, key: int) -> dict[str, int]:
        await db.run_write(slow_write, key)
        return {"ok": key}

    @app.get("/count")
    async def count(db: lgf.DB) -> dict[str, int]:
        rows = await db.query("SELECT src, count(*) FROM notes GROUP BY src")
        return dict(rows)

    @app.get("/same")
    async def same(
        adb: lgf.DB,
        sdb: lgf.SyncDB,
        explicit: Annotated[litegate.AsyncDatabase, Depends(lgf.get_db)],
    ) -> dict[str, bool]:
        return {
            "async": adb is app.state.litegate_db and explicit is adb,
            "sync": isinstance(sdb, litegate.Database) and sdb.path == adb.path,
        }

    return app


def test_public_surface() -> None:
    assert isinstance(lgf.__all__, tuple)
    assert list(lgf.__all__) == sorted(lgf.__all__)
    for name in lgf.__all__:
        assert hasattr(lgf, name), name
    assert lgf.lifespan is lgs.lifespan
    assert lgf.prometheus_text is lgs.prometheus_text


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
        assert client.get("/same").json() == {"async": True, "sync": True}
        stats = client.get("/_litegate").json()
        db = app.state.litegate_db
    assert stats["jobs_ok"] == 2 * n
    assert stats["jobs_failed"] == 0
    assert len(app.state.threads["async"]) == 1
    assert not app.state.threads["async"] & app.state.threads["sync"]
    assert db.closed
    with closing(sqlite3.connect(db_path)) as conn:
        rows = conn.execute("SELECT src, count(*), count(DISTINCT key) FROM notes GROUP BY src")
        assert sorted(rows) == [("async", n, n), ("sync", n, n)]
    conn.close()


def test_dependencies_do_not_leak_into_the_schema(db_path: str) -> None:
    with TestClient(make_app(db_path)) as client:
        schema = client.get("/openapi.json").json()
    params = schema["paths"]["/async-add"]["post"].get("parameters", [])
    assert [p["name"] for p in params] == ["key"], "request/state_key must not become parameters"
    assert schema["paths"]["/count"]["get"].get("parameters", []) == []
    assert schema["paths"]["/_litegate"]["get"]["tags"] == ["litegate"]
    assert "text/html" in schema["paths"]["/_litegate/ui"]["get"]["responses"]["200"]["content"]


def test_stats_router_json(db_path: str) -> None:
    with TestClient(make_app(db_path)) as client:
        for i in range(4):
            assert client.post("/async-add", params={"key": i}).status_code == 200
        r = client.get("/_litegate")
    assert r.headers["content-type"] == "application/json"
    assert r.headers["cache-control"] == "no-store"
    stats = r.json()
    assert list(stats) == list(litegate.Stats.__dataclass_fields__)
    assert stats["jobs_ok"] == 4


@pytest.mark.parametrize(
    ("headers", "params"),
    [
        pytest.param({"accept": "text/plain"}, {}, id="accept-text-plain"),
        pytest.param({"accept": PROMETHEUS_ACCEPT}, {}, id="accept-prometheus-scraper"),
        pytest.param({}, {"format": "prometheus"}, id="query-format"),
    ],
)
def test_stats_router_prometheus(
    db_path: str, headers: dict[str, str], params: dict[str, str]
) -> None:
    with TestClient(make_app(db_path)) as client:
        for i in range(3):
            assert client.post("/sync-add", params={"key": i}).status_code == 200
        r = client.get("/_litegate", headers=headers, params=params)
        as_json = client.get("/_litegate").json()
    assert r.headers["content-type"].startswith("text/plain")
    values, kinds = parse_prometheus(r.text)
    assert set(values) == {prometheus_name(k)[0] for k in numeric_fields(as_json)}
    assert values["litegate_jobs_ok_total"] == 3
    assert kinds["litegate_jobs_ok_total"] == "counter"
    assert kinds["litegate_queue_depth"] == "gauge"


def test_stats_router_prefix_and_ui(db_path: str) -> None:
    app = FastAPI(lifespan=lgf.lifespan(db_path))
    app.include_router(lgf.stats_router("/ops/db", include_in_schema=False))
    with TestClient(app) as client:
        assert client.get("/ops/db").json()["jobs_ok"] == 0
        r = client.get("/ops/db/ui")
        assert client.get("/_litegate").status_code == 404
        assert "/ops/db" not in client.get("/openapi.json").json()["paths"]
    assert r.headers["content-type"].startswith("text/html")
    assert 'id="m-queue_depth"' in r.text
    assert '"/ops/db"' in r.text


def test_stats_router_under_include_prefix(db_path: str) -> None:
    app = FastAPI(lifespan=lgf.lifespan(db_path))
    app.include_router(lgf.stats_router(), prefix="/admin")
    with TestClient(app) as client:
        assert client.get("/admin/_litegate").json()["jobs_ok"] == 0
        assert client.get("/admin/_litegate/ui").status_code == 200


def test_missing_lifespan_is_a_clear_error() -> None:
    app = FastAPI()
    app.include_router(lgf.stats_router())

    @app.get("/a")
    async def a(db: lgf.DB) -> None:  # pragma: no cover - never reached
        raise AssertionError

    @app.get("/s")
    def s(db: lgf.SyncDB) -> None:  # pragma: no cover - never reached
        raise AssertionError

    with TestClient(app) as client:
        for url in ("/a", "/s", "/_litegate", "/_litegate/ui"):
            with pytest.raises(RuntimeError, match=r"lifespan=litegate\.starlette\.lifespan"):
                client.get(url)


def test_migrations_applied_at_startup(db_path: str) -> None:
    with TestClient(make_app(db_path)) as client:
        assert client.get("/count").json() == {}
    with closing(sqlite3.connect(db_path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)
    conn.close()


@pytest.mark.usefixtures("no_sniffio_scan")
async def test_shutdown_drains_acknowledged_writes(db_path: str) -> None:
    n = 300
    # FastAPI analyses the routes (and may import pydantic modules) here: off the loop
    app = await asyncio.to_thread(make_app, db_path)
    outcome = await drain_on_shutdown(app, n, lambda i: f"/slow-add?key={i}")
    await asyncio.to_thread(check_drained, db_path, outcome, n)  # plain sqlite3: off the loop
