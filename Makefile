# northstar: `make run` serves the gateway, `make test` proves it.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8000
DATA   ?= ./data

.PHONY: run install test lint typecheck contracts unit real-client bench bench-replicas bench-contextforge soak clean test-tools browser console-screenshots

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml northstar/__init__.py | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/northstar serve --host $(HOST) --port $(PORT) --data-dir $(DATA)

lint: $(STAMP)
	$(VENV)/bin/ruff check northstar actors tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

typecheck: $(STAMP)
	$(VENV)/bin/mypy

contracts: $(STAMP)
	$(VENV)/bin/lint-imports

# Two workers, each test file on one (its module-scoped servers start once): about half the
# wall time of one worker on two cores. PYTEST_WORKERS=0 runs everything in this process.
PYTEST_WORKERS ?= 2
unit: $(STAMP) test-tools
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile

# Programs the tests drive, from Debian's packages: chromium for the console's browser tests
# (Playwright is told its path; it never downloads a browser) and wrk for the benchmark's smoke
# tests. Installed here when missing; quiet, idempotent, sudo only when not root.
test-tools:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ] || ! command -v wrk >/dev/null; then \
	  sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  echo "installing chromium, chromium-driver and wrk (apt-get)"; \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null && \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver wrk >/dev/null; \
	fi

browser: test-tools

# Screenshots of the console's main pages for docs/console.md, taken by its browser tests.
console-screenshots: $(STAMP) browser
	NORTHSTAR_CONSOLE_SCREENSHOTS=docs/console $(PY) -m pytest -q tests/console/test_console_workflow.py \
	  tests/console/test_console_access.py

real-client: $(STAMP)
	bash tests/real_client/repro_real_client.sh

test: lint unit real-client

bench: $(STAMP) bench-contextforge
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(PY) -m bench $(BENCH_ARGS)

# 1, 2, 3 replicas on PostgreSQL behind a balancer, and local vs Redis limits (docs/performance.md).
bench-replicas: $(STAMP)
	$(PY) -m bench.replicas $(BENCH_ARGS)
# ContextForge (PyPI mcp-contextforge-gateway), the other gateway of the federation section, in a
# venv of its own (its dependencies never meet northstar's). A network install, for the benchmark
# only: the tests never use it. When it cannot be installed the section says "unavailable".
CF_VENV := bench/.venvs/contextforge
bench-contextforge:
	@if [ ! -x $(CF_VENV)/bin/mcpgateway ]; then \
	  echo "installing mcp-contextforge-gateway into $(CF_VENV)"; \
	  $(PYTHON) -m venv $(CF_VENV) && $(CF_VENV)/bin/pip install --quiet mcp-contextforge-gateway \
	  || echo "bench: could not install ContextForge; its rows will say unavailable"; \
	fi

soak: $(STAMP)
	$(PY) -m bench.soak

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
