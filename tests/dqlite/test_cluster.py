"""The dqlite test cluster itself (:mod:`litegate._dqlite_cluster`), driven through the
``dqlite-dbapi`` client directly: it forms, serves writes from any seed, elects a new leader
when the leader dies and takes a restarted node back. (A whole-cluster restart is tested in
tests/dqlite/test_engine.py, under one open ``Database``.) These are the guarantees the
cluster engine's tests lean on."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from litegate._dqlite_cluster import Cluster, ClusterError, Node, missing_binaries

try:
    import dqliteclient
    import dqlitedbapi
    import dqlitedbapi.aio as dqlite_aio
except ImportError:  # Python < 3.13: conftest's _dqlite_driver skips every test, saying why
    pass


async def dial(address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """The driver's ``dial_func``: a plain TCP connection (no Nagle: the RPCs are small).

    dqlite-dbapi 0.8.0's own dialer passes ``happy_eyeballs_delay`` to ``open_connection``.
    With it, 2 of 3 runs of this file failed on an unclosed-socket ResourceWarning (sockets to
    a node, collected during the test after the leader sweeps; likely a dial cancelled inside
    asyncio's happy-eyeballs race on CPython 3.13.0, not proven); with this dialer, 4 of 4
    runs were clean. The same default dialer fails outright on uvloop (no such argument) and
    under the eager task factory (an ``assert`` in the race); this one works on both.
    """
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return reader, writer


# A new leader is elected ~5 s after the leader dies (dqlite-demo's default timeouts; 4.99 s
# measured on this machine's go-dqlite 1.11). The bound is generous for a loaded CI machine.
ELECTION_BOUND = 20.0
RECONNECT_TIMEOUT = 30.0


def _close(conn: Any) -> None:
    """Close ``conn``, also when its wire session was lost: dqlite-dbapi 0.8.0's sync
    ``close()`` skips an invalidated connection (its ``closed`` is already true), and the
    client connection under it is then collected unclosed (a ResourceWarning).
    ``force_close_transport()`` releases it."""
    if conn.invalidated:
        conn.force_close_transport()
    else:
        conn.close()


def _connect_any(seeds: Sequence[str], database: str, timeout: float = RECONNECT_TIMEOUT) -> Any:
    """A working connection through the first seed that answers (during an election, none
    does: the driver then says "Could not find leader"), retried until ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        for seed in seeds:
            conn = dqlitedbapi.connect(seed, database=database, timeout=2.0, dial_func=dial)
            try:
                conn.execute("SELECT 1").fetchall()
            except dqlitedbapi.OperationalError:
                _close(conn)
                if time.monotonic() >= deadline:
                    raise
                continue
            return conn
        time.sleep(0.1)


@contextlib.contextmanager
def _connected(seeds: Sequence[str], database: str) -> Iterator[Any]:
    conn = _connect_any(seeds, database)
    try:
        yield conn
    finally:
        _close(conn)


def _seeds(nodes: Sequence[Node]) -> list[str]:
    return [n.db_address for n in nodes]


def _rows(conn: Any) -> list[tuple[int, str]]:
    return [tuple(r) for r in conn.execute("SELECT id, v FROM t ORDER BY id").fetchall()]


def _report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    # Measured figures go to the terminal in every run, not only when a test fails.
    with capsys.disabled():
        print(f"\n  [dqlite] {line}")


async def _make_leader(seeds: Sequence[str], address: str, timeout: float) -> None:
    """Hand leadership to the node at ``address`` (it must be caught up to take it)."""
    client = dqliteclient.ClusterClient.from_addresses(list(seeds), timeout=2.0, dial_func=dial)
    deadline = time.monotonic() + timeout
    while True:
        try:
            members = await client.cluster_info()
            (target,) = [m.node_id for m in members if m.address == address]
            await client.transfer_leadership(target)
            leader = await client.leader_info()
            if leader is not None and leader.address == address:
                return
        except dqliteclient.DqliteError:
            if time.monotonic() >= deadline:
                raise
        if time.monotonic() >= deadline:
            raise AssertionError(f"{address} did not become the leader within {timeout} s")
        await asyncio.sleep(0.2)


# -- the shared cluster: nothing here kills or stops a node ---------------------------------


def test_cluster_forms_with_every_node_a_voter(cluster: Cluster) -> None:
    assert len(cluster.nodes) == 3
    assert cluster.voters() == sorted(cluster.seeds)
    members = asyncio.run(_members(cluster.seeds))
    assert sorted(members) == sorted((seed, "VOTER") for seed in cluster.seeds)
    # Each node is its own running process with its own directory, its PID on record.
    pids = cluster.pids
    assert len(set(pids)) == 3
    for node in cluster.nodes:
        assert node.alive and node.pid is not None
        os.kill(node.pid, 0)
        assert (cluster.root / f"node{node.index}.pid").read_text().strip() == str(node.pid)
        assert node.data_dir.is_dir() and node.data_dir.parent == cluster.root
    leader = cluster.leader()
    assert leader in cluster.nodes
    assert leader not in cluster.followers() and len(cluster.followers()) == 2


async def _members(seeds: list[str]) -> list[tuple[str, str]]:
    client = dqliteclient.ClusterClient.from_addresses(seeds, timeout=5.0, dial_func=dial)
    return [(m.address, m.role.name) for m in await client.cluster_info()]


def test_writes_through_a_follower_seed_reach_the_leader(cluster: Cluster) -> None:
    leader = cluster.leader()
    follower = cluster.followers()[0]
    db = "via_follower"
    # dqlite has no follower reads or writes: the client asks its one seed for the leader and
    # talks to the leader.
    with contextlib.closing(
        dqlitedbapi.connect(follower.db_address, database=db, dial_func=dial)
    ) as conn:
        conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        conn.executemany("INSERT INTO t(v) VALUES (?)", [(f"row-{i}",) for i in range(40)])
        with conn.transaction():
            conn.execute("INSERT INTO t(v) VALUES ('in-tx')")
            conn.execute("UPDATE t SET v = 'first' WHERE id = 1")
        # Rolled back: not visible anywhere.
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t(v) VALUES ('rolled-back')")
        conn.rollback()
    expected = [(1, "first")] + [(i + 1, f"row-{i}") for i in range(1, 40)] + [(41, "in-tx")]
    with contextlib.closing(
        dqlitedbapi.connect(leader.db_address, database=db, dial_func=dial)
    ) as conn:
        assert _rows(conn) == expected
    other = cluster.followers()[1]
    with contextlib.closing(
        dqlitedbapi.connect(other.db_address, database=db, dial_func=dial)
    ) as conn:
        assert _rows(conn) == expected


@pytest.mark.blocks_loop(
    "dqlite-dbapi's own leader probe holds the loop for ~40 ms; not litegate code"
)
async def test_async_tasks_read_modify_write_exactly(cluster: Cluster) -> None:
    """8 tasks x 25 increments, each task on its own connection through a different seed:
    the driver retries SQLITE_BUSY itself, so the counter is exact."""
    db = f"rmw_{uuid.uuid4().hex[:8]}"
    setup = await dqlite_aio.aconnect(cluster.seeds[0], database=db, dial_func=dial)
    try:
        await setup.execute("CREATE TABLE c(id INTEGER PRIMARY KEY, n INT NOT NULL)")
        await setup.execute("INSERT INTO c VALUES (1, 0)")
    finally:
        await setup.close()

    async def worker(i: int) -> None:
        conn = await dqlite_aio.aconnect(cluster.seeds[i % 3], database=db, dial_func=dial)
        try:
            for _ in range(25):
                async with conn.transaction():
                    cur = await conn.execute("SELECT n FROM c WHERE id = 1")
                    (n,) = await cur.fetchone()
                    await conn.execute("UPDATE c SET n = ? WHERE id = 1", (n + 1,))
        finally:
            await conn.close()

    await asyncio.gather(*(worker(i) for i in range(8)))
    check = await dqlite_aio.aconnect(cluster.seeds[2], database=db, dial_func=dial)
    try:
        cur = await check.execute("SELECT n FROM c")
        assert await cur.fetchall() == [(200,)]
    finally:
        await check.close()


# -- a cluster of the test's own -------------------------------------------------------------


def test_leader_killed_new_leader_elected_restarted_node_catches_up(
    fresh_cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    c = fresh_cluster
    db = "failover"
    old = c.leader()
    with _connected(c.seeds, db) as conn:
        conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        conn.executemany("INSERT INTO t(v) VALUES (?)", [(f"before-{i}",) for i in range(30)])
        killed_at = time.monotonic()
        c.kill(old)
        # The open connection was to the leader: its session is lost for good.
        with pytest.raises(dqlitedbapi.OperationalError):
            conn.execute("INSERT INTO t(v) VALUES ('lost')")
        assert conn.invalidated
        with pytest.raises(dqlitedbapi.InterfaceError, match="invalidated"):
            conn.execute("SELECT 1")
    assert not old.alive and old.process is not None and old.process.returncode == -9

    new = c.wait_leader(timeout=ELECTION_BOUND + 10)
    elected = time.monotonic() - killed_at
    _report(capsys, f"SIGKILL of the leader -> new leader after {elected:.2f} s")
    assert new is not old and new.alive
    assert elected < ELECTION_BOUND

    # Writes go on without the killed node (2 of 3 is a quorum).
    with _connected(_seeds(c.running), db) as conn:
        conn.executemany("INSERT INTO t(v) VALUES (?)", [(f"during-{i}",) for i in range(30)])
    expected = [(i + 1, f"before-{i}") for i in range(30)] + [
        (i + 31, f"during-{i}") for i in range(30)
    ]

    # Restarted on its old directory, the node rejoins without --join and catches up: made
    # the leader, it serves every row, including those written while it was down.
    restarted_at = time.monotonic()
    c.restart(old)
    asyncio.run(_make_leader(_seeds(c.running), old.db_address, timeout=30.0))
    caught_up = time.monotonic() - restarted_at
    assert c.wait_leader() is old
    _report(capsys, f"killed node restarted -> caught up and leader after {caught_up:.2f} s")
    with contextlib.closing(
        dqlitedbapi.connect(old.db_address, database=db, dial_func=dial)
    ) as conn:
        assert _rows(conn) == expected
    assert c.voters() == sorted(c.seeds)


# -- the fixture's own failure paths (no cluster forms) --------------------------------------


def _require_binaries() -> None:
    if missing_binaries():
        pytest.skip(f"go-dqlite is not installed ({missing_binaries()}): `make dqlite`")


def test_failed_start_stops_the_nodes_it_started(tmp_path: Path) -> None:
    _require_binaries()
    c = Cluster(tmp_path)
    (tmp_path / "node1").write_text("not a directory")  # node 1 cannot start
    with pytest.raises(FileExistsError):
        c.start()
    first = c.nodes[0]
    assert first.process is not None and first.process.returncode is not None
    assert not c.running and c.pids == []
    with pytest.raises(ProcessLookupError):
        os.kill(first.process.pid, 0)  # reaped, not a zombie


def test_start_timeout_names_the_nodes_and_their_logs(tmp_path: Path) -> None:
    _require_binaries()
    c = Cluster(tmp_path)
    with pytest.raises(ClusterError, match="not listening") as caught:
        c.start(timeout=0.0)
    message = str(caught.value)
    assert f"--- node 0 {c.nodes[0].db_address}" in message
    assert "dqlite-demo --db" in message  # the log's header line: the command that ran
    assert not c.running
