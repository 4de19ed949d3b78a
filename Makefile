# Two commands a new user needs; both create the virtual environment themselves.
#   make run   - the server on its embedded default (a SQLite file), http://127.0.0.1:8001
#   make test  - the whole test suite (PostgreSQL tests skip, with the reason, if none is reachable)

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/am serve

test: $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check agent_manager tests bench
	$(BIN)/ruff format --check agent_manager tests bench
	$(BIN)/mypy agent_manager

bench: $(STAMP)
	$(BIN)/python bench/claim_throughput.py
	$(BIN)/python bench/cross_replica_handoff.py

clean:
	rm -rf $(VENV) *.egg-info
