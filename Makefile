# Patron Bridge: `make run` serves the development config, `make test` runs the whole suite.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
CONFIG ?= conf/bridge.toml

.PHONY: run test lint bench fuzz clean venv dev stress

$(BIN)/patron-bridge: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	@touch $@

$(VENV)/.dev: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

venv: $(BIN)/patron-bridge
dev: $(VENV)/.dev

run: $(BIN)/patron-bridge
	$(BIN)/patron-bridge --config $(CONFIG) serve

test: $(VENV)/.dev
	$(BIN)/python -m pytest -q

lint: $(VENV)/.dev
	$(BIN)/ruff check bridge plugins tests bench
	$(BIN)/ruff format --check bridge plugins tests bench
	$(BIN)/mypy

bench: $(VENV)/.dev
	$(BIN)/python -m bench

fuzz: $(VENV)/.dev
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest -q -k "property or hypothesis or fuzz" tests

stress: $(VENV)/.dev
	STRESS=full $(BIN)/python -m pytest -q tests/stress

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
