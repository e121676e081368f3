"""``litegate demo --ceiling``: how fast the demo's load generator itself can go.

The generator (:mod:`.load`) sends the demo's load to the cheapest possible server: a few
processes that answer every request with a fixed ``200 ok`` (asyncio + httptools, uvloop when
installed, one ``SO_REUSEPORT`` port). What it reaches is the generator's ceiling on this
machine: the demo's figures for the store app mean something only well below it.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.synchronize import Event
from typing import cast

import httptools

from .load import ROUTES, LoadResult, run_load

__all__ = ("fixed_response_server", "measure")

_RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"
_READY_TIMEOUT = 30.0


class _Fixed(asyncio.Protocol):
    """Answers each complete request on the connection with :data:`_RESPONSE`."""

    def __init__(self) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.WriteTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.WriteTransport, transport)  # uvloop: not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            if self._transport is not None:
                self._transport.close()

    def on_message_complete(self) -> None:
        if self._transport is not None:
            self._transport.write(_RESPONSE)


async def _serve(port: int, ready: Event) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    server = await asyncio.get_running_loop().create_server(_Fixed, sock=sock)
    ready.set()
    await server.serve_forever()


def _server_main(port: int, ready: Event) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve(port, ready))
    else:
        uvloop.run(_serve(port, ready))


def _reserved_port() -> tuple[socket.socket, int]:
    """A port bound (with SO_REUSEPORT) and kept until the servers have bound it too."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", 0))
    return sock, sock.getsockname()[1]


@contextmanager
def fixed_response_server(processes: int = 2) -> Iterator[str]:
    """``processes`` fixed-response server processes on one port; yields the base URL.

    Blocks until they listen (at most 30 s); they are killed on exit.

    :raises RuntimeError: a server process did not start
    """
    ctx = multiprocessing.get_context("spawn")
    reserve, port = _reserved_port()
    events = [ctx.Event() for _ in range(processes)]
    procs = [
        ctx.Process(target=_server_main, args=(port, ev), daemon=True, name="litegate-fixed")
        for ev in events
    ]
    try:
        for proc in procs:
            proc.start()
        for ev in events:
            if not ev.wait(_READY_TIMEOUT):
                raise RuntimeError("the fixed-response server did not start")
        reserve.close()  # never listened: it takes no connections
        yield f"http://127.0.0.1:{port}"
    finally:
        reserve.close()
        for proc in procs:
            proc.kill()
            proc.join()


def measure(
    *, requests: int = 100_000, clients: int = 256, processes: int | None = None
) -> LoadResult:
    """The generator's throughput against :func:`fixed_response_server` (POSTs like the demo's
    adds: the fixed reply carries no id, so every request is one)."""
    weights = tuple(100 if r == "add" else 0 for r in ROUTES)
    with fixed_response_server() as url:
        return run_load(
            url, requests=requests, clients=clients, processes=processes, weights=weights
        )
