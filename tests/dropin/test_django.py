"""The Django backend ``litegate.django``: a small project (tests/dropin/django_project) migrated,
its ORM used, and served by Django's threaded server under concurrent read-modify-write
requests. Django's settings are global, so everything runs in subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from helpers import free_port

pytest.importorskip("django", reason="the django extra is not installed")

PROJECT = Path(__file__).parent / "django_project"


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    where = tmp_path / "project"
    shutil.copytree(PROJECT, where, ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "SHOP_DB": str(tmp_path / "shop.db"), "PYTHONDONTWRITEBYTECODE": "1"}
    return where, env


def _manage(project: tuple[Path, dict[str, str]], *args: str) -> str:
    where, env = project
    proc = subprocess.run(
        [sys.executable, str(where / "manage.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_migrations_and_the_orm(project: tuple[Path, dict[str, str]]) -> None:
    out = _manage(project, "migrate", "-v", "1")
    assert "Applying shop.0002_longer_names... OK" in out  # (a table rebuild: FK checks off)
    script = """
import json
from django.db import connection, transaction
from shop.models import Account, Counter, Transfer
out = {"engine": connection.vendor, "display": connection.display_name}
out["accounts"] = Account.objects.count()
try:
    with transaction.atomic():
        a = Account.objects.get(name="a1")
        a.balance = 0
        a.save()
        with transaction.atomic():  # a savepoint, rolled back alone
            Account.objects.filter(name="a2").update(balance=0)
            raise_here = 1 / 0
except ZeroDivisionError:
    pass
out["a1"] = Account.objects.get(name="a1").balance
with transaction.atomic():
    Account.objects.filter(name="a1").update(balance=7)
    try:
        with transaction.atomic():
            Account.objects.filter(name="a2").update(balance=0)
            raise ValueError
    except ValueError:
        pass
out["after"] = [Account.objects.get(name=n).balance for n in ("a1", "a2")]
out["fk"] = connection.cursor().execute("PRAGMA foreign_keys").fetchone()[0]
try:
    with transaction.atomic():
        Transfer.objects.create(source_id=999, target_id=998, amount=1)
except Exception as exc:
    out["fk_error"] = type(exc).__name__
a = Account.objects.create(name="zz", balance=1)
Transfer.objects.create(source=a, target=a, amount=1)
a.delete()  # (cascades)
out["transfers"] = Transfer.objects.count()
print(json.dumps(out))
"""
    out = json.loads(_manage(project, "shell", "-c", script).strip().splitlines()[-1])
    assert out == {
        "engine": "sqlite",
        "display": "SQLite (litegate)",
        "accounts": 20,
        "a1": 100,  # the whole atomic block rolled back
        "after": [7, 100],  # the inner one alone
        "fk": 1,
        "fk_error": "IntegrityError",
        "transfers": 0,
    }


def test_a_threaded_server_keeps_the_invariant(project: tuple[Path, dict[str, str]]) -> None:
    """16 clients at once, each request a read-modify-write transfer in an atomic block: every
    request succeeds (no `database is locked`), the balances keep their sum, the counter (read,
    incremented, saved) counts every transfer: no update was lost."""
    _manage(project, "migrate")
    where, env = project
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(where / "manage.py"), "runserver", f"127.0.0.1:{port}", "--noreload"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{base}/totals", timeout=5).read()
                break
            except OSError:
                assert server.poll() is None, server.communicate()[1]
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)

        def transfer(_: int) -> int:
            with urllib.request.urlopen(f"{base}/transfer", timeout=30) as r:
                status: int = r.status
                return status

        with ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(transfer, range(400)))
        totals = json.loads(urllib.request.urlopen(f"{base}/totals", timeout=10).read())
    finally:
        server.terminate()
        try:
            _, log = server.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            _, log = server.communicate()
    assert statuses == [200] * 400
    assert totals == {"sum": 2000, "counter": 400, "transfers": 400}
    assert "locked" not in log
