# The README's commands: `make run` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install run test lint typecheck bench bench-full faults fuzz man man-deps test-deps clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,server,gui]'
	touch $(STAMP)

run: install
	$(BIN)/chatd serve

# libchat must stay ruff-clean and libchat and chatd mypy-clean, with at least 95% branch
# coverage of libchat from its own tests; everything else runs beside those tests
# (tests/suites.sh), and their report follows the rest's.
test: install test-deps
	$(BIN)/ruff check libchat
	$(BIN)/mypy --strict libchat chatd
	tests/suites.sh $(BIN)/python $(PYTEST_ARGS)

# The fault suite (docs/faults.md): real chatd processes through crashes under load,
# node loss, shutdowns, terminated database backends, resets, a reader that never reads,
# a full disk and a restore. `make test` runs its short runs (not the `long_fault` ones);
# this runs all of it, naming each run, with one tally line per run at the end.
FAULTS := tests/faults tests/chatd/test_crash.py tests/chatd/test_failover.py \
	tests/chatd/test_shutdown.py tests/chatd/test_hub_isolation.py

faults: install
	$(BIN)/python -m pytest $(FAULTS) -v $(PYTEST_ARGS)

# The engines' fuzzers (tests/libchat/test_fuzz.py) at four times their named examples;
# `make test` runs them at a third.
fuzz: install
	LIBCHAT_FUZZ_SCALE=4 $(BIN)/python -m pytest tests/libchat/test_fuzz.py $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check libchat chatd chatpad bench tests examples
	$(BIN)/ruff format --check libchat

typecheck: install
	$(BIN)/mypy --strict libchat chatd

bench: install
	$(BIN)/python -m pytest bench --benchmark-only --benchmark-columns=min,median,mean,ops -q
	$(BIN)/python -m bench.load all --preset quick
	$(BIN)/python -m bench.floor --sync full

bench-full: install
	$(BIN)/python -m pytest bench --benchmark-only --benchmark-columns=min,median,mean,ops -q
	$(BIN)/python -m bench.load all --preset full --json bench/results-full.json
	$(BIN)/python -m bench.load saturation --preset full --sync normal \
		--json bench/results-full-normal.json
	$(BIN)/python -m bench.floor --sync full

# The man pages must render without a single warning. tests/chatd/test_man.py checks it
# too (and that man/chatd.8 documents exactly chatd's flags), so `make test` covers it.
MAN_PAGES := man/chatd.8 man/chatpad.1

man: man-deps
	@for page in $(MAN_PAGES); do \
		out=$$(groff -man -ww -z $$page 2>&1) || exit 1; \
		if [ -n "$$out" ]; then echo "$$page:"; echo "$$out"; exit 1; fi; \
	done
	@mkdir -p build/man
	@for page in $(MAN_PAGES); do \
		groff -man -Tutf8 -P-c $$page > build/man/$$(basename $$page).txt || exit 1; \
	done
	@echo "man pages render cleanly: build/man/*.txt"

# Tools the checks need: installed with apt-get when missing and possible; otherwise a
# note (the check then fails under CI=true and is skipped elsewhere). groff renders the man
# pages, systemd-analyze verifies contrib/systemd's units.
# $(call apt_tool,COMMAND,PACKAGE)
define apt_tool
	@command -v $(1) >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			apt-get install -y --no-install-recommends $(2) >/dev/null 2>&1 || \
			{ apt-get update >/dev/null 2>&1 && \
			  apt-get install -y --no-install-recommends $(2) >/dev/null 2>&1; } || \
			echo "$@: could not install $(2)"; \
		else \
			echo "$@: $(1) is missing; install $(2) (as root: apt-get install $(2))"; \
		fi; }
endef

man-deps:
	$(call apt_tool,groff,groff-base)

test-deps: man-deps
	$(call apt_tool,systemd-analyze,systemd)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis .benchmarks

# chatpad: the screenshots the README shows, and the one-file executable (dist/chatpad).
# exe-check builds it once and runs the `exe` tests on it (tests/chatpad/test_exe.py):
# --version, a headless --self-test with its --report file, and a windowed build.
# .ci/run calls it after `make test`, which leaves those tests out.
.PHONY: screenshots exe exe-check
screenshots: install
	SDL_VIDEODRIVER=dummy SDL_AUDIODRIVER=dummy $(BIN)/python -m chatpad --screenshots docs/screenshots

EXE_WORKPATH := build/pyinstaller

exe: install
	$(BIN)/pyinstaller --noconfirm --clean --log-level WARN --distpath dist \
		--workpath $(EXE_WORKPATH) chatpad.spec

exe-check: exe
	CHATPAD_EXE=$(CURDIR)/dist/chatpad CHATPAD_EXE_WORKPATH=$(CURDIR)/$(EXE_WORKPATH) \
		$(BIN)/python -m pytest tests/chatpad/test_exe.py -m exe -v $(PYTEST_ARGS)
