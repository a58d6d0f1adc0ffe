# One Makefile for install, run, lint, typecheck, test and bench; CI calls the same targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
EXTRAS ?= dev

.PHONY: install run test lint format typecheck pytest bench bench-quick chaos clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# The store's tests run against a real PostgreSQL: install Debian's when missing and permitted.
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] \
	    && command -v apt-get >/dev/null 2>&1; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) \
	    || echo "warning: could not install postgresql; store tests on PostgreSQL will skip"; \
	fi
	@# The Redis queue backend's tests run against a real redis-server: install Debian's when missing and permitted.
	@if ! command -v redis-server >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] \
	    && command -v apt-get >/dev/null 2>&1; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) \
	    || echo "warning: could not install redis-server; Redis queue tests will skip"; \
	fi
	@# The dashboard's browser tests drive Debian's Chromium through Playwright.
	@if ! command -v chromium >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] \
	    && command -v apt-get >/dev/null 2>&1; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
	    || echo "warning: could not install chromium; dashboard browser tests will skip"; \
	fi
	@# The sandbox isolates each function call with bubblewrap: install Debian's when missing and permitted.
	@if ! command -v bwrap >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap \
	    || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap)) \
	    || echo "warning: could not install bubblewrap; the sandbox falls back to unshare"; \
	fi
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $(STAMP)

run: install
	$(BIN)/netsuke serve --agents-dir agents

lint: install
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

format: install
	$(BIN)/ruff format src tests benchmarks examples
	$(BIN)/ruff check --fix src tests benchmarks examples

typecheck: install
	$(BIN)/mypy

# The suite runs on pytest-xdist workers, a test file at a time per worker (so a module's
# fixtures start once), docs/testing.md: PYTEST_WORKERS=auto is one per CPU, PYTEST_WORKERS=0
# runs it in this one process; PYTEST_ARGS adds options (a file, -k, -x, ...).
PYTEST_WORKERS ?= auto
PYTEST_ARGS ?=
pytest: install
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile --durations=25 $(PYTEST_ARGS)

# ruff first (seconds), then mypy beside pytest: pytest spends much of its time waiting on the
# subprocesses and servers its tests start.
test: install lint
	$(MAKE) --no-print-directory -j2 --output-sync=line typecheck pytest

# Randomized cluster fault soak (slow; not part of `make test`): CHAOS_ROUNDS rounds, CHAOS_SEED
# to replay a run. See docs/cluster.md, "Failure behaviour".
CHAOS_ROUNDS ?= 20
chaos: install
	NETSUKE_CHAOS=1 NETSUKE_CHAOS_ROUNDS=$(CHAOS_ROUNDS) $(if $(CHAOS_SEED),NETSUKE_CHAOS_SEED=$(CHAOS_SEED)) \
	  $(BIN)/pytest tests/cluster -m chaos -s -p no:cacheprovider

bench: install
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python benchmarks/kernel.py
	$(BIN)/python benchmarks/peers.py
	$(BIN)/python benchmarks/store.py
	$(BIN)/python benchmarks/agents.py
	$(BIN)/python benchmarks/history.py
	$(BIN)/python benchmarks/sandbox.py
	$(BIN)/python benchmarks/queue.py
	$(BIN)/python benchmarks/cache.py
	$(BIN)/python benchmarks/api.py
	$(BIN)/python benchmarks/manager.py
	$(BIN)/python benchmarks/cluster.py
	$(BIN)/python benchmarks/cluster.py --case part2
	$(BIN)/python benchmarks/cluster.py --case nodes

bench-quick: install
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python benchmarks/kernel.py --quick
	$(BIN)/python benchmarks/peers.py --quick
	$(BIN)/python benchmarks/store.py --quick
	$(BIN)/python benchmarks/agents.py --quick
	$(BIN)/python benchmarks/history.py --quick
	$(BIN)/python benchmarks/sandbox.py --quick
	$(BIN)/python benchmarks/queue.py --quick
	$(BIN)/python benchmarks/cache.py --quick
	$(BIN)/python benchmarks/api.py --quick
	$(BIN)/python benchmarks/manager.py --quick
	$(BIN)/python benchmarks/cluster.py --quick
	$(BIN)/python benchmarks/cluster.py --quick --case part2
	$(BIN)/python benchmarks/cluster.py --quick --case nodes

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
