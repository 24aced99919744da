# The README's commands: `make run` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install run test lint typecheck bench bench-full man clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,gui]'
	touch $(STAMP)

run: install
	$(BIN)/chatd serve

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check libchat chatd chatpad bench tests
	$(BIN)/ruff format --check libchat

typecheck: install
	$(BIN)/mypy --strict libchat

bench: install
	$(BIN)/python -m pytest bench --benchmark-only --benchmark-columns=min,median,mean,ops -q
	$(BIN)/python -m bench.load all --preset quick

bench-full: install
	$(BIN)/python -m pytest bench --benchmark-only --benchmark-columns=min,median,mean,ops -q
	$(BIN)/python -m bench.load all --preset full --json bench/results-full.json
	$(BIN)/python -m bench.load saturation --preset full --sync normal \
		--json bench/results-full-normal.json

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis .benchmarks
