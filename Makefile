# The two commands of the README: `make demo` and `make test`. Both install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

DEMO_DEBS := restic borgbackup sqlite3 ca-certificates
TEST_DEBS := $(DEMO_DEBS) chromium fonts-dejavu-core

.PHONY: demo test bench run clean system-python

demo: system-python
	@scripts/install-system-deps $(DEMO_DEBS)
	@$(MAKE) --no-print-directory $(VENV)/.installed-runtime
	$(BIN)/drcheck --config drcheck.toml demo

test: system-python
	@scripts/install-system-deps $(TEST_DEBS)
	@$(MAKE) --no-print-directory $(VENV)/.installed-test
	scripts/run-tests

bench: system-python
	@scripts/install-system-deps $(DEMO_DEBS)
	@$(MAKE) --no-print-directory $(VENV)/.installed-test
	$(BIN)/python bench/run_all.py --json var/bench/results.json

run: $(VENV)/.installed-runtime
	$(BIN)/drcheck --config drcheck.toml -v run

# A fresh Debian has python3 but not always its venv module.
system-python:
	@$(PYTHON) -c "import ensurepip, venv" 2>/dev/null || scripts/install-system-deps python3-venv python3-pip

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed-runtime: pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install -q -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $@ $(VENV)/.installed-runtime

clean:
	rm -rf $(VENV) var build *.egg-info .pytest_cache .hypothesis
