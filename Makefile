# The two commands of the README: `make demo` and `make test`. Both install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

DEMO_DEBS := restic borgbackup sqlite3 ca-certificates golang-go golang-github-vmware-govmomi-dev dovecot-imapd libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core
TEST_DEBS := $(DEMO_DEBS) chromium poppler-utils

.PHONY: demo test bench run clean system-python

demo: system-python
	@scripts/install-system-deps $(DEMO_DEBS)
	@$(MAKE) --no-print-directory $(VENV)/.installed-runtime var/bin/vcsim
	$(BIN)/drcheck --config drcheck.toml demo

test: system-python
	@scripts/install-system-deps $(TEST_DEBS)
	@$(MAKE) --no-print-directory $(VENV)/.installed-test var/bin/vcsim
	scripts/run-tests

bench: system-python
	@scripts/install-system-deps $(DEMO_DEBS)
	@$(MAKE) --no-print-directory $(VENV)/.installed-test var/bin/vcsim
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

# The vCenter simulator (tests/peers/vcsim): Debian ships govmomi's simulator library but no
# program, so the project builds its own, offline, in GOPATH mode (drcheck/lab_vcsim.py does
# the same when a test finds the binary missing or stale).
VCSIM_SOURCES := $(wildcard tests/peers/vcsim/*.go)
var/bin/vcsim: $(VCSIM_SOURCES)
	@mkdir -p var/bin var/gopath
	GO111MODULE=off GOFLAGS= GOPROXY=off GOPATH=$(CURDIR)/var/gopath:/usr/share/gocode \
		go build -o $@.tmp ./tests/peers/vcsim
	@mv $@.tmp $@

clean:
	rm -rf $(VENV) var build *.egg-info .pytest_cache .hypothesis
