# The two commands a newcomer needs are `make book` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CH ?=
PROFILE ?= cpu
NB ?=
DIR ?=
GRADE_OPTS ?=

.PHONY: setup data book reproduction test unit nbval execute bench sync clean help student grade test-book dry-run gpu-check

help:
	@echo "make book     build the HTML book from the committed outputs into _build/html"
	@echo "make test     unit tests + nbval over every chapter (COURSE_PROFILE=smoke)"
	@echo "make execute CH=01 PROFILE=cpu   re-execute one chapter in place"
	@echo "make bench    performance benchmarks (prints ratios)"
	@echo "make data     locate, verify (or download) Fashion-MNIST"
	@echo "make student  student copies of the chapters (stubs for solutions, no outputs) in _build/student"
	@echo "make grade NB=path.ipynb | DIR=submissions/   check notebooks with nbval, in parallel, with limits"
	@echo "make test-book   build the book and test every page in headless Chromium"
	@echo "make dry-run  every chapter under the gpu profile's configuration, a few steps per training, on the CPU"
	@echo "make gpu-check   the same dry run on a CUDA GPU: images/s, peak memory, projected full time"

$(STAMP): pyproject.toml requirements-lock.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements-lock.txt -e '.[dev]'
	touch $@

setup: $(STAMP)

data: $(STAMP)
	$(PY) -m course_utils.data

reproduction: $(STAMP)
	$(PY) -m course_utils.reproduction

book: $(STAMP) reproduction
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
	$(PY) -m course_utils.reproduction

sync: $(STAMP)
	$(VENV)/bin/jupytext --sync chapters/*.ipynb

bench: $(STAMP) data
	$(PY) benchmarks/run_all.py

student: $(STAMP)
	$(PY) scripts/make_student.py

grade: $(STAMP) data
	@test -n "$(NB)$(DIR)" || (echo "usage: make grade NB=path/to/notebook.ipynb | DIR=submissions/ [GRADE_OPTS='--timeout 900']"; exit 2)
	$(PY) scripts/grade.py $(NB) $(DIR) $(GRADE_OPTS)

test-book: book
	$(PY) scripts/test_book.py

dry-run: $(STAMP) data
	$(PY) scripts/dry_run.py --profile gpu --jobs 2

gpu-check: $(STAMP) data
	timeout 600 $(PY) scripts/dry_run.py --profile gpu --device cuda --steps 5

clean:
	rm -rf _build
