"""One run in a fresh process: the child's side (``python -m litegate._bench.child SPEC``).

Builds the contender the :class:`.isolate.RunSpec` names (by its suite's index, or the raw
reference), runs it through :func:`.runner.run_case` on the given, already fresh, file and
writes the result as JSON to ``spec.out``. Progress goes to stderr.

Threads: all on the process's main thread (the run starts its own workers).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from .contenders import Raw
from .isolate import RunSpec, case_from_dict
from .runner import THREADS, run_case
from .suites import build_suite

__all__ = ("main",)


def _progress(message: str) -> None:
    sys.stderr.write(f"[bench] {message}\n")
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    spec = RunSpec(**json.loads(args[0]))
    case = case_from_dict(spec.case)
    result: Any
    if spec.reference:
        result = run_case(
            Raw(spec.reference), case, THREADS, spec.path, spec.seconds, spec.seed, _progress
        )
    else:
        suite = build_suite(spec.suite, spec.params)
        contender = suite.contenders[spec.index]()
        result = run_case(
            contender, case, suite.driver, spec.path, spec.seconds, spec.seed, _progress
        )
    with open(spec.out, "w", encoding="utf-8") as fh:
        json.dump(result.as_dict(), fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
