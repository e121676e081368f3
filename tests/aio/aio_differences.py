"""The tests of aiosqlite's own suite that ``litegate.aio`` fails on purpose, with why.

docs/aio.md lists the same (tests/aio/test_aio_conformance.py checks both ways: every failing test
is listed here, every test listed here fails, and the docs name each). Keys: ``Class.method``.
"""

from __future__ import annotations

DIFFERENCES = {
    "SmokeTest.test_multiple_queries": (
        "transactions belong to the calling task: the ten INSERTs run in ten tasks "
        "(asyncio.gather), each opens its own implicit transaction, and each is rolled back "
        "when its task ends without commit(); the parent's commit() commits only its own "
        "(aiosqlite shares one transaction among all tasks of a connection)"
    ),
    "SmokeTest.test_close_blocking_until_transaction_queue_empty": (
        "reads aiosqlite's private request queue (Connection._tx); litegate.aio has no "
        "thread of its own to queue requests for (close() does wait for every call begun)"
    ),
}
