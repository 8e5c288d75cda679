# The two commands a newcomer needs are `make book` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CH ?=
PROFILE ?= cpu
NB ?=

.PHONY: setup data book test unit nbval execute bench sync clean help

help:
	@echo "make book     build the HTML book from the committed outputs into _build/html"
	@echo "make test     unit tests + nbval over every chapter (COURSE_PROFILE=smoke)"
	@echo "make execute CH=01 PROFILE=cpu   re-execute one chapter in place"
	@echo "make bench    performance benchmarks (prints ratios)"
	@echo "make data     locate, verify (or download) Fashion-MNIST"

$(STAMP): pyproject.toml requirements-lock.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements-lock.txt -e '.[dev]'
	touch $@

setup: $(STAMP)

data: $(STAMP)
	$(PY) -m course_utils.data

book: $(STAMP)
	$(VENV)/bin/jupyter-book build . --warningiserror --keep-going
	@echo "open _build/html/index.html"

unit: $(STAMP) data
	COURSE_PROFILE=smoke $(PY) -m pytest -q tests

nbval: $(STAMP) data
	runs=$$(mktemp -d) && COURSE_PROFILE=smoke COURSE_RUNS_DIR=$$runs $(PY) -m pytest -q --nbval-lax \
		--nbval-sanitize-with tests/sanitize.cfg chapters/; status=$$?; rm -rf $$runs; exit $$status

test: $(STAMP) data
	runs=$$(mktemp -d) && COURSE_PROFILE=smoke COURSE_RUNS_DIR=$$runs $(PY) -m pytest -q tests chapters/ \
		--nbval-lax --nbval-sanitize-with tests/sanitize.cfg; status=$$?; rm -rf $$runs; exit $$status

execute: $(STAMP) data
	@test -n "$(CH)" || (echo "usage: make execute CH=01 [PROFILE=cpu]"; exit 2)
	$(PY) scripts/execute.py $(CH) --profile $(PROFILE)

sync: $(STAMP)
	$(VENV)/bin/jupytext --sync chapters/*.ipynb

bench: $(STAMP) data
	$(PY) benchmarks/run_all.py

clean:
	rm -rf _build
