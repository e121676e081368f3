"""The store app (litegate._demo.store_app): every route in process (TestClient), then end to
end under uvicorn with 2 worker processes and 256 concurrent connections: zero non-2xx, every
write read back."""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("httpx")  # TestClient
pytest.importorskip("httptools")

from starlette.testclient import TestClient

from litegate._demo import web
from litegate._demo.load import ROUTES, run_load
from litegate._demo.server import serve


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("STORE_DB", str(tmp_path / "store.db"))
    from litegate._demo.store_app.app import app

    with TestClient(app) as c:  # a context manager: the lifespan runs
        yield c


def test_every_route(client: TestClient, tmp_path: Path) -> None:
    r = client.post("/api/documents", json={"title": "alpha report", "body": "text"})
    assert r.status_code == 201
    a = r.json()["id"]
    b = client.post("/api/documents", json={"title": "beta notes"}).json()["id"]
    assert b != a

    doc = client.get(f"/api/documents/{a}").json()
    assert doc["title"] == "alpha report" and doc["body"] == "text"
    assert doc["status"] == "pending" and doc["retrievals"] == 0
    assert client.get("/api/documents/999").status_code == 404

    listed = client.get("/api/documents").json()  # the `def` route
    assert [d["id"] for d in listed] == [b, a]
    assert [d["id"] for d in client.get("/api/documents", params={"q": "alpha"}).json()] == [a]
    assert client.get("/api/documents", params={"limit": "1"}).json()[0]["id"] == b

    assert client.post(f"/api/documents/{a}/retrieved").json() == {
        "id": a,
        "status": "retrieved",
        "retrievals": 1,
    }
    assert client.post(f"/api/documents/{a}/retrieved").json()["retrievals"] == 2
    assert client.post("/api/documents/999/retrieved").status_code == 404

    status = client.get("/api/retrieval/status").json()  # asyncio.to_thread
    assert status["pending"] == 1 and status["retrieved"] == 1
    assert status["documents"] == 2 and status["retrievals"] == 2
    assert status["pid"] == os.getpid()

    stats = client.get("/_litegate").json()
    assert stats["jobs_ok"] >= 2
    assert client.get("/_litegate/ui").status_code == 200

    for bad in ({"body": "no title"}, {"title": ""}, {"title": "x", "body": 3}, [1]):
        assert client.post("/api/documents", json=bad).status_code == 400
    assert client.post("/api/documents", content=b"not json").status_code == 400
    assert client.get("/api/documents", params={"limit": "x"}).status_code == 400

    conn = sqlite3.connect(tmp_path / "store.db")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()
    finally:
        conn.close()
    assert version == (2,)  # migrations ran at startup


def _group_gone(pgid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def _children(pgid: int) -> list[int]:
    """Processes of the group running a uvicorn worker (multiprocessing spawn)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_end_to_end_uvicorn_two_workers(tmp_path: Path) -> None:
    db_path = tmp_path / "store.db"
    with serve(web.APPS["litegate"], db_path, workers=2) as server:
        pid = server.pid
        assert server.base_url.startswith("http://127.0.0.1:")
        assert len(_children(pid)) == 2, server.log()
        assert (server.stack.loop, server.stack.http) == ("uvloop", "httptools")  # [standard]
        result = run_load(server.base_url, requests=1500, clients=256, seed=7)
        log = server.log()
    assert _group_gone(pid), "uvicorn's process group outlived the test"

    assert result.requests == 1500 and result.processes == 2 and result.connections == 256
    assert result.non_2xx == 0, (dict(result.status), web.server_errors(log))
    assert not result.transport_errors, result.transport_errors
    assert all(result.by_route[r]["ok"] > 0 for r in ROUTES), result.by_route
    assert len(result.written) > 100
    assert result.read_back == len(result.written), result.read_back_failures
    assert not web.server_errors(log), log[-3000:]

    conn = sqlite3.connect(db_path)  # the stopped server's file, with plain sqlite3
    try:
        ids = {row[0] for row in conn.execute("SELECT id FROM documents")}
        retrievals = conn.execute("SELECT sum(retrievals) FROM retrieval").fetchone()[0]
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()
    assert ids == set(result.written)  # every acknowledged write, and nothing else
    assert retrievals == result.marks_ok  # no lost read-modify-write across the 2 processes
    assert integrity == "ok"
