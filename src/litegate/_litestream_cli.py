"""``litegate replicate`` and ``litegate restore``: the command-line front ends of
:mod:`litegate._litestream` (Litestream backups and read replicas)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

from ._litestream import (
    CONNECT_HINT,
    DEFAULT_SYNC_INTERVAL,
    LitestreamMissing,
    Replication,
    find_binary,
    replica_url,
    restore_command,
    supervise,
)

__all__ = ("replicate", "restore")

_REPLICATE_EPILOG = """\
examples:
  litegate replicate app.db --to s3://bucket/app
  litegate replicate app.db --to /mnt/backup/app --sync-interval 100ms
  litegate replicate app.db --to s3://bucket/app -- uvicorn app:app

Runs Litestream (pip install 'litegate[litestream]') beside the application, with a
generated configuration. Litestream owns the database's checkpoints while it runs, so
the application must open it with:
  litegate.connect("app.db", checkpoints="off")
With a command after --, the command is run too: signals go to it, and when it exits its
last writes are synced to the replica, Litestream stops, and its exit status is returned.
Without one, Litestream runs until SIGINT/SIGTERM. See docs/litestream.md.

exit status: Litestream's (or the command's), 2 usage error or no litestream binary
"""

_RESTORE_EPILOG = """\
examples:
  litegate restore s3://bucket/app -o app.db
  litegate restore /mnt/backup/app -o replica.db --follow

Restores the latest state on the replica into a new file (-o; --force overwrites one).
--follow keeps applying new changes until SIGINT/SIGTERM: a read replica. Open it
read-only with a new connection per read (sqlite3.connect("file:replica.db?mode=ro",
uri=True)): a connection kept open does not see Litestream's updates (docs/litestream.md).

exit status: Litestream's (0 restored), 2 usage error or no litestream binary
"""


@dataclass(frozen=True, slots=True)
class _Command:
    """One subcommand, as :mod:`litegate.cli` registers it (``configure`` then ``run``)."""

    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _configure_replicate(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _REPLICATE_EPILOG
    parser.usage = "%(prog)s [-h] --to URL [--sync-interval DURATION] DB [-- CMD ...]"
    parser.add_argument("database", metavar="DB", help="the database file to replicate")
    parser.add_argument(
        "--to",
        metavar="URL",
        required=True,
        help="the replica: s3://, gs://, abs://, sftp://, file:// URL or a local directory",
    )
    parser.add_argument(
        "--sync-interval",
        metavar="DURATION",
        default=DEFAULT_SYNC_INTERVAL,
        help=f"how often new changes are shipped (Go duration; default {DEFAULT_SYNC_INTERVAL})",
    )


def _run_replicate(args: argparse.Namespace) -> int:
    command: list[str] = getattr(args, "program", [])
    try:
        replication = Replication(
            args.database, args.to, sync_interval=args.sync_interval, die_with_parent=True
        )
    except LitestreamMissing as exc:
        return _missing("replicate", exc)

    def ready(rep: Replication) -> None:
        sys.stderr.write(
            f"litegate replicate: litestream (pid {rep.pid}) replicates {rep.db} to {rep.url} "
            f"every {rep.sync_interval}; the app must open it with "
            f"{CONNECT_HINT.format(db=args.database)}\n"
        )
        sys.stderr.flush()

    try:
        return supervise(replication, command, on_ready=ready)
    except RuntimeError as exc:
        sys.stderr.write(f"litegate replicate: error: {exc}\n")
        return 1


def _configure_restore(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _RESTORE_EPILOG
    parser.add_argument("url", metavar="URL", help="the replica (as given to replicate --to)")
    parser.add_argument(
        "-o", "--output", metavar="PATH", required=True, help="the database file to write"
    )
    parser.add_argument(
        "--follow",
        action="store_true",
        help="keep applying new changes until stopped (a read replica)",
    )
    parser.add_argument(
        "--follow-interval",
        metavar="DURATION",
        default=None,
        help="with --follow: how often the replica is polled (Go duration; default 1s)",
    )
    parser.add_argument(
        "--force", action="store_true", help="overwrite an existing output database"
    )


def _run_restore(args: argparse.Namespace) -> int:
    if os.path.exists(args.output) and not args.force:
        sys.stderr.write(f"litegate restore: error: {args.output} exists (--force overwrites it)\n")
        return 2
    try:
        argv = restore_command(
            args.url,
            args.output,
            follow=args.follow,
            follow_interval=args.follow_interval,
            force=args.force,
            binary=find_binary(),
        )
    except LitestreamMissing as exc:
        return _missing("restore", exc)
    sys.stderr.write(f"litegate restore: {replica_url(args.url)} -> {args.output}\n")
    return supervise(None, restore=argv)


def _missing(command: str, exc: LitestreamMissing) -> int:
    sys.stderr.write(f"litegate {command}: error: {exc}\n")
    return 2


replicate = _Command(_configure_replicate, _run_replicate)
restore = _Command(_configure_restore, _run_restore)
