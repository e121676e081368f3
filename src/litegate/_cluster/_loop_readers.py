"""Reads for asyncio callers on the caller's own event loop: reader sessions of the driver's
asyncio connection, bound to that loop and awaited there.

A cluster read is a round trip to the leader; sent from a reader thread it also cost two
thread hops and the GIL's hand-over each way: a point read took 0.83 ms at the median where
the driver alone, on the loop, took 0.38 ms. A :class:`LoopReaders` is one loop's small pool
of :class:`AsyncLink` (opened as needed, at most ``size``); a read borrows one, awaits its
statement and gives it back -- no thread. A session that dies is dropped and the read tried
again on another, within the caller's deadline (a read takes effect nowhere).

A task that finds every session busy waits in line for one (first come, first served) until
its deadline. What a waiter is handed -- a session, or room to open one in place of a session
that died -- goes on to the next waiter if it was cancelled meanwhile: nothing is lost, and no
wait outlasts its deadline while a session is free. Once the pool is closed or abandoned it
opens nothing more: reads under way and waiting get :class:`~litegate.Closed`.

Fields: a pool and its links are used on their loop's thread only (the engine keeps one pool
per loop, found under its lock); the engine's ``close()`` from another thread calls
:meth:`LoopReaders.abandon` on the pool's loop (``call_soon_threadsafe``) while that loop runs,
directly once it is closed.
"""

from __future__ import annotations

import asyncio
from collections import deque
from time import monotonic
from typing import Any

from .._errors import Closed, PoolTimeout, Unavailable
from ._link import AsyncSession, LinkLost, OpenAsyncSession, Outcome, SeedTurns, classify, refuse
from ._url import ClusterAddress

__all__ = ("AsyncLink", "LoopReaders")


