# make reproduce  : set up, run every notebook on the embedded synthetic data, build the book
#                   (DATASETS=a,b PROFILE=p ARGS="--no-train" pass on to dsm reproduce)
# make test       : set up, lint, run the tests (what CI runs; includes the slow notebook/book and DDP tests)
# make test-fast  : the tests not marked slow
VENV ?= .venv
PY := $(VENV)/bin/python
DATASETS ?= synthetic
PROFILE ?= quick
ARGS ?=

.PHONY: install test test-fast lint reproduce book clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -e ".[all]"
	touch $@

install: $(VENV)/.installed

lint: install
	$(PY) -m ruff check dsm tests data_scripts benchmarks notebooks
	$(PY) -m ruff format --check dsm tests data_scripts benchmarks notebooks

test: lint
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

reproduce: install
	$(VENV)/bin/dsm reproduce --datasets $(DATASETS) --profile $(PROFILE) $(ARGS)

book: install
	$(VENV)/bin/jupyter-book build book -W -n --keep-going

clean:
	rm -rf _build .pytest_cache
