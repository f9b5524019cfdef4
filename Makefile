# Thin wrappers. `make run` and `make test` work on a fresh machine with Python 3.11+ and
# redis-server: they create the virtualenv and install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: install install-test run test check lint format bench profile clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

run: install
	$(BIN)/sentinel serve $(ARGS)

test: install-test
	$(BIN)/pytest $(ARGS)

# The quick check (under a minute): lint, types and the unit tests, none that starts a server.
check: lint
	$(BIN)/pytest -m "not e2e and not slow" $(ARGS)

lint: install-test
	$(BIN)/ruff check sentinel tests bench
	$(BIN)/ruff format --check sentinel tests bench
	$(BIN)/mypy

format: install-test
	$(BIN)/ruff format sentinel tests bench
	$(BIN)/ruff check --fix sentinel tests bench

bench: install-test
	$(BIN)/python -m bench $(ARGS)

# Where the proxy's CPU goes, sampled by py-spy: make profile ARGS="--scenario stream/16"
profile: install-test
	$(BIN)/python -m bench.profile $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
