"""The loop-lag monitor (tests/loop_lag.py) that every async test runs under."""

from __future__ import annotations

import asyncio
import time

import pytest

import loop_lag


@pytest.mark.blocks_loop("blocks the loop on purpose, to show the monitor sees it")
async def test_a_blocked_loop_fails_and_says_where() -> None:
    def sync_call_on_the_loop() -> None:
        time.sleep(0.2)

    async def blocker() -> None:
        await asyncio.sleep(0.01)
        sync_call_on_the_loop()
        await asyncio.sleep(0.01)

    lag = loop_lag.LoopLag()
    await lag.watch(blocker())
    why = lag.failure()
    assert why is not None
    assert lag.worst > 0.15
    assert "sync_call_on_the_loop" in why  # the sampler found the loop thread there


async def test_a_free_loop_passes() -> None:
    lag = loop_lag.LoopLag()
    await lag.watch(asyncio.sleep(0.1))
    assert lag.failure() is None
    assert len(lag.lags) > 10  # the ticker ran all along


@pytest.mark.blocks_loop("blocks the loop on purpose, inside the wrapped test")
async def test_the_wrapped_test_fails_unless_opted_out_or_on_a_debug_loop() -> None:
    async def held() -> None:
        time.sleep(0.1)  # noqa: ASYNC251 - the point of the test

    if asyncio.get_running_loop().get_debug():  # debug bookkeeping stalls by itself: no check
        await loop_lag.wrap(held, "held", opted_out=False)()
    else:
        with pytest.raises(AssertionError, match="the event loop was held for"):
            await loop_lag.wrap(held, "held", opted_out=False)()
    await loop_lag.wrap(held, "held", opted_out=True)()
