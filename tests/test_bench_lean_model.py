"""benchmarks/lean_async_tx.py: the lean model it compares litegate with keeps the invariant
(its figures are only worth reading if both sides did the same work)."""

from __future__ import annotations

import asyncio
import importlib.util
import sqlite3
import sys
from pathlib import Path
from types import ModuleType

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "lean_async_tx.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lean_async_tx", _PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["lean_async_tx"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("mode", ["lean", "litegate"])
def test_both_sides_run_transfers_that_keep_the_sum(mode: str, tmp_path: Path) -> None:
    lean = _load()
    steering = _steering()
    run = lean._run(mode, 16, 0.0, 300, directory=str(tmp_path))
    done, _ = asyncio.run(run)  # (exits if the sum is not kept)
    assert done >= 300
    # Only an instruction-count child lifts litegate's clocks: a run in this process must
    # leave them as they were (the tests that run after it depend on them).
    assert _steering() == steering


def _steering() -> tuple[float, float, float]:
    from litegate._engine import _costs, _inline

    return (_inline.INLINE_BUDGET, _inline._HARD_BUDGET, _costs.SLOW_SECONDS)


def test_a_transaction_that_raises_undoes_only_its_own_part(tmp_path: Path) -> None:
    lean = _load()

    async def scenario() -> tuple[int, int, int]:
        path = str(tmp_path / "m.db")
        lean._prepare(path)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            return await run(conn)
        finally:
            conn.close()  # (left to the GC, 3.13 warns in whichever test runs then)

    async def run(conn: sqlite3.Connection) -> tuple[int, int, int]:
        lane = lean.LeanLane(conn)
        first_in = asyncio.Event()

        async def keeps() -> None:
            async with lean.LeanTransaction(lane) as tx:
                await tx.execute(lean.DEBIT, (7, 1))
                first_in.set()
                await asyncio.sleep(0.01)  # (the other queues: it joins this group)

        async def fails() -> None:
            await first_in.wait()
            with pytest.raises(ZeroDivisionError):
                async with lean.LeanTransaction(lane) as tx:
                    await tx.execute(lean.DEBIT, (11, 2))
                    raise ZeroDivisionError

        await asyncio.gather(keeps(), fails())
        one, two = (conn.execute(lean.BALANCE, (k,)).fetchone()[0] for k in (1, 2))
        return one, two, lane.commits

    one, two, commits = asyncio.run(scenario())
    assert (one, two) == (lean.START - 7, lean.START)
    assert commits == 1
