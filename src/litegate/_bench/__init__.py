"""Benchmark harness: litegate against the folk remedies for sharing sqlite3 between threads
(the sync suite) and against aiosqlite and ``asyncio.to_thread`` (the async suite).

Every contender runs the same workload, for the same time, on the same database file, reset
before each run to a byte-identical seeded copy (WAL, at each chosen ``synchronous`` level), in
a fresh process. An error (``database is locked`` included) counts as an error and the
operation is not counted as done; after each run the file is checked: the rows inserted, the
increments and transfers applied and the slow writes must equal those acknowledged, the
accounts must still sum to what they were seeded with and none may be negative.

Modules, by concern:

* :mod:`.workloads`: schema, seeded template, workloads (operation mixes), cases, data check;
* :mod:`.plain`: plain sqlite3 as the remedies use it;
* :mod:`.contenders` (threads) and :mod:`.acontenders` (tasks): the contender interface and
  every contender;
* :mod:`.runner`: drives a contender through a case on OS threads or asyncio tasks (with the
  loop-lag ticker);
* :mod:`.session`: a whole suite (references, the hand-off floor, every case), each run in a
  fresh process through :mod:`.isolate` (parent) and :mod:`.child` (child);
* :mod:`.report`: the result types, the text report and the JSON layout;
* :mod:`.sync_suite`, :mod:`.async_suite` and :mod:`.async_targets`: what each suite compares,
  its ratios, targets and headings; :mod:`.suites`: the suites by name;
* :mod:`.plot`: the throughput chart (matplotlib, the ``bench`` extra);
* :mod:`.cli`: ``litegate bench``.
"""

from __future__ import annotations

from .acontenders import AsyncContender as AsyncContender
from .acontenders import aiosqlite_version as aiosqlite_version
from .async_suite import ASYNC_LAYOUT as ASYNC_LAYOUT
from .async_suite import ASYNC_WORKLOADS as ASYNC_WORKLOADS
from .async_suite import DEFAULT_ASYNC_SECONDS as DEFAULT_ASYNC_SECONDS
from .async_suite import DEFAULT_TASKS as DEFAULT_TASKS
from .async_suite import contender_names as contender_names
from .async_suite import run_async_benchmark as run_async_benchmark
from .async_targets import AIOSQLITE as AIOSQLITE
from .async_targets import LITEGATE as LITEGATE
from .async_targets import LITEGATE_TO_THREAD as LITEGATE_TO_THREAD
from .async_targets import TO_THREAD as TO_THREAD
from .async_targets import TO_THREAD_PER_THREAD as TO_THREAD_PER_THREAD
from .contenders import DEFAULT_POOL_SIZE as DEFAULT_POOL_SIZE
from .contenders import Contender as Contender
from .report import BenchResult as BenchResult
from .report import CaseResult as CaseResult
from .report import ContenderResult as ContenderResult
from .report import Ratio as Ratio
from .report import Reference as Reference
from .report import Target as Target
from .report import format_report as format_report
from .session import HANDOFF_FLOOR as HANDOFF_FLOOR
from .session import handoff_floor as handoff_floor
from .sync_suite import DEFAULT_SECONDS as DEFAULT_SECONDS
from .sync_suite import DEFAULT_SYNCHRONOUS as DEFAULT_SYNCHRONOUS
from .sync_suite import SYNC_LAYOUT as SYNC_LAYOUT
from .sync_suite import SYNC_ROWS as SYNC_ROWS
from .sync_suite import SYNC_THREADS as SYNC_THREADS
from .sync_suite import run_benchmark as run_benchmark
from .workloads import WORKLOADS as WORKLOADS
from .workloads import Case as Case
from .workloads import DataCheck as DataCheck
from .workloads import Workload as Workload

__all__ = (
    "AIOSQLITE",
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
    "DEFAULT_SYNCHRONOUS",
    "DEFAULT_TASKS",
    "DataCheck",
    "HANDOFF_FLOOR",
    "LITEGATE",
    "LITEGATE_TO_THREAD",
    "Ratio",
    "Reference",
    "SYNC_LAYOUT",
    "SYNC_ROWS",
    "SYNC_THREADS",
    "TO_THREAD",
    "TO_THREAD_PER_THREAD",
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
