# Two commands a new user needs; both create the virtual environment themselves.
#   make demo  - a goal through plan, parallel work, audit, rework and synthesis, live
#                (server, two workers, no services, no API key), dashboard at :8001
#   make test  - the whole test suite (PostgreSQL tests skip, with the reason, if none is reachable)
# And: make run - the server alone on its embedded default (a SQLite file).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/am demo

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
