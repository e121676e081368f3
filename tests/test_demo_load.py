"""The web demo's load generator: every request accounted for, across processes; the HTTP
client's failure paths (no answer, closed connection, chunked replies); merging the parts."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

pytest.importorskip("httptools")

import litegate.cli
from litegate._demo._http import connect, request_bytes, watchdog
from litegate._demo.ceiling import fixed_response_server
from litegate._demo.load import ROUTES, LoadResult, run_load

ADDS_ONLY = tuple(100 if r == "add" else 0 for r in ROUTES)


def test_every_request_is_answered_and_counted_across_processes() -> None:
    with fixed_response_server(processes=1) as url:
        res = run_load(url, requests=3001, clients=41, processes=3, weights=ADDS_ONLY, seed=5)
    assert res.processes == 3 and res.connections == 41
    assert res.requests == 3001
    assert res.status == {200: 3001}
    assert not res.transport_errors
    assert res.by_route["add"] == {"ok": 3001}
    assert len(res.latencies) == 3001
    assert res.written == {}  # the fixed reply is a 200 without an id: nothing to read back
    assert res.read_back == 0 and not res.read_back_failures
    assert res.elapsed > 0 and res.throughput > 0


def test_mixed_load_sends_every_route() -> None:
    with fixed_response_server(processes=1) as url:
        res = run_load(url, requests=500, clients=10, processes=2, seed=1)
    # No add is acknowledged with an id (201), so gets and marks turn into adds; search and
    # status still go out.
    sent = {r: res.by_route[r]["ok"] for r in ROUTES}
    assert sum(sent.values()) == 500
    assert sent["add"] > 0 and sent["search"] > 0 and sent["status"] > 0
    assert sent["get"] == sent["mark"] == 0


def test_refused_connections_are_counted_not_raised() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = run_load(f"http://127.0.0.1:{port}", requests=50, clients=4, processes=2)
    assert res.requests == 50
    assert sum(res.transport_errors.values()) == 50
    assert all("ConnectionRefusedError" in msg for msg in res.transport_errors)
    assert res.ok_2xx == 0 and res.errors == 50


def test_ceiling_cli_reports_the_generator_rate(capsys: pytest.CaptureFixture[str]) -> None:
    assert litegate.cli.main(["demo", "--ceiling", "--requests", "2000", "--clients", "20"]) == 0
    out = capsys.readouterr().out
    assert "sends 2000 POSTs" in out and "fixed 200" in out
    assert "requests/s" in out and "errors 0" in out


async def _with_server(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    client: Callable[[int], Awaitable[Any]],
) -> Any:
    """Serve one connection with ``handler`` while ``client(port)`` runs; close both."""
    finished = asyncio.Event()

    async def serve_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except OSError:  # the client aborted
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            finished.set()

    server = await asyncio.start_server(serve_one, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await client(port)
        await asyncio.wait_for(finished.wait(), 10)
        return result
    finally:
        server.close()
        await server.wait_closed()


async def _read_request(reader: asyncio.StreamReader) -> None:
    await reader.readuntil(b"\r\n\r\n")


def test_a_request_without_answer_is_aborted_by_the_watchdog() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await reader.read()  # never answers; returns when the client aborts

    async def client(port: int) -> type[BaseException] | None:
        conn = await connect("127.0.0.1", port)
        guard = asyncio.create_task(watchdog([conn], timeout=0.2, period=0.05))
        try:
            await conn.request(request_bytes("GET", "/", "x"))
        except Exception as exc:
            return type(exc)
        finally:
            guard.cancel()
        return None

    assert asyncio.run(_with_server(silent, client)) is TimeoutError


def test_a_connection_closed_before_the_answer_fails_the_request() -> None:
    async def closer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)  # and close without an answer

    async def client(port: int) -> tuple[type[BaseException] | None, bool]:
        conn = await connect("127.0.0.1", port)
        try:
            await conn.request(request_bytes("GET", "/", "x"))
        except ConnectionError as exc:
            return type(exc), conn.is_open
        return None, conn.is_open

    assert asyncio.run(_with_server(closer, client)) == (ConnectionResetError, False)


def test_chunked_and_keep_alive_answers_are_read_whole() -> None:
    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(2):
            await _read_request(reader)
            writer.write(
                b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
                b'4\r\n{"id\r\n5\r\n": 7}\r\n0\r\n\r\n'
            )
        await reader.read()

    async def client(port: int) -> list[tuple[int, bytes]]:
        conn = await connect("127.0.0.1", port)
        req = request_bytes("POST", "/api/documents", "x", b'{"title": "t"}')
        answers = [await conn.request(req), await conn.request(req)]  # one connection
        conn.close()
        return answers

    assert asyncio.run(_with_server(chunked, client)) == [(201, b'{"id": 7}')] * 2


def test_request_bytes_carry_the_json_body_and_its_length() -> None:
    body = b'{"title": "\xc3\xa9"}'
    data = request_bytes("POST", "/api/documents", "127.0.0.1:8000", body)
    head, _, rest = data.partition(b"\r\n\r\n")
    assert rest == body
    assert head.split(b"\r\n")[0] == b"POST /api/documents HTTP/1.1"
    assert b"Content-Length: %d" % len(body) in head
    assert request_bytes("GET", "/x", "h").endswith(b"Host: h\r\n\r\n")


def test_merge_adds_up_the_parts_and_spans_their_time() -> None:
    a = LoadResult(requests=3, started=10.0, finished=12.0, connections=2, marks_ok=1)
    a.status.update({200: 2, 500: 1})
    a.by_route["add"].update(ok=2, error=1)
    a.route_latencies["add"].extend([0.1, 0.2, 0.3])
    a.written[1] = "x"
    b = LoadResult(requests=2, started=11.0, finished=14.0, connections=3, read_back=1)
    b.status.update({201: 2})
    b.by_route["get"].update(ok=2)
    b.route_latencies["get"].extend([0.4, 0.5])
    b.written[2] = "y"
    b.transport_errors["ReadError"] += 1

    total = LoadResult()
    total.merge(a)
    total.merge(b)
    assert total.requests == 5 and total.processes == 2 and total.connections == 5
    assert total.status == {200: 2, 500: 1, 201: 2}
    assert total.by_route["add"] == {"ok": 2, "error": 1} and total.by_route["get"] == {"ok": 2}
    assert sorted(total.latencies) == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert total.written == {1: "x", 2: "y"}
    assert total.marks_ok == 1 and total.read_back == 1
    assert total.errors == 2  # one 500, one transport error
    assert (total.started, total.finished, total.elapsed) == (10.0, 14.0, 4.0)