class AsyncLink:
    """A reader session to the leader on one loop: opened through the seeds, its statements
    checked (:func:`~._link.refuse`) and their errors classified as a :class:`~._link.Link`'s."""

    def __init__(
        self,
        open_session: OpenAsyncSession,
        address: ClusterAddress,
        settings: dict[str, Any],
    ) -> None:
        self._open_session = open_session
        self._address = address
        self._settings = settings  # timeout, busy_timeout, row_factory
        self._session: AsyncSession | None = None

    @property
    def is_open(self) -> bool:
        s = self._session
        return s is not None and not s.closed

    async def open(self, deadline: float, first: int) -> int:
        """Connect through the seeds (from ``first``); the index of the one that worked.
        :raises Unavailable: no leader within ``deadline``"""
        turns = SeedTurns(self._address, first, deadline)
        while True:
            for at, seed, left in turns.round():
                session: AsyncSession | None = None
                try:
                    session = self._open_session(
                        seed,
                        self._address.name,
                        **{
                            **self._settings,
                            "timeout": max(min(self._settings["timeout"], left), 0.05),
                        },
                    )
                    await session.connect()
                except Exception as exc:  # (each seed's reason is reported)
                    if session is not None:
                        session.force_close()
                    turns.failed(seed, exc)
                    continue
                except BaseException:  # (cancelled while connecting: its socket goes too)
                    if session is not None:
                        session.force_close()
                    raise
                self._session = session
                return at
            await asyncio.sleep(turns.pause())

    @property
    def session(self) -> AsyncSession:
        """The open session. :raises LinkLost: none is open"""
        session = self._session
        if session is None or session.closed:
            raise LinkLost("the connection to the leader is closed")
        return session

    @property
    def in_transaction(self) -> bool:
        session = self._session
        return session is not None and not session.closed and session.in_transaction

    async def run(self, sql: str, params: Any, many: bool = False) -> Outcome:
        """A caller's statement (refused before it is sent if dqlite cannot take it)."""
        refuse(sql)
        return await self.control(sql, params, many)

    async def control(
        self, sql: str, params: Any = (), many: bool = False, *, commit: bool = False
    ) -> Outcome:
        """A statement sent as it is (the engine's ``BEGIN``, ``SAVEPOINT``, ``COMMIT`` ...);
        ``commit``: a COMMIT, whose lost session leaves its outcome unknown."""
        session = self.session
        try:
            return await session.run(sql, params, many)
        except Exception as exc:
            error = classify(exc, session.closed, commit)
            if isinstance(error, LinkLost):
                self.drop()
            raise error from exc

    async def rollback(self) -> None:
        """``ROLLBACK`` if a transaction is open; a lost session is simply dropped (the
        cluster ends the transaction of a closed session). Never raises but a cancellation."""
        if not self.in_transaction:
            return
        try:
            await self.control("ROLLBACK")
        except Exception:  # (the session is dropped: the cluster rolls back)
            self.drop()

    def drop(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.force_close()

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            try:
                await session.close()
            except Exception:  # (it is being discarded)
                session.force_close()
            except BaseException:  # (cancelled before the server answered: the socket goes)
                session.force_close()
                raise


class LoopReaders:
    """One event loop's reader sessions (see the module docstring)."""

    def __init__(
        self,
        open_session: OpenAsyncSession,
        address: ClusterAddress,
        size: int,
        settings: dict[str, Any],
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self._open_session = open_session
        self._address = address
        self._size = size
        self._settings = settings
        self._idle: list[AsyncLink] = []
        self._all: set[AsyncLink] = set()
        # Tasks waiting for a session, in arrival order; each is handed one, or None: room to
        # open one (or, closed, to find that out).
        self._waiters: deque[asyncio.Future[AsyncLink | None]] = deque()
        self._next_seed = 0
        self._closed = False  # (one way: close() or abandon())

    async def query(self, sql: str, params: Any, deadline: float) -> Outcome:
        """``sql``'s outcome on a reader of this loop, tried again on another while the
        leader is being found. :raises PoolTimeout, Unavailable:"""
        while True:
            link = await self._borrow(deadline)
            try:
                out = await link.run(sql, params)
            except LinkLost as lost:
                self._give_back(link)
                if monotonic() >= deadline:
                    raise Unavailable(f"the leader was lost: {lost}") from lost
                continue
            except asyncio.CancelledError:
                link.drop()  # (its request may be half-answered: the session goes)
                self._give_back(link)
                raise
            except BaseException:
                self._give_back(link)
                raise
            self._give_back(link)
            return out

    async def _borrow(self, deadline: float) -> AsyncLink:
        while True:
            if self._closed:
                raise Closed(f"the database {self._address} is closed")
            if self._idle:
                return self._idle.pop()
            if len(self._all) < self._size:
                link = AsyncLink(self._open_session, self._address, self._settings)
                self._all.add(link)
                try:
                    self._next_seed = await link.open(deadline, self._next_seed)
                except BaseException:
                    self._all.discard(link)
                    self._wake(None)
                    raise
                if self._closed:  # (while it opened: nobody would close it)
                    link.drop()
                    raise Closed(f"the database {self._address} is closed")
                return link
            # Not asyncio.wait_for: on 3.11 a task cancelled as its waiter is handed a session
            # gets the session and loses the cancellation. The deadline only fails the waiter;
            # a cancellation always raises, and what the waiter was handed goes on.
            waiter: asyncio.Future[AsyncLink | None] = self.loop.create_future()
            self._waiters.append(waiter)
            timer = self.loop.call_later(max(deadline - monotonic(), 0.0), self._expire, waiter)
            try:
                got = await waiter
            except BaseException:  # (timed out; or cancelled -- as it was handed something?)
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    self._pass_on(waiter.result())
                raise
            finally:
                timer.cancel()
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
            if got is not None:
                return got

    def _expire(self, waiter: asyncio.Future[AsyncLink | None]) -> None:
        if not waiter.done():  # (else it was handed something first: it takes it)
            waiter.set_exception(
                PoolTimeout(
                    f"no reader connection became free in time (pool of {self._size}, "
                    f"{len(self._waiters)} waiting)"
                )
            )

    def _pass_on(self, handed: AsyncLink | None) -> None:
        """What a cancelled waiter was handed, to the next (or the pool)."""
        if handed is not None:
            self._give_back(handed)
        else:
            self._wake(None)

    def _give_back(self, link: AsyncLink) -> None:
        if not link.is_open:
            self._all.discard(link)
            self._wake(None)  # (room for a new one)
            return
        self._wake(link)

    def _wake(self, link: AsyncLink | None) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(link)
                return
        if link is not None:
            self._idle.append(link)

    def _shut(self) -> list[AsyncLink]:
        """Closed from now on: every waiter woken (to fail); every session, to be closed."""
        self._closed = True
        links, self._all, self._idle = list(self._all), set(), []
        waiters, self._waiters = list(self._waiters), deque()
        if not self.loop.is_closed():  # (a closed loop runs no waiter again: none to wake)
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
        return links

    async def close(self) -> None:
        """Close every session with a word to the server; dropped if cancelled meanwhile."""
        links = self._shut()
        try:
            for link in links:
                await link.close()
        finally:
            for link in links:  # (closed ones have nothing left to drop)
                link.drop()

    def abandon(self) -> None:
        """Drop every session's socket (the pool is no longer used): on its loop, or with the
        loop closed."""
        for link in self._shut():
            link.drop()
