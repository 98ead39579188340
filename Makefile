# `make demo` and `make test` create the environment (.venv) when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SMOKE_TABLES_OUT ?= smoke_tables

.PHONY: env demo test test-slow smoke-tables bench lint contracts clean-cache

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

env: $(STAMP)

demo: $(STAMP)
	$(BIN)/python run.py experiment=quickstart

# pytest-xdist: one worker per core (at most TEST_WORKERS_MAX), each test file whole on one worker so its
# module fixtures (a warmed cache, a finished run) are built once; TEST_WORKERS=0 runs in this process
TEST_WORKERS ?= auto
TEST_WORKERS_MAX ?= 4
PYTEST := $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --maxprocesses $(TEST_WORKERS_MAX) --dist loadfile

test: $(STAMP)
	$(BIN)/lint-imports
	$(PYTEST)

test-slow: $(STAMP)
	$(PYTEST) -m slow

# the paper table end to end on tiny backbones and generated data in each dataset's official layout
SMOKE_TABLES_OUT ?= $(shell mktemp -d)
smoke-tables: $(STAMP)
	$(BIN)/python scripts/reproduce_tables.py --smoke --tables paper --out $(SMOKE_TABLES_OUT)

bench: $(STAMP)
	$(BIN)/python scripts/bench_methods.py
	$(BIN)/python scripts/bench_grid.py
	$(BIN)/python scripts/bench_auto.py

# the formatter (ruff format, pinned in the dev extra) and the linter, line length 120 (pyproject.toml)
lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

contracts: $(STAMP)
	$(BIN)/lint-imports

clean-cache:
	rm -rf cache
