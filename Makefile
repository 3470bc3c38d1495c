# Every target creates or updates .venv itself when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench-collect bench-merge bench-pages clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/trailmark run

test: $(STAMP) lint
	$(BIN)/python -m pytest

SOURCES := api workers tenants migrations tests $(wildcard bench)

lint: $(STAMP)
	$(BIN)/ruff check $(SOURCES)
	$(BIN)/ruff format --check $(SOURCES)
	$(BIN)/mypy

bench-collect: $(STAMP)
	$(BIN)/python bench/collect.py

bench-merge: $(STAMP)
	$(BIN)/python bench/merge.py

bench-pages: $(STAMP)
	$(BIN)/python bench/pages.py

clean:
	rm -rf $(VENV) .trailmark .pytest_cache .mypy_cache .ruff_cache
