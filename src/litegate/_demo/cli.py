"""``litegate demo``: the example store app under load, litegate against plain sqlite3.

By default the web demo: the store app (``litegate._demo.store_app``, shipped in the package)
served by uvicorn with 2 worker processes, driven by 256 keep-alive connections from a
multi-process load generator, then the same app written the naive way, side by side.
``--threads`` runs the thread demo instead: many threads share one database for a few seconds
and its invariants are proved. ``--ceiling`` measures the load generator itself.

Examples::

    litegate demo
    litegate demo --requests 2000 --clients 300
    litegate demo --ceiling
    litegate demo --threads            # 16 threads
    litegate demo --threads 32 --seconds 2

Exit codes: 0 litegate's run had no error and its data check passed (web), or every invariant
held (threads); 1 otherwise; 2 usage error or a missing requirement.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from .threads import DEFAULT_SECONDS, DEFAULT_THREADS, OPS, format_report, run_demo

__all__ = ("configure", "run")

# as web.DEFAULT_REQUESTS and friends (not imported: the starlette extra may be missing)
_DEFAULT_REQUESTS = 8000
_CEILING_REQUESTS = 100_000  # --ceiling: long enough for a steady rate
_DEFAULT_CLIENTS = 256
_DEFAULT_PROCESSES = 2

_EPILOG = """\
examples:
  litegate demo                    # web: uvicorn, 2 workers, 8000 requests; then the naive app
  litegate demo --requests 1000
  litegate demo --ceiling          # the load generator alone, against a fixed response
  litegate demo --threads          # threads: 16 threads, ~5 s, invariants proved
  litegate demo --threads 32 --seconds 2

