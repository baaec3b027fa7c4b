# Every target bootstraps what it needs: uv (into .tools/ when not on PATH) and .venv from uv.lock.
SHELL := /bin/bash
PYTHON ?= python3
UV := $(or $(shell command -v uv 2>/dev/null),$(CURDIR)/.tools/uv/bin/uv)
VENV := .venv
BIN := $(VENV)/bin
SYNCED := $(VENV)/.synced

.PHONY: run test check lint types sizes bench clean

$(CURDIR)/.tools/uv/bin/uv:
	@echo "bootstrapping uv into .tools/uv"
	@$(PYTHON) -m pip install --quiet --disable-pip-version-check --target .tools/uv uv 2>/dev/null \
	  || ( $(PYTHON) -m venv .tools/venv && .tools/venv/bin/pip install --quiet uv \
	       && mkdir -p .tools/uv/bin && ln -sf $(CURDIR)/.tools/venv/bin/uv .tools/uv/bin/uv )

$(SYNCED): pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked --python $(PYTHON)
	@touch $@

run: $(SYNCED)  ## start Redis, the API and a worker on the simulator (AIJOBS_PORT to change the port)
	$(BIN)/aijobs run

lint: $(SYNCED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: $(SYNCED)
	$(BIN)/mypy

sizes:  ## modules are one concept each: none may pass 600 lines
	@big=$$(find src workers -name '*.py' -exec wc -l {} + | awk '$$2 != "total" && $$1 > 600'); \
	  if [ -n "$$big" ]; then echo "modules over 600 lines:"; echo "$$big"; exit 1; fi

check: lint types sizes

test: check
	$(BIN)/pytest

bench: $(SYNCED)  ## hot-path benchmarks; results in bench/results/
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .tools .mypy_cache .ruff_cache .pytest_cache
