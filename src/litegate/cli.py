"""The ``litegate`` command line. It only parses arguments and calls library code.

Each subcommand lives in its own module exposing ``configure(parser)`` and ``run(args) -> int``
(or in an object of a module that has both: ``"module:name"``, for commands that share one).
A command whose module cannot be imported (a missing extra) still shows in ``--help`` and says
what to install when run; the other commands are unaffected.

Exit codes: 0 success, 1 the command found problems (or failed its own checks), 2 usage error.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from typing import Protocol, cast

from ._version import __version__

__all__ = ("main",)

# name -> (module, one-line help)
_COMMANDS: dict[str, tuple[str, str]] = {
    "demo": (
        "litegate._demo.cli",
        "serve the example store app under load, next to the naive version (--threads: thread demo)",
    ),
    "bench": ("litegate._bench.cli", "benchmark litegate against the folk remedies and aiosqlite"),
    "doctor": ("litegate.doctor._cli", "find unsafe sqlite3 usage in Python code"),
    "check": ("litegate._check_cli", "inspect a database file and say what to change"),
    "replicate": (
        "litegate._litestream_cli:replicate",
        "run Litestream beside the app: continuous backup to a replica URL",
    ),
    "restore": (
        "litegate._litestream_cli:restore",
        "restore a database from a Litestream replica (--follow: a read replica)",
    ),
}
# Commands that run another program, given after ``--`` (everything after it is that program's
# command line: argparse cannot take it as a positional after options).
_TAKES_COMMAND = ("replicate",)


class _Command(Protocol):
    def configure(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="litegate",
        description="Share one SQLite database safely across threads, tasks and processes.",
    )
    parser.add_argument("--version", action="version", version=f"litegate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (spec, help_text) in _COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        module_name, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:  # one command's missing extra must not break the others
            p.set_defaults(handler=_unavailable(name, exc))
            continue
        command = cast(_Command, getattr(module, attr) if attr else module)
        command.configure(p)
        p.set_defaults(handler=command.run)
    return parser


def _unavailable(name: str, exc: ImportError) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        missing = exc.name or str(exc)
        print(
            f"litegate {name}: needs {missing!r}, which is not installed "
            f"(pip install 'litegate[{name}]' or the package named)",
            file=sys.stderr,
        )
        return 2

    return run


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = _build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    name = next((a for a in argv if not a.startswith("-")), None)
    if name in _TAKES_COMMAND and "--" in argv:
        split = argv.index("--")
        argv, command = argv[:split], argv[split + 1 :]
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command in _TAKES_COMMAND:
        args.program = command
    code: int = args.handler(args)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
