"""`litegate demo` from an installed wheel: the wheel is built from this checkout, installed
with the ``starlette`` extra into a fresh virtualenv outside the repository, and run from
another directory, so nothing of the source tree can be imported.

Needs the package registry (or pip's cache) for hatchling and the extra's dependencies; pip's
cache is kept, so a second run takes seconds.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STEP_TIMEOUT = 300  # seconds, per command (a cold pip cache downloads the extra)


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.mark.timeout(4 * STEP_TIMEOUT)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the web demo is POSIX-only")
def test_demo_runs_from_an_installed_wheel(tmp_path: Path) -> None:
    # Nothing that could point the new interpreter at the checkout or the dev venv.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
    }
    env["PIP_NO_INPUT"] = "1"
    pip = [sys.executable, "-m", "pip"]
    dist, venv, elsewhere = tmp_path / "dist", tmp_path / "venv", tmp_path / "elsewhere"
    elsewhere.mkdir()

    _run([*pip, "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)], tmp_path, env)
    (wheel,) = dist.glob("litegate-*.whl")
    # A venv without pip of its own (faster); this interpreter's pip installs into it.
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, env)
    python = venv / "bin" / "python"
    _run([*pip, "--python", str(python), "install", "-q", f"{wheel}[starlette]"], tmp_path, env)

    where = _run([str(python), "-c", "import litegate; print(litegate.__file__)"], elsewhere, env)
    assert Path(where.strip()).is_relative_to(venv), where  # the installed copy, not src/

    out = _run([str(venv / "bin" / "litegate"), "demo", "--requests", "200"], elsewhere, env)
    assert "PASS: litegate served 200 requests" in out, out
    assert "uvloop loop, httptools parser" in out, out  # the extra brought uvicorn[standard]
    read_back = re.search(r"read back intact\s+(\d+)/(\d+)", out)
    assert read_back is not None, out
    assert read_back[1] == read_back[2] and int(read_back[2]) > 0, out  # every acked write
    assert re.search(r"data check\s+ok", out), out
    assert not list(elsewhere.iterdir())  # the demo works in temporary directories only
