"""A minimal HTTP/1.1 keep-alive client for the demo's load generator.

httpx does a lot of Python work per request (its pool, its models); one process of it tops
out near 400 requests/s, far below what the store app serves. Here one request is one
``transport.write`` of prebuilt bytes and the response is parsed by httptools (llhttp, in C,
installed with ``uvicorn[standard]``), so one process sends several thousand requests a
second. It supports just what the demo needs: one request at a time per connection,
``Content-Length`` or chunked responses, a per-request timeout enforced by :func:`watchdog`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import cast

import httptools

__all__ = ("Connection", "connect", "request_bytes", "watchdog")

_JSON = b"Content-Type: application/json\r\n"


def request_bytes(method: str, target: str, host: str, body: bytes | None = None) -> bytes:
    """One HTTP/1.1 request, ready to write (a JSON body when ``body`` is given)."""
    head = f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n".encode()
    if body is None:
        return head + b"\r\n"
    return head + _JSON + b"Content-Length: %d\r\n\r\n" % len(body) + body


class Connection(asyncio.Protocol):
    """One keep-alive connection; :meth:`request` sends one request and awaits its response.

    Runs on one event loop; callbacks (``data_received``, the parser's ``on_*``) run on it too.
    """

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.WriteTransport | None = None
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._body: list[bytes] = []
        self._open = False
        self._timed_out = False
        self.sent_at = 0.0  # monotonic time of the request in flight, 0.0 when idle

    # ---- asyncio.Protocol -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but they are stream ones
        self._transport = cast(asyncio.WriteTransport, transport)
        self._open = True

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._open = False
        if self._timed_out:
            self._fail(TimeoutError("no response within the request timeout"))
        else:
            self._fail(exc or ConnectionResetError("server closed the connection"))

    # ---- httptools callbacks ----------------------------------------------------------------
    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        body = b"".join(self._body)
        self._body.clear()
        if not self._parser.should_keep_alive():
            self._open = False  # the server closes after this response
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((self._parser.get_status_code(), body))

    # ---- client side ------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self._open

    async def request(self, data: bytes) -> tuple[int, bytes]:
        """Send ``data`` (from :func:`request_bytes`) and return ``(status, body)``.

        Blocks (awaits) until the response is complete. Raises ``TimeoutError`` when
        :func:`watchdog` aborted the request, ``ConnectionError`` (``OSError``) when the
        connection is or gets closed first, ``httptools.HttpParserError`` on a malformed reply.
        """
        if not self._open or self._transport is None:
            raise ConnectionResetError("connection is closed")
        waiter: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        self.sent_at = time.monotonic()
        self._transport.write(data)
        try:
            return await waiter
        finally:
            self.sent_at = 0.0

    def abort(self, *, timed_out: bool = False) -> None:
        self._timed_out = self._timed_out or timed_out
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _fail(self, exc: BaseException) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)


async def connect(host: str, port: int) -> Connection:
    """Open a connection; raises ``OSError`` when it cannot be made."""
    _, conn = await asyncio.get_running_loop().create_connection(Connection, host, port)
    return conn


async def watchdog(conns: Iterable[Connection], timeout: float, period: float = 0.5) -> None:
    """Abort every request in flight for longer than ``timeout`` seconds; runs until cancelled.

    One task for all connections instead of a timer per request, which would cost more than
    the request itself.
    """
    while True:
        await asyncio.sleep(period)
        now = time.monotonic()
        for conn in list(conns):
            if conn.sent_at and now - conn.sent_at > timeout:
                conn.abort(timed_out=True)
