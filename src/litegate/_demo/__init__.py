"""``litegate demo``: the thread demo (:mod:`.threads`) and the web demo (:mod:`.web`: the
store app in :mod:`.store_app` under uvicorn, driven by :mod:`.load`)."""

from __future__ import annotations

from .threads import ACCOUNTS as ACCOUNTS
from .threads import INITIAL_BALANCE as INITIAL_BALANCE
from .threads import OPS as OPS
from .threads import TOTAL as TOTAL
from .threads import Check as Check
from .threads import DemoReport as DemoReport
from .threads import Observed as Observed
from .threads import check_invariants as check_invariants
from .threads import format_report as format_report
from .threads import run_demo as run_demo

__all__ = (
    "ACCOUNTS",
    "INITIAL_BALANCE",
    "OPS",
    "TOTAL",
    "Check",
    "DemoReport",
    "Observed",
    "check_invariants",
    "format_report",
    "run_demo",
)
