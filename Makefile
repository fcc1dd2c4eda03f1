# clot-hpo: every target installs what it needs first (Python 3.11 is the only prerequisite).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# Taken when make starts, so the demo's reported time includes installation.
DEMO_START := $(shell date +%s)
HOST   ?= 127.0.0.1
PORT   ?= 5000

export MLFLOW_DISABLE_TELEMETRY := true
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: install system-deps demo lint test test-fast mlflow-server ui clean-demo benchmarks help

help:
	@echo "make demo           search both backbones on synthetic data, then promote the best model"
	@echo "make test           make lint, then the whole test suite (installs PostgreSQL and Chromium when missing)"
	@echo "make lint           ruff (lint and format check), mypy (strict), import-linter contracts"
	@echo "make mlflow-server  the MLflow UI over the local store on http://$(HOST):$(PORT)"

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

install: $(STAMP)

# PostgreSQL and Chromium for the integration tests (Debian packages; needs root or sudo).
system-deps:
	@bash scripts/install_system_deps.sh

demo: install
	@DEMO_START=$(DEMO_START) bash scripts/demo.sh

# Configured in pyproject.toml: [tool.ruff], [tool.mypy], [tool.importlinter].
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: install system-deps lint
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m "not slow"

mlflow-server: install
	@bash scripts/mlflow_server.sh $(HOST) $(PORT)

ui: mlflow-server

benchmarks: install
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done
