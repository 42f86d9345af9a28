# The two commands: `make run` and `make test`. Both do all the set-up they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
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

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m gateway serve --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR) --deploy examples

lint: $(STAMP)
	$(BIN)/ruff check gateway runtimes tests bench
	$(BIN)/ruff format --check gateway runtimes tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python bench/suite.py

profile: $(STAMP)
	$(BIN)/python bench/profile.py

soak: $(STAMP)
	$(BIN)/python bench/soak.py

bench-concurrency: $(STAMP)
	$(BIN)/python bench/concurrency.py

clean:
	rm -rf $(VENV) $(DATA_DIR) .mypy_cache .pytest_cache .ruff_cache
