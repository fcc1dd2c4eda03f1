# clot-hpo: every target installs what it needs first (Python 3.11 is the only prerequisite).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEV_STAMP := $(VENV)/.dev-installed-stamp
# Parallel pytest workers for the integration tests (pytest-xdist); 0 runs them in one process.
# Two workers halve the integration folder's wall time (tests/README.md); on a fresh clone they
# peaked at 14.3 GiB of the 24 while two trials decoded their images at 4096 px, a side the VRAM
# tests no longer use. On a machine short of memory set PYTEST_WORKERS=0.
PYTEST_WORKERS ?= 2
# Taken when make starts, so the demo's reported time includes installation.
DEMO_START := $(shell date +%s)
HOST   ?= 127.0.0.1
PORT   ?= 5000

export MLFLOW_DISABLE_TELEMETRY := true
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: install install-dev system-deps demo lint test test-fast mlflow-server ui clean-demo benchmarks help

help:
	@echo "make demo           search both backbones on synthetic data, then promote the best model"
	@echo "make test           make lint, then the whole test suite (installs PostgreSQL and Chromium when missing)"
	@echo "make test-fast      the unit tests only (no server, no subprocess; a few minutes)"
	@echo "make lint           ruff (lint and format check), mypy (strict), import-linter contracts"
	@echo "make mlflow-server  the MLflow UI over the local store on http://$(HOST):$(PORT)"

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

# The test and lint tools (requirements-dev.txt) on top of the runtime install.
$(DEV_STAMP): $(STAMP) requirements-dev.txt
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	@touch $(DEV_STAMP)

install: $(STAMP)

install-dev: $(DEV_STAMP)

# PostgreSQL and Chromium for the integration tests (Debian packages; needs root or sudo).
system-deps:
	@bash scripts/install_system_deps.sh

demo: install
	@DEMO_START=$(DEMO_START) bash scripts/demo.sh

# Configured in pyproject.toml: [tool.ruff], [tool.mypy], [tool.importlinter].
lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# The pyramid (tests/README.md): unit tests on $(UNIT_WORKERS) xdist workers (2 cores: 3.6 -> 2.0
# min), then the integration tests on $(PYTEST_WORKERS) xdist workers, each file on one worker
# (its module fixtures start a study or a server once), the longest files first
# (tests/conftest.py, by tests/integration/durations.json; xdist's own order, the most tests
# first, could start a long one-test file last). Both runs print their 15 slowest tests.
UNIT_WORKERS ?= 2
UNIT_ARGS = $(if $(filter-out 0,$(UNIT_WORKERS)),-n $(UNIT_WORKERS))
INTEGRATION_ARGS = $(if $(filter-out 0,$(PYTEST_WORKERS)),-n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder)

# Lint (mostly mypy: one process, about 25 s of CPU) runs beside the unit tests, whose two
# workers leave a core partly idle; --output-sync prints each one's output whole when it ends.
# Either failing fails `make test`, before the integration tests start.
test: install-dev system-deps
	@$(MAKE) --no-print-directory -j2 --output-sync=target lint test-fast
	$(BIN)/python -m pytest tests/integration $(INTEGRATION_ARGS)

test-fast: install-dev
	$(BIN)/python -m pytest tests/unit $(UNIT_ARGS)

mlflow-server: install
	@bash scripts/mlflow_server.sh $(HOST) $(PORT)

ui: mlflow-server

benchmarks: install
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done
