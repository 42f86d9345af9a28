# The two commands: `make run` and `make test`. Both do all the set-up they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# the Python runtime's packages (boto3 ..., msgpack): what functions import besides the stdlib (gateway/runtime_packages.py)
RUNTIME_PACKAGES := build/runtime-packages/.installed
# the runtime's own sources, compiled again when they change (zygotes run with -B: they would compile at every start)
RUNTIME_SOURCES := $(shell find runtimes gateway/contracts gateway/isolation -name '*.py')
RUNTIME_BYTECODE := build/runtime-sources.compiled
HOST ?= 127.0.0.1
PORT ?= 9000
DATA_DIR ?= ./.gateway-data

.PHONY: run test lint typecheck unit install bench bench-concurrency profile soak clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

$(RUNTIME_PACKAGES): $(STAMP) gateway/runtime_packages.py
	$(BIN)/python -m gateway.runtime_packages

$(RUNTIME_BYTECODE): $(RUNTIME_PACKAGES) $(RUNTIME_SOURCES)
	$(BIN)/python -m gateway.runtime_packages --sources
	touch $(RUNTIME_BYTECODE)

install: $(STAMP) $(RUNTIME_PACKAGES) $(RUNTIME_BYTECODE)

run: install
	$(BIN)/python -m gateway serve --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR) --deploy examples

lint: install
	$(BIN)/ruff check gateway runtimes tests bench
	$(BIN)/ruff format --check gateway runtimes tests bench

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest -q

test: lint typecheck unit

bench: install
	$(BIN)/python bench/suite.py

profile: install
	$(BIN)/python bench/profile.py

soak: install
	$(BIN)/python bench/soak.py

bench-concurrency: install
	$(BIN)/python bench/concurrency.py

clean:
	rm -rf $(VENV) build/runtime-packages $(RUNTIME_BYTECODE) $(DATA_DIR) .mypy_cache .pytest_cache .ruff_cache
