"""Benchmark harness: litegate against the folk remedies for sharing sqlite3 between threads
(the sync suite) and against aiosqlite and ``asyncio.to_thread`` (the async suite).

Every contender runs the same workload, for the same time, on the same database file, reset
before each run to a byte-identical seeded copy (WAL, ``synchronous=FULL`` unless a contender's
name says otherwise). An error (``database is locked`` included) counts as an error and the
operation is not counted as done; after each run the file is checked: the rows inserted and
the increments applied must equal the writes that were acknowledged.

Modules, by concern:

* :mod:`.workloads`: schema, seeded template, workloads (operation mixes), cases, data check;
* :mod:`.contenders`: the contender interface (a thread and a task flavour) and every
  contender;
* :mod:`.runner`: drives a contender through a case on OS threads or asyncio tasks, the
  references and the hand-off floor, a whole suite;
* :mod:`.report`: the result types, the text report and the JSON layouts;
* :mod:`.suites`: the sync and the async suite (contenders, ratios, targets, headings);
* :mod:`.cli`: ``litegate bench``.
"""

from __future__ import annotations

from .contenders import DEFAULT_POOL_SIZE as DEFAULT_POOL_SIZE
from .contenders import AsyncContender as AsyncContender
from .contenders import Contender as Contender
from .contenders import aiosqlite_version as aiosqlite_version
from .report import BenchResult as BenchResult
from .report import CaseResult as CaseResult
from .report import ContenderResult as ContenderResult
from .report import Ratio as Ratio
from .report import Reference as Reference
from .report import Target as Target
from .report import format_report as format_report
from .runner import HANDOFF_FLOOR as HANDOFF_FLOOR
from .runner import handoff_floor as handoff_floor
from .suites import AIOSQLITE_FULL as AIOSQLITE_FULL
from .suites import AIOSQLITE_NORMAL as AIOSQLITE_NORMAL
from .suites import ASYNC_LAYOUT as ASYNC_LAYOUT
from .suites import ASYNC_WORKLOADS as ASYNC_WORKLOADS
from .suites import DEFAULT_ASYNC_SECONDS as DEFAULT_ASYNC_SECONDS
from .suites import DEFAULT_SECONDS as DEFAULT_SECONDS
from .suites import DEFAULT_TASKS as DEFAULT_TASKS
from .suites import LITEGATE as LITEGATE
from .suites import SYNC_LAYOUT as SYNC_LAYOUT
from .suites import SYNC_THREADS as SYNC_THREADS
from .suites import TO_THREAD as TO_THREAD
from .suites import contender_names as contender_names
from .suites import run_async_benchmark as run_async_benchmark
from .suites import run_benchmark as run_benchmark
from .workloads import WORKLOADS as WORKLOADS
from .workloads import Case as Case
from .workloads import DataCheck as DataCheck
from .workloads import Workload as Workload

__all__ = (
    "AIOSQLITE_FULL",
    "AIOSQLITE_NORMAL",
    "ASYNC_LAYOUT",
    "ASYNC_WORKLOADS",
    "AsyncContender",
    "BenchResult",
    "Case",
    "CaseResult",
    "Contender",
    "ContenderResult",
    "DEFAULT_ASYNC_SECONDS",
    "DEFAULT_POOL_SIZE",
    "DEFAULT_SECONDS",
    "DEFAULT_TASKS",
    "DataCheck",
    "HANDOFF_FLOOR",
    "LITEGATE",
    "Ratio",
    "Reference",
    "SYNC_LAYOUT",
    "SYNC_THREADS",
    "TO_THREAD",
    "Target",
    "WORKLOADS",
    "Workload",
    "aiosqlite_version",
    "contender_names",
    "format_report",
    "handoff_floor",
    "run_async_benchmark",
    "run_benchmark",
)
