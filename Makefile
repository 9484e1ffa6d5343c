# Lookback: the two commands for a fresh machine are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
CODE    = libs services tests scripts bench

.PHONY: setup demo up test check pytest unit scenarios bench protos clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

## Set up, start the whole suite (embedded store) and run the demo; Ctrl-C stops it.
demo: setup
	$(BIN)/lookback up --demo

## Start the suite without the demo.
up: setup
	$(BIN)/lookback up

## Set up and run every check and every test (what CI runs).
test: setup check pytest scenarios

check: setup
	$(BIN)/python scripts/gen_protos.py --check
	$(BIN)/python scripts/gen_config_docs.py --check
	$(BIN)/buf lint
	scripts/buf_breaking.sh $(BIN)/buf
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)
	$(BIN)/mypy libs services scripts bench
	scripts/k8s_check.sh $(BIN)/kubernetes-validate

## Every pytest test: tests/unit, tests/contract (each backend: SQLite, Cassandra,
## Redis) and tests/integration (real processes and servers).
pytest: setup
	$(BIN)/pytest

## Only the pure, fast tests (no backend, no server, no process).
unit: setup
	$(BIN)/pytest tests/unit

## Replay every scenario (ours, and the specification's examples when present).
scenarios: setup
	$(BIN)/lookback scenario run tests/scenarios $(wildcard ../shared/scenarios)

## Every benchmark in one sitting (docs/performance.md quotes this run); writes docs/benchmarks/.
## About 35 minutes; run it on a quiet machine (no other tests or benchmarks).
bench: setup
	$(BIN)/python -m bench.decisions --duration 10 --out docs/benchmarks/decisions.md --json docs/benchmarks/decisions.json
	$(BIN)/python -m bench.keys --duration 10 --rounds 3 --out docs/benchmarks/keys.md
	$(BIN)/python -m bench.clicks --duration 10 --gateway-processes 2 --out docs/benchmarks/clicks.md
	$(BIN)/python -m bench.clicks --duration 10 --gateway-processes 2 --cassandra --out docs/benchmarks/clicks-cassandra.md
	$(BIN)/python -m bench.storage --out docs/benchmarks/storage.md
	$(BIN)/python -m bench.wal --clicks 1000000 --out docs/benchmarks/wal.md
	$(BIN)/python -m bench.outcomes --duration 10 --rounds 3 --out docs/benchmarks/outcomes.md
	$(BIN)/python -m bench.reports --out docs/benchmarks/reports.md
	$(BIN)/python -m bench.explain --duration 10 --rounds 3 --out docs/benchmarks/explain.md
	$(BIN)/python -m bench.fraud --duration 10 --rounds 3 --out docs/benchmarks/fraud.md
	$(BIN)/python -m bench.erasure --devices 10000 --out docs/benchmarks/erasure.md
	$(BIN)/python -m bench.links --duration 10 --out docs/benchmarks/links.md

## Regenerate the Python code from protos/.
protos: setup
	$(BIN)/python scripts/gen_protos.py

clean:
	rm -rf $(VENV) .lookback .pytest_cache .mypy_cache .ruff_cache
