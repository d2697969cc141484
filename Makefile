# Two commands for a newcomer: `make run` and `make test`. Both create/update .venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Offline machines with a local copy of the names dataset (like ours) use it; elsewhere the
# CLI downloads it once, checks its sha256 and caches it.
NAMES  := $(firstword $(wildcard ../shared/data/names.txt))
RUN_DATA := $(if $(NAMES),--data $(NAMES))

.PHONY: run test test-fast lint format bench clean

# setup.py builds the C engine (optional: skipped with a warning where no C compiler works);
# an edit of its sources rebuilds it.
C_SOURCES := $(wildcard src/microgpt/c_engine/csrc/*.c src/microgpt/c_engine/csrc/*.h)
$(STAMP): pyproject.toml setup.py $(C_SOURCES)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Train the default model (the original microgpt run) and print 20 samples.
run: $(STAMP)
	$(BIN)/microgpt train $(RUN_DATA) --out runs/names --force

# The whole suite, slow end-to-end reproductions included; ruff first. The tests run on every
# core (pytest-xdist), each test file in one worker (its module fixtures are built once).
PYTEST := $(BIN)/python -m pytest -q -n auto --dist loadfile
test: $(STAMP)
	$(BIN)/ruff check src tests
	$(PYTEST)

# The quick loop while developing: skips the tests marked slow.
test-fast: $(STAMP)
	$(PYTEST) -m "not slow"

# Time the engines side by side (about a minute); see README, `microgpt bench`.
SHAKESPEARE := $(firstword $(wildcard ../shared/data/tinyshakespeare.txt))
BENCH_LARGE := $(if $(SHAKESPEARE),--large-data $(SHAKESPEARE) --large-docs paragraphs)
bench: $(STAMP)
	$(BIN)/microgpt bench $(RUN_DATA) $(BENCH_LARGE)

lint: $(STAMP)
	$(BIN)/ruff check src tests

format: $(STAMP)
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache src/*.egg-info
