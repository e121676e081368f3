"""The async facade under real ASGI servers (uvicorn, hypercorn): concurrent requests, every
acknowledged write present, the server stopped by PID."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from helpers import free_port

TESTS = Path(__file__).resolve().parent


def server_command(server: str, port: int) -> list[str]:
    if server == "uvicorn":
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "asgi_app:app",
            "--app-dir",
            str(TESTS),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ]
    return [
        sys.executable,
        "-m",
        "hypercorn",
        "--bind",
        f"127.0.0.1:{port}",
        "--log-level",
        "warning",
        "asgi_app:app",
    ]


@pytest.mark.blocks_loop("litegate runs in the server process; this loop runs only httpx")
@pytest.mark.no_debug_loop(
    "litegate runs in the server process: the debug loop would check only httpx"
)
@pytest.mark.usefixtures("no_sniffio_scan")
@pytest.mark.parametrize("server", ["uvicorn", "hypercorn"])
async def test_concurrent_requests_under_a_real_server(server: str, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "ASGI_TEST_DB": str(tmp_path / "asgi.db"), "PYTHONPATH": str(TESTS)}
    # started, waited for and stopped off the loop: the loop here is the load generator's
    proc = await asyncio.to_thread(
        subprocess.Popen,
        server_command(server, port),
        cwd=TESTS,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        limits = httpx.Limits(max_connections=50)
        # built off the loop: it loads the CA certificates (tens of ms)
        client = await asyncio.to_thread(
            httpx.AsyncClient, base_url=base, limits=limits, timeout=30
        )
        async with client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if (await client.get("/count", timeout=1)).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None:
                    raise AssertionError((await asyncio.to_thread(proc.communicate))[0])
                assert time.monotonic() < deadline, "server did not start"
                await asyncio.sleep(0.05)

            sem = asyncio.Semaphore(50)

            async def one(i: int) -> str | None:
                async with sem:
                    r = await client.post("/write", params={"tag": f"w{i}"})
                    return f"w{i}" if r.status_code == 200 else None

            done = await asyncio.gather(*(one(i) for i in range(200)))
            acked = [t for t in done if t is not None]
            assert len(acked) == 200
            assert (await client.get("/count", timeout=5)).json() == {"n": 200}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, 20)
        except subprocess.TimeoutExpired:  # pragma: no cover
            os.killpg(proc.pid, signal.SIGKILL)
            await asyncio.to_thread(proc.wait, 5)
        if proc.stdout is not None:
            proc.stdout.close()
    # graceful shutdown closed the database: the file has everything, WAL checkpointed
    assert await asyncio.to_thread(_count_rows, tmp_path / "asgi.db") == 200


def _count_rows(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT count(*) FROM t").fetchone()[0])
    finally:
        conn.close()
