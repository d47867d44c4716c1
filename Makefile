# The README's two commands: `make run` and `make test`.  Both install into .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test bench package clean

$(STAMP): requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Keyturn needs Python 3.11 (set PYTHON=...)")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

## make run: the API on http://127.0.0.1:8000 (PORT=...) with an embedded DynamoDB; Ctrl-C stops it
run: $(STAMP)
	$(PY) -m tooling.localrun

## make test: lint and type checks, then the whole suite (unit, API, end-to-end on a real local stack)
test: $(STAMP)
	$(VENV)/bin/ruff check app.py chalicelib tooling tests benchmarks
	$(PY) -m mypy
	$(PY) -m pytest

## make bench: every figure against its target; stdout is the table and a verdict, logs go to build/bench.log
## (writes benchmarks/results.json and docs/benchmarks.md; installing on first use logs to build/install.log)
bench:
	@mkdir -p build && $(MAKE) --no-print-directory -s install > build/install.log
	@$(PY) -m benchmarks

## make package STAGE=dev: SAM template + precompiled deployment.zip in build/STAGE, linted; no AWS configuration needed
package: $(STAMP)
	@test -n "$(STAGE)" || { echo "usage: make package STAGE=dev|prod"; exit 2; }
	$(PY) -m tooling.package --stage $(STAGE)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .mypy_cache .ruff_cache build .chalice/deployments
