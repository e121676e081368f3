"""The async facade under real ASGI servers (uvicorn, hypercorn): concurrent requests, every
acknowledged write present, the server stopped by PID."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

TESTS = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


@pytest.mark.parametrize("server", ["uvicorn", "hypercorn"])
def test_concurrent_requests_under_a_real_server(server: str, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "ASGI_TEST_DB": str(tmp_path / "asgi.db"), "PYTHONPATH": str(TESTS)}
    proc = subprocess.Popen(
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
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(base + "/count", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)

        async def load() -> list[str]:
            limits = httpx.Limits(max_connections=50)
            async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
                sem = asyncio.Semaphore(50)

                async def one(i: int) -> str | None:
                    async with sem:
                        r = await client.post("/write", params={"tag": f"w{i}"})
                        return f"w{i}" if r.status_code == 200 else None

                done = await asyncio.gather(*(one(i) for i in range(400)))
            return [t for t in done if t is not None]

        acked = asyncio.run(load())
        assert len(acked) == 400
        assert httpx.get(base + "/count", timeout=5).json() == {"n": 400}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:  # pragma: no cover
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()
    # graceful shutdown closed the database: the file has everything, WAL checkpointed
    import sqlite3

    conn = sqlite3.connect(tmp_path / "asgi.db")
    try:
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 400
    finally:
        conn.close()
