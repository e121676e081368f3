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

.PHONY: venv test lint typecheck pytest demo bench clean browser

$(STAMP): pyproject.toml
	@test -n "$(PYBIN)" || { echo "error: interpreter '$(PYTHON)' not found" >&2; exit 2; }
	test -x $(VPY) || $(PYBIN) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/ruff format --check src tests benchmarks examples

typecheck: $(STAMP)
	$(VENV)/bin/mypy --strict src/

# The stats page is tested in a real browser: Debian's chromium, installed when missing.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing chromium (apt) for the browser test"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
		|| { echo "error: could not install chromium; the browser test needs it" >&2; exit 2; }; }

pytest: $(STAMP) browser
	$(VPY) -m pytest $(PYTEST_ARGS)

test: lint typecheck pytest

demo: $(STAMP)
	$(VPY) -m litegate demo

bench: $(STAMP)
	$(VPY) benchmarks/sync_remedies.py

clean:
	rm -rf .venv .venv-* .pytest_cache .mypy_cache .ruff_cache
