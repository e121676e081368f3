"""``litegate bench``: litegate against the folk remedies (one connection per thread, a queue
pool, one connection behind a lock) and, for asyncio, against aiosqlite and
``asyncio.to_thread``; same file, same workload, one run.

Example::

    litegate bench --seconds 3 --workload all --json bench.json --plot bench.png
    litegate bench --suite async --tasks 1,64 --synchronous full

``--suite`` picks the sync suite (threads), the async suite (tasks) or both (default). A
``--workload`` (one, a comma list, or ``all``) runs in each chosen suite that has it
(``reads``, ``scans`` and ``slow-tx`` exist only in the async suite). Every workload runs at
each ``--synchronous`` level (default both NORMAL and FULL). Without ``--seconds`` each suite
uses its own default duration. Each run (one contender on one case) happens in a fresh process
unless ``--in-process``.

JSON (``--json``): the sync suite's results under ``"sync"``, the async suite's under
``"async"``, and ``"ok"`` for both together. ``--plot FILE.png`` draws throughput by
concurrency (needs matplotlib: the ``bench`` extra).

Exit codes: 0 the benchmark ran (targets are reported, not enforced); 1 with ``--check`` when
a target was missed, litegate reported an error or its data did not match; 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .async_suite import ASYNC_WORKLOADS, DEFAULT_ASYNC_SECONDS, DEFAULT_TASKS, run_async_benchmark
from .contenders import DEFAULT_POOL_SIZE
from .report import BenchResult, format_report
from .sync_suite import DEFAULT_SECONDS, DEFAULT_SYNCHRONOUS, SYNC_THREADS, run_benchmark

__all__ = ("configure", "parse_synchronous", "parse_tasks", "run")

SUITES = ("sync", "async", "all")

_EPILOG = f"""\
examples:
  litegate bench                          # both suites, every workload, NORMAL and FULL
  litegate bench --suite sync --workload writes --seconds 1
  litegate bench --suite async --tasks 1,64 --json async.json --plot async.png
  litegate bench --workload transfers,writes --synchronous full
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


def parse_synchronous(text: str) -> list[str]:
    """``"normal,full"`` -> ``["NORMAL", "FULL"]``; an argparse type."""
    modes = [part.strip().upper() for part in text.split(",") if part.strip()]
    if not modes or any(m not in ("NORMAL", "FULL") for m in modes):
        raise argparse.ArgumentTypeError(f"expected normal, full or normal,full, got {text!r}")
    return list(dict.fromkeys(modes))


WORKLOAD_NAMES = sorted({*SYNC_THREADS, *ASYNC_WORKLOADS})


def parse_workloads(text: str) -> list[str]:
    """``"writes,transfers"`` -> ``["writes", "transfers"]``, ``"all"`` -> every workload; an
    argparse type (an unknown name is refused, never dropped)."""
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    if names == ["all"]:
        return list(WORKLOAD_NAMES)
    unknown = [n for n in names if n not in WORKLOAD_NAMES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"expected all or a comma list of {', '.join(WORKLOAD_NAMES)}, got {text!r}"
        )
    return list(dict.fromkeys(names))


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
        type=parse_workloads,
        default=list(WORKLOAD_NAMES),
        metavar="NAME[,NAME]",
        help="mixed (90%% reads), writes, transfers, reads, scans and slow-tx (async only), "
        "comma-separated, or all (default)",
    )
    parser.add_argument(
        "--synchronous",
        type=parse_synchronous,
        default=list(DEFAULT_SYNCHRONOUS),
        metavar="normal,full",
        help="the PRAGMA synchronous levels every workload runs at (default normal,full)",
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
        "--plot",
        metavar="FILE.png",
        help="also draw throughput by concurrency into a PNG (needs matplotlib: the bench extra)",
    )
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
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run every contender in this process (default: each run in a fresh process)",
    )


def _progress(message: str) -> None:
    sys.stderr.write(f"[bench] {message}\n")
    sys.stderr.flush()


def _chosen(names: list[str], workloads: list[str]) -> list[str]:
    return [n for n in names if n in workloads]


def run(args: argparse.Namespace) -> int:
    """Run the chosen suites, print the tables to stdout (progress to stderr)."""
    suite: str = getattr(args, "suite", "all")
    sync_workloads = _chosen(list(SYNC_THREADS), args.workload) if suite != "async" else []
    async_workloads = _chosen(list(ASYNC_WORKLOADS), args.workload) if suite != "sync" else []
    wanted = ",".join(args.workload)
    if not sync_workloads and not async_workloads:
        sys.stderr.write(f"litegate bench: the {suite} suite has no workload {wanted!r}\n")
        return 2
    if suite == "all" and not sync_workloads:
        _progress(f"sync suite skipped: it has no workload {wanted!r}")
    if args.plot:
        try:
            import matplotlib  # noqa: F401  (fail before the run, not after it)
        except ImportError:
            sys.stderr.write(
                "litegate bench: --plot needs matplotlib: pip install 'litegate[bench]'\n"
            )
            return 2
    out: dict[str, Any] = {}
    ok = True
    texts: list[str] = []
    results: list[BenchResult] = []
    common: dict[str, Any] = {
        "directory": args.dir,
        "reference": not args.no_reference,
        "progress": _progress,
        "synchronous": getattr(args, "synchronous", DEFAULT_SYNCHRONOUS),
        "isolate": not getattr(args, "in_process", False),
    }
    if sync_workloads:
        result = run_benchmark(
            seconds=args.seconds or DEFAULT_SECONDS,
            workloads=sync_workloads,
            pool_size=args.pool_size,
            **common,
        )
        results.append(result)
        out["sync"] = result.as_dict()
    if async_workloads:
        result = run_async_benchmark(
            seconds=args.seconds or DEFAULT_ASYNC_SECONDS,
            tasks=getattr(args, "tasks", DEFAULT_TASKS),
            workloads=async_workloads,
            **common,
        )
        results.append(result)
        out["async"] = result.as_dict()
    for result in results:
        texts.append(format_report(result))
        ok = ok and result.ok
    out["suite"] = suite
    out["ok"] = ok
    sys.stdout.write(("\n\n" + "=" * 78 + "\n\n").join(texts) + "\n")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=2)
            fh.write("\n")
        sys.stdout.write(f"results saved to {args.json}\n")
    if args.plot:
        from .plot import plot

        plot(results, args.plot)
        sys.stdout.write(f"plot saved to {args.plot}\n")
    if args.check and not ok:
        return 1
    return 0
