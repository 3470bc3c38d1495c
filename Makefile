# Every target creates or updates .venv itself when pyproject.toml or the lock changes. It installs the exact
# versions (and hashes) of requirements-dev.lock, the set the suite passed with; `make lock` refreshes the locks.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements-dev.lock
COMPILE := $(BIN)/uv pip compile pyproject.toml --group install --universal --python-version 3.11 --generate-hashes --quiet

.PHONY: run test lint lock bench-collect bench-merge bench-pages bench-dashboard bench-purchases bench-retention bench-conversions bench-tenant-binding bench-broker clean

$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --quiet --disable-pip-version-check --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check --quiet || (echo "pyproject.toml asks for what $(LOCK) lacks: run make lock"; exit 1)
	touch $(STAMP)

# Refresh both locks to the newest versions pyproject.toml allows (the runtime lock, used by the Docker image, is
# constrained to the dev lock's versions); then run `make test` and commit them together.
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet uv
	$(COMPILE) --extra dev --upgrade -o requirements-dev.lock
	$(COMPILE) --constraints requirements-dev.lock -o requirements.lock

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
	$(BIN)/python bench/collect.py $(BENCH_ARGS)

bench-merge: $(STAMP)
	$(BIN)/python bench/merge.py

bench-pages: $(STAMP)
	$(BIN)/python bench/pages.py

bench-dashboard: $(STAMP)
	$(BIN)/python bench/dashboard.py

bench-purchases: $(STAMP)
	$(BIN)/python bench/purchases.py

bench-retention: $(STAMP)
	$(BIN)/python bench/retention.py

bench-conversions: $(STAMP)
	$(BIN)/python bench/conversions.py

bench-tenant-binding: $(STAMP)
	$(BIN)/python bench/tenant_binding.py

bench-broker: $(STAMP)
	$(BIN)/python bench/broker.py

clean:
	rm -rf $(VENV) .trailmark .pytest_cache .mypy_cache .ruff_cache
