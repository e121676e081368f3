# One entry point for humans and CI. `make test` and `make demo` create the venv if missing.
PYTHON ?= python3
# Resolve the interpreter; under pyenv, `python3.13` may exist only as an inactive version.
PYBIN := $(shell $(PYTHON) -c 'import sys; print(sys.executable)' 2>/dev/null || \
	(v=$$(echo $(PYTHON) | sed 's/^python//'); \
	 d=$$(pyenv root 2>/dev/null)/versions/$$(pyenv versions --bare 2>/dev/null | grep "^$$v" | tail -n 1); \
	 test -x "$$d/bin/$(PYTHON)" && echo "$$d/bin/$(PYTHON)"))
ifeq ($(PYTHON),python3)
VENV ?= .venv
else
VENV ?= .venv-$(PYTHON)
endif
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test lint typecheck pytest ci soak demo bench clean browser dqlite

# The packages are installed by uv when it can be had (the same versions as pip's, in ~10 s
# instead of ~60 s: CI installs two venvs in its 15 minutes), else by pip.
$(STAMP): pyproject.toml
	@test -n "$(PYBIN)" || { echo "error: interpreter '$(PYTHON)' not found" >&2; exit 2; }
	test -x $(VPY) || $(PYBIN) -m venv $(VENV)
	$(VPY) -m pip install -q --disable-pip-version-check uv 2>/dev/null \
		&& $(VENV)/bin/uv pip install -q --python $(VPY) -e '.[dev]' \
		|| $(VPY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/ruff format --check src tests benchmarks examples

typecheck: $(STAMP)
	$(VENV)/bin/mypy --strict src/
	$(VENV)/bin/mypy --strict tests/

# The stats page is tested in a real browser: Debian's chromium, installed when missing.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing chromium (apt) for the browser test"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
		|| { echo "error: could not install chromium; the browser test needs it" >&2; exit 2; }; }

# The dqlite cluster tests (tests/dqlite) run real `dqlite-demo` nodes: Debian's go-dqlite, installed
# when missing. Unlike `browser`, a failed install does not fail the build: the Python client
# exists for 3.13+ only and the backend is optional, so those tests then skip and print why
# (tests/dqlite/conftest.py). Only interpreters that can run them ask for it (DQLITE_DEP), so a
# 3.11-only run never waits for apt.
dqlite:
	@command -v dqlite-demo >/dev/null 2>&1 || { \
		echo "installing go-dqlite (apt) for the dqlite cluster tests"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq go-dqlite >/dev/null) \
		|| echo "warning: could not install go-dqlite (apt-get failed); the tests in tests/dqlite will be skipped" >&2; }
DQLITE_DEP := $(shell test -n "$(PYBIN)" && $(PYBIN) -c 'import sys; print("dqlite" if sys.version_info >= (3, 13) else "")' 2>/dev/null)

# Coverage of src/litegate (threads and the Python subprocesses the tests start included); the
# report lists only files with missing lines and fails below the floor (pyproject
# [tool.coverage.report] fail_under). Data stays inside the venv, one per interpreter.
# `make pytest COV= PYTEST_ARGS=tests/test_x.py` runs a subset without it.
COV ?= --cov --cov-report=term-missing:skip-covered
pytest: $(STAMP) browser $(DQLITE_DEP)
	COVERAGE_FILE=$(abspath $(VENV))/.coverage $(VPY) -m pytest $(COV) $(PYTEST_ARGS)

test: lint typecheck pytest

# What CI runs (.ci/run): the full `make test` on Python 3.11, then its tests on 3.13. Each event loop
# the async tests run on is covered once (budget: 15 minutes on 2 cores): asyncio and its debug
# mode on 3.11; uvloop and asyncio with eager tasks (3.12+) on 3.13. `make test` alone runs
# every loop the interpreter has; LITEGATE_LOOPS picks some (tests/conftest.py). The read modes
# (a pool of 2, none, one reader per thread) are the engine's, not the interpreter's: all three
# on 3.11, where coverage counts them; the default-like pool of 2 on 3.13 (LITEGATE_READ_MODES;
# the other two were ~45 s of that leg).
# The two venvs are installed side by side first (uv: ~10 s each, pip ~60 s; no test runs
# meanwhile). Lint and typecheck run once: ruff is one binary and mypy pins python_version, so
# the 3.13 leg would repeat the same check. The wheel test (a py3-none-any wheel built, installed
# and run) runs on 3.11 only; the 3.13 leg still runs the demo itself (tests/test_demo_web.py).
# Coverage (and its floor) is measured once, on 3.11: tracing made the 3.13 leg's tests ~50 %
# slower (async tests: 65 s bare, 97 s traced), ~110 s of the 15 minutes.
ci:
	$(MAKE) --no-print-directory -j2 --output-sync=target ci-venv-3.11 ci-venv-3.13
	LITEGATE_LOOPS=asyncio,asyncio-debug $(MAKE) test
	LITEGATE_LOOPS=uvloop,eager LITEGATE_READ_MODES=readers=2 $(MAKE) pytest PYTHON=python3.13 COV= \
		PYTEST_ARGS="$(PYTEST_ARGS) $(CI_313_SKIP)"

# Run once, on 3.11, in CI: what neither the interpreter nor the event loop changes -- the
# wheel, Litestream's binary driven by the CLI, the naive app's failure, `litegate bench`'s
# harness and chart, hypothesis's value round trips (~90 s of the 3.13 leg, which gained the
# dqlite cluster tests: ~50 s).
CI_313_SKIP = --deselect tests/test_demo_wheel.py --deselect tests/test_litestream.py \
	--deselect tests/test_naive_app.py --deselect tests/test_bench_runner.py \
	--deselect tests/test_bench.py --deselect tests/test_bench_async.py \
	--deselect tests/test_hypothesis.py::test_values_round_trip

.PHONY: ci-venv-3.11 ci-venv-3.13
ci-venv-3.11:
	$(MAKE) --no-print-directory venv
ci-venv-3.13:
	$(MAKE) --no-print-directory venv PYTHON=python3.13

# The long forms of the stress tests (marker `stress`: tests/stress, and the crash, bad-input
# and model tests of tests/faults): minutes, not seconds.
soak: $(STAMP)
	LITEGATE_STRESS=long $(VPY) -m pytest -m stress -o timeout=1800 $(PYTEST_ARGS)

demo: $(STAMP)
	$(VPY) -m litegate demo

bench: $(STAMP)
	$(VPY) benchmarks/sync_remedies.py

clean:
	rm -rf .venv .venv-* .pytest_cache .mypy_cache .ruff_cache
