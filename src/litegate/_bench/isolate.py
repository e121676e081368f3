"""One run in a fresh process: the parent's side.

Every run of a suite (one contender on one case, or a reference) can run in its own Python
process (``python -m litegate._bench.child``), so nothing a contender leaves behind (threads,
executor pools, open connections, a fragmented heap, a warmed-up cache) reaches the next one.
The parent writes a :class:`RunSpec` as JSON on the child's command line and reads the
:class:`.report.ContenderResult` back from a file; the child's progress goes to the shared
stderr.

Threads: :func:`run_in_child` blocks the caller's thread until the child ends.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any

import litegate

from .report import ContenderResult
from .workloads import WORKLOADS, Case, check_data

__all__ = ("RunSpec", "case_from_dict", "case_to_dict", "run_in_child")

_CHILD_GRACE = 120.0  # seconds past the run's own time before the child is killed


def case_to_dict(case: Case) -> dict[str, Any]:
    d = asdict(case)
    d["workload"] = case.workload.name
    return d


def case_from_dict(d: dict[str, Any]) -> Case:
    return Case(**(d | {"workload": WORKLOADS[d["workload"]]}))


@dataclass(slots=True)
class RunSpec:
    """What a child runs: contender ``index`` of suite ``suite`` built with ``params`` (or,
    when ``reference`` is set, the raw single-thread reference of that name) on ``case``."""

    suite: str
    index: int
    case: dict[str, Any]
    path: str
    seconds: float
    seed: int
    params: dict[str, Any] = field(default_factory=dict)
    reference: str = ""
    out: str = ""


def _failed(spec: RunSpec, name: str, kind: str, why: str) -> ContenderResult:
    """The result of a child that died: one error, no operation, the file as it was left."""
    case = case_from_dict(spec.case)
    return ContenderResult(
        name=name,
        kind=kind,
        workload=case.workload.name,
        workers=case.workers,
        elapsed_s=0.0,
        ops=0,
        reads=0,
        writes=0,
        errors=1,
        ops_per_s=0.0,
        p50_ms=0.0,
        p99_ms=0.0,
        read_p50_ms=0.0,
        read_p99_ms=0.0,
        write_p50_ms=0.0,
        write_p99_ms=0.0,
        error_samples={why: 1},
        data=check_data(spec.path, 0, 0),
        synchronous=case.synchronous,
    )


def run_in_child(spec: RunSpec, name: str, kind: str) -> ContenderResult:
    """Run ``spec`` in a new ``python -m litegate._bench.child`` and return its result
    (``name`` and ``kind`` label a child that died without one). Blocks for about
    ``spec.seconds`` plus interpreter start-up; a child still running ``_CHILD_GRACE``
    seconds past that is killed."""
    fd, out = tempfile.mkstemp(prefix="litegate-bench-", suffix=".json")
    os.close(fd)
    spec.out = out
    env = dict(os.environ)
    # the child imports the same litegate as this process, installed or from a checkout
    src = os.path.dirname(os.path.dirname(os.path.abspath(litegate.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    try:
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "litegate._bench.child", json.dumps(asdict(spec))],
                env=env,
                timeout=spec.seconds + _CHILD_GRACE,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return _failed(spec, name, kind, f"child still running {_CHILD_GRACE:g}s late")
        with open(out, encoding="utf-8") as fh:
            text = fh.read()
        if proc.returncode != 0 or not text:
            return _failed(spec, name, kind, f"child process exited with {proc.returncode}")
        return ContenderResult.from_dict(json.loads(text))
    finally:
        os.remove(out)
