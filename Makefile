# Two commands set up a fresh machine: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test headless screenshots bench lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e .
	touch $@

# The test extras and Ray: tests/test_ray.py runs grids on a local Ray instance (skipped without Ray).
# One pip install for both stamps: a second one resolved every dependency and built the package again.
$(TEST_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[test,ray]'
	touch $(STAMP) $@

run: $(STAMP)
	$(BIN)/greenlab --experiments experiments.toml

headless: $(STAMP)
	$(BIN)/greenlab --headless experiments.toml

# pytest on every core (pytest-xdist), each test file on one worker: its module fixtures are made once.
# compileall: the tests start hundreds of Python processes (CLI grids, fork servers, Ray workers), and where
# PYTHONDONTWRITEBYTECODE is set each one compiled GreenLab's sources again (a tenth of a CPU second each).
test: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m compileall -q greenlab
	$(BIN)/python -m pytest -n auto --dist loadfile; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo 'make test: pytest collected no tests' >&2; exit 1; fi; exit $$rc

# SVG pictures of each TUI pane, taken while the default grid really runs (scripts/screenshots.py),
# for docs/tui.md and the README.
screenshots: $(STAMP)
	$(BIN)/python scripts/screenshots.py screenshots

bench: $(STAMP)
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