exit codes: 0 litegate had zero errors and the data check passed (web) or all invariants hold
(--threads); 1 otherwise; 2 usage error or a missing requirement (the starlette extra, for the
web demo: pip install 'litegate[starlette]')"""


def _positive_float(text: str) -> float:
    value = float(text)
    if not 0 < value <= 600:
        raise argparse.ArgumentTypeError(f"must be in (0, 600], got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 512:
        raise argparse.ArgumentTypeError(f"must be in [1, 512], got {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 1_000_000:
        raise argparse.ArgumentTypeError(f"must be in [1, 1000000], got {text}")
    return value


def _clients(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 4096:
        raise argparse.ArgumentTypeError(f"must be in [1, 4096], got {text}")
    return value


def _readers(text: str) -> int | str:
    if text == "per-thread":
        return text
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 or 'per-thread', got {text}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``demo`` options to ``parser``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _EPILOG
    web = parser.add_argument_group("web demo (the default)")
    web.add_argument(
        "--requests",
        type=_count,
        default=None,
        help=f"requests sent to each app (default {_DEFAULT_REQUESTS}; "
        f"{_CEILING_REQUESTS} with --ceiling)",
    )
    web.add_argument(
        "--clients",
        type=_clients,
        default=_DEFAULT_CLIENTS,
        help=f"keep-alive connections, all load processes together (default {_DEFAULT_CLIENTS})",
    )
    web.add_argument(
        "--load-processes",
        type=_positive_int,
        default=_DEFAULT_PROCESSES,
        metavar="N",
        help=f"load generator processes (default {_DEFAULT_PROCESSES})",
    )
    web.add_argument(
        "--ceiling",
        action="store_true",
        help="measure the load generator alone against a fixed-response server, and exit",
    )
    threads = parser.add_argument_group("thread demo")
    threads.add_argument(
        "--threads",
        type=_positive_int,
        nargs="?",
        const=DEFAULT_THREADS,
        default=None,
        metavar="N",
        help=f"run the thread demo with N worker threads (default N: {DEFAULT_THREADS})",
    )
    threads.add_argument(
        "--seconds",
        type=_positive_float,
        default=DEFAULT_SECONDS,
        help=f"how long the threads run (default {DEFAULT_SECONDS:g})",
    )
    threads.add_argument(
        "--readers",
        type=_readers,
        default=4,
        help="read pool: a number, 'per-thread' or 0 (default: CPUs + 4, at most 32)",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")


def run(args: argparse.Namespace) -> int:
    """Run the web demo, or the thread demo with ``--threads``; print the summary."""
    if args.threads is None:
        return _run_web(args)
    return _run_threads(args)


def _run_web(args: argparse.Namespace) -> int:
    try:
        import starlette  # noqa: F401  (the servers import them)
        import uvicorn  # noqa: F401

        from . import web
        from .load import LoadError
        from .server import DEFAULT_WORKERS, ServerError, stack
    except ImportError as exc:
        print(
            f"litegate demo: needs {exc.name or exc!s}, which is not installed "
            "(pip install 'litegate[starlette]'); `litegate demo --threads` needs nothing",
            file=sys.stderr,
        )
        return 2
    if args.ceiling:
        return _run_ceiling(args)
    requests = args.requests or _DEFAULT_REQUESTS
    used = stack()
    print(
        "litegate demo: the example store app (litegate._demo.store_app) served by "
        f"{used.describe(DEFAULT_WORKERS)}.\n"
        f"Load: {web.describe_load(requests, args.clients, args.load_processes)}; "
        "then every acknowledged write is read back.\n"
        "Then the naive sqlite3 version under the same load and server settings.",
        flush=True,
    )
    if used.nagle_stall:
        print(
            "note: uvloop is not installed. uvicorn's worker processes then run on the stdlib "
            "asyncio loop, which leaves Nagle's algorithm on for their shared socket (uvicorn "
            "issue #3149): each response waits ~40 ms. pip install 'litegate[starlette]' "
            "brings uvicorn[standard] (uvloop, httptools).",
            flush=True,
        )
    try:
        runs = web.run_web_demo(
            requests=requests,
            clients=args.clients,
            processes=args.load_processes,
            seed=args.seed,
            progress=_progress_bar(),
        )
    except (ServerError, LoadError) as exc:
        print(f"litegate demo: {exc}", file=sys.stderr)
        return 2
    print()
    print(web.format_side_by_side(runs))
    return 0 if web.verdict(runs[0]) else 1


def _progress_bar() -> Callable[[str, int, int], None]:
    """A progress bar on stderr (a line per quarter when it is not a terminal)."""
    tty = sys.stderr.isatty()
    last: dict[str, int] = {}

    def progress(label: str, done: int, total: int) -> None:
        width = 30
        filled = width * done // max(total, 1)
        line = f"  {label:<14} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}"
        if tty:
            sys.stderr.write("\r" + line + ("\n" if done >= total else ""))
        else:
            quarter = 4 * done // max(total, 1)
            if last.get(label) == quarter:
                return
            last[label] = quarter
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    return progress


def _run_ceiling(args: argparse.Namespace) -> int:
    from .ceiling import measure

    requests = args.requests or _CEILING_REQUESTS
    print(
        f"litegate demo --ceiling: the load generator ({args.load_processes} processes, "
        f"{args.clients} connections) sends {requests} POSTs to a server that answers each "
        "with a fixed 200 (2 processes, the same machine)",
        flush=True,
    )
    res = measure(requests=requests, clients=args.clients, processes=args.load_processes)
    print(
        f"  {res.throughput:,.0f} requests/s, latency p50 {res.p(0.5):.1f} ms, "
        f"p99 {res.p(0.99):.1f} ms; errors {res.errors}"
    )
    return 0 if res.errors == 0 and res.requests == requests else 1


def _run_threads(args: argparse.Namespace) -> int:
    tty = sys.stderr.isatty()

    def progress(elapsed: float, counts: dict[str, int], errors: int) -> None:
        done = "  ".join(f"{op} {counts[op]}" for op in OPS)
        line = f"  {elapsed:4.1f}/{args.seconds:g}s  {done}  errors {errors}"
        if tty:
            sys.stderr.write("\r" + line)
        elif int(elapsed * 2) % 2 == 0:  # a line a second when not on a terminal
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    print(
        f"litegate demo: {args.threads} threads, one database, {args.seconds:g}s of transfers, "
        "point reads, ledger inserts and snapshot sums",
        flush=True,
    )
    report = run_demo(
        seconds=args.seconds,
        threads=args.threads,
        readers=args.readers,
        seed=args.seed,
        progress=progress,
    )
    if tty:
        sys.stderr.write("\n")
    print(format_report(report))
    return 0 if report.ok else 1
