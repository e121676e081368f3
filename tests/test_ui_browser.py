"""The live stats page in a real browser: uvicorn serving tests/ui_app.py, headless Chromium.

The page must render the numbers the JSON endpoint returns (writes stop before the page loads,
so the counters are stable), and a screenshot is kept in ``artifacts/`` for humans to look at.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers import free_port
from litegate import Stats

TESTS = Path(__file__).resolve().parent
ARTIFACTS = TESTS.parent / "artifacts"
CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None
)

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (`make browser`)")

# Fields that cannot move once writes stop (checkpoints and wal_bytes can: an idle checkpoint).
STABLE = (
    "queue_depth",
    "queue_capacity",
    "batches",
    "jobs_ok",
    "jobs_failed",
    "max_batch_size",
    "mean_batch_size",
    "write_p50_ms",
    "write_p99_ms",
    "reads",
    "read_p50_ms",
    "read_p99_ms",
    "readers_mode",
    "pool_size",
    "pool_in_use",
    "pool_waiting",
    "busy_retries",
    "busy_timeouts",
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """uvicorn serving ui_app in a subprocess; yields its base URL. Stopped by PID."""
    port = free_port()
    env = dict(os.environ, LITEGATE_UI_DB=str(tmp_path / "ui.db"))
    log_path = tmp_path / "uvicorn.log"
    cmd = [sys.executable, "-m", "uvicorn", "ui_app:app", "--app-dir", str(TESTS)]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"uvicorn exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                if httpx.get(base + "/_litegate", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"uvicorn did not answer within 30 s:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _chromium(tmp_path: Path, name: str, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic"]
    cmd += ["--no-first-run", "--disable-background-networking", "--disable-component-update"]
    cmd += ["--disable-sync", f"--user-data-dir={tmp_path / name}", "--virtual-time-budget=5000"]
    cmd += [*extra, url]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


class _Metrics(HTMLParser):
    """Collects elements by id: their attributes and their text."""

    def __init__(self) -> None:
        super().__init__()
        self.attrs: dict[str, dict[str, str | None]] = {}
        self.text: dict[str, str] = {}
        self._open: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        ident = a.get("id")
        if ident:
            self.attrs[ident] = a
            self.text.setdefault(ident, "")
        if tag not in ("br", "meta", "link", "img", "input", "hr"):
            self._open.append(ident)

    def handle_endtag(self, tag: str) -> None:
        if self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for ident in self._open:
            if ident:
                self.text[ident] += data


def _same(dom_value: str | None, json_value: Any) -> bool:
    if isinstance(json_value, str):
        return dom_value == json_value
    return dom_value is not None and float(dom_value) == float(json_value)


def test_live_page_renders_the_json_numbers(server: str, tmp_path: Path) -> None:
    with httpx.Client(base_url=server, timeout=10) as client:
        for _ in range(3):
            assert client.post("/add", params={"n": 20}).status_code == 200
        for _ in range(4):
            assert client.post("/burst", params={"n": 50}).status_code == 200
        assert client.get("/count").json() == {"notes": 260}
        before = client.get("/_litegate").json()
        dom = _chromium(tmp_path, "dump", server + "/_litegate/ui", "--dump-dom").stdout
        after = client.get("/_litegate").json()

    assert before["jobs_ok"] == 260
    assert before["reads"] >= 1
    assert 1 <= before["batches"] <= 260
    parsed = _Metrics()
    parsed.feed(dom)
    missing = [f for f in Stats.__dataclass_fields__ if "m-" + f not in parsed.attrs]
    assert not missing, f"no element for {missing}"
    for field in STABLE:
        assert before[field] == after[field], f"{field} moved while no one wrote"
        shown = parsed.attrs["m-" + field].get("data-value")
        assert _same(shown, after[field]), (field, shown, after[field])
    # The visible text is the number itself for counters.
    for field in ("jobs_ok", "batches", "max_batch_size", "queue_depth", "pool_size"):
        assert parsed.text["m-" + field].strip() == str(after[field]), field
    assert parsed.text["m-mean_batch_size"].strip() == f"{after['mean_batch_size']:.2f}"
    # Every numeric field rendered something numeric.
    for field, value in after.items():
        if not isinstance(value, str):
            float(parsed.attrs["m-" + field]["data-value"] or "nan")
    # It refreshed itself (a fetch a second, under a 5 s virtual-time budget) and drew a line.
    status = parsed.attrs["status"]
    assert status.get("class") == "live", parsed.text["status"]
    assert int(status.get("data-refreshes") or 0) >= 2
    assert int(parsed.attrs["spark"].get("data-points") or 0) >= 2
    assert parsed.attrs["spark-line"].get("points")


def test_live_page_screenshot(server: str, tmp_path: Path) -> None:
    with httpx.Client(base_url=server, timeout=10) as client:
        for _ in range(5):
            assert client.post("/burst", params={"n": 40}).status_code == 200
        assert client.get("/count").status_code == 200
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "litegate-ui.png"
    shot.unlink(missing_ok=True)
    # Keep writing while the page loads, so the throughput and the sparkline move.
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            with httpx.Client(base_url=server, timeout=10) as client:
                deadline = time.monotonic() + 60
                while not stop.is_set() and time.monotonic() < deadline:
                    client.post("/burst", params={"n": 25}).raise_for_status()
                    client.get("/count").raise_for_status()
                    stop.wait(0.05)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=writer, name="ui-writer")
    t.start()
    try:
        _chromium(
            tmp_path,
            "shot",
            server + "/_litegate/ui",
            f"--screenshot={shot}",
            "--window-size=1200,900",
        )
    finally:
        stop.set()
        t.join(30)
    assert not t.is_alive()
    assert not errors, errors
    assert shot.exists()
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1200, 900)
    assert len(data) > 20_000, f"screenshot is only {len(data)} bytes: a blank page?"
