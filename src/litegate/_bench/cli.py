"""``litegate bench``: litegate against the folk remedies (one connection per thread, a queue
pool, one connection behind a lock) and, for asyncio, against aiosqlite and
``asyncio.to_thread``; same file, same workload, one run.

Example::

    litegate bench --seconds 3 --workload all --json bench.json
    litegate bench --suite async --tasks 1,64

``--suite`` picks the sync suite (threads), the async suite (tasks) or both (default). A
``--workload`` runs in each chosen suite that has it (``reads`` exists only in the async suite).
Without ``--seconds`` each suite uses its own default duration.

JSON (``--json``): the sync suite's results at the top level as before, the async suite's under
``"async"``, and ``"ok"`` for both together.

Exit codes: 0 the benchmark ran (targets are reported, not enforced); 1 with ``--check`` when
a target was missed, litegate reported an error or its data did not match; 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .contenders import DEFAULT_POOL_SIZE
from .report import format_report
from .suites import (
    ASYNC_WORKLOADS,
    DEFAULT_ASYNC_SECONDS,
    DEFAULT_SECONDS,
    DEFAULT_TASKS,
    SYNC_THREADS,
    run_async_benchmark,
    run_benchmark,
)

__all__ = ("configure", "parse_tasks", "run")

SUITES = ("sync", "async", "all")

_EPILOG = f"""\
examples:
  litegate bench                          # both suites, every workload
  litegate bench --suite sync --workload writes --seconds 1
  litegate bench --suite async --tasks 1,64 --json async.json
  litegate bench --json results.json --check

durations: {DEFAULT_SECONDS:g}s per contender in the sync suite, {DEFAULT_ASYNC_SECONDS:g}s in the
async suite, unless --seconds is given

exit codes: 0 ran (targets are only reported), 1 --check and a target missed or litegate
failed its data check, 2 usage error"""


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def parse_tasks(text: str) -> list[int]:
    """``"1,64"`` -> ``[1, 64]``; an argparse type (every count must be >= 1)."""
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected task counts like 1,64, got {text!r}") from None
    if not counts or any(n < 1 for n in counts):
        raise argparse.ArgumentTypeError(f"task counts must be >= 1, got {text!r}")
    return counts


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``bench`` options to ``parser``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _EPILOG
    parser.add_argument(
        "--suite",
        choices=SUITES,
        default="all",
        help="sync (threads vs folk remedies), async (tasks vs aiosqlite and to_thread) or all "
        "(default)",
    )
    parser.add_argument(
        "--seconds",
        type=_positive,
        default=None,
        help=f"run time per contender and workload (default {DEFAULT_SECONDS:g} sync, "
        f"{DEFAULT_ASYNC_SECONDS:g} async)",
    )
    parser.add_argument(
        "--workload",
        choices=sorted({*SYNC_THREADS, *ASYNC_WORKLOADS}) + ["all"],
        default="all",
        help="mixed (90%% reads), writes, reads (async only) or all (default)",
    )
    parser.add_argument(
        "--tasks",
        type=parse_tasks,
        default=list(DEFAULT_TASKS),
        metavar="N,N",
        help="async suite: concurrent task counts (default "
        + ",".join(map(str, DEFAULT_TASKS))
        + ")",
    )
    parser.add_argument("--json", metavar="FILE", help="also save the results as JSON")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when a target is missed or litegate fails"
    )
    parser.add_argument(
        "--dir",
        metavar="DIR",
        help="directory for the database file (default: the system temp dir); use the disk "
        "you care about, since synchronous=FULL makes fsync speed matter",
    )
    parser.add_argument(
        "--pool-size",
        type=int,
        default=DEFAULT_POOL_SIZE,
        help=f"sync suite: connections in the queue-pool remedy (default {DEFAULT_POOL_SIZE})",
    )
    parser.add_argument(
        "--no-reference", action="store_true", help="skip the raw single-thread reference"
    )


def _progress(message: str) -> None:
    sys.stderr.write(f"[bench] {message}\n")
    sys.stderr.flush()


def _chosen(names: list[str], workload: str) -> list[str]:
    if workload == "all":
        return names
    return [workload] if workload in names else []


def run(args: argparse.Namespace) -> int:
    """Run the chosen suites, print the tables to stdout (progress to stderr)."""
    suite: str = getattr(args, "suite", "all")
    sync_workloads = _chosen(list(SYNC_THREADS), args.workload) if suite != "async" else []
    async_workloads = _chosen(list(ASYNC_WORKLOADS), args.workload) if suite != "sync" else []
    if not sync_workloads and not async_workloads:
        sys.stderr.write(f"litegate bench: the {suite} suite has no workload {args.workload!r}\n")
        return 2
    if suite == "all" and not sync_workloads:
        _progress(f"sync suite skipped: it has no workload {args.workload!r}")
    out: dict[str, Any] = {}
    ok = True
    texts: list[str] = []
    if sync_workloads:
        result = run_benchmark(
            seconds=args.seconds or DEFAULT_SECONDS,
            workloads=sync_workloads,
            directory=args.dir,
            pool_size=args.pool_size,
            reference=not args.no_reference,
            progress=_progress,
        )
        texts.append(format_report(result))
        out.update(result.as_dict())
        ok = ok and result.ok
    if async_workloads:
        aresult = run_async_benchmark(
            seconds=args.seconds or DEFAULT_ASYNC_SECONDS,
            tasks=getattr(args, "tasks", DEFAULT_TASKS),
            workloads=async_workloads,
            directory=args.dir,
            reference=not args.no_reference,
            progress=_progress,
        )
        texts.append(format_report(aresult))
        out["async"] = aresult.as_dict()
        ok = ok and aresult.ok
    out["suite"] = suite
    out["ok"] = ok
    sys.stdout.write(("\n\n" + "=" * 78 + "\n\n").join(texts) + "\n")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=2)
            fh.write("\n")
        sys.stdout.write(f"results saved to {args.json}\n")
    if args.check and not ok:
        return 1
    return 0
