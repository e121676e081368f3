"""The loop-lag monitor (tests/loop_lag.py) that every async test runs under."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

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


def test_a_stall_unseen_running_code_is_held_to_the_unseen_limit() -> None:
    """The rule: a late tick fails at LIMIT if the loop thread was seen running code during it,
    else only past UNSEEN_LIMIT (the thread waited for a CPU or the GIL)."""

    def verdict(lags: list[float], seen: list[bool]) -> str | None:
        lag = loop_lag.LoopLag()
        lag.lags, lag.seen = lags, seen
        return lag.failure()

    late = loop_lag.LIMIT + 0.01
    assert verdict([0.001, late], [False, True]) is not None
    assert verdict([0.001, late], [True, False]) is None
    assert verdict([loop_lag.UNSEEN_LIMIT + 0.01], [False]) is not None
    why = verdict([0.001, late, late], [False, True, False])
    assert why is not None and "2 of 3 ticks were late" in why and "in 1 of them" in why


def test_idle_frames_are_the_selector_and_the_ticker() -> None:
    def frame_of(filename: str, function: str) -> Any:
        ns: dict[str, Any] = {}
        src = f"def {function}():\n    import sys\n    return sys._getframe()\n"
        exec(compile(src, filename, "exec"), ns)
        return ns[function]()

    assert loop_lag.is_idle(frame_of("/usr/lib/python3/selectors.py", "select"))
    assert loop_lag.is_idle(frame_of("/x/tests/loop_lag.py", "_tick"))
    assert not loop_lag.is_idle(frame_of("/x/litegate/_async.py", "select"))
    assert not loop_lag.is_idle(sys._getframe())  # a test's code: running, not waiting


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
