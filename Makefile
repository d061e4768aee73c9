# Two commands on a fresh clone (Python 3.11+ is all it needs):
#   make demo   train the example with the default trackers and show where the run is
#   make test   lint, type-check and run the whole test suite
# (make docs serves the documentation site at http://127.0.0.1:8000; make bench runs the benchmarks)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench docs clean

$(INSTALLED): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "jaxtrack needs Python 3.11 or newer; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(INSTALLED)
	$(BIN)/python examples/01_quickstart.py

bench: $(INSTALLED)
	$(BIN)/python bench/bench_logging.py
	$(BIN)/python bench/bench_store.py
	$(BIN)/python bench/bench_memory.py

docs: $(INSTALLED)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

lint: $(INSTALLED)
	$(BIN)/ruff check conftest.py src tests examples bench
	$(BIN)/ruff format --check conftest.py src tests examples bench

typecheck: $(INSTALLED)
	$(BIN)/mypy

unit: $(INSTALLED)
	$(BIN)/python -m pytest

test: lint typecheck unit

clean:
	rm -rf $(VENV) runs site build *.egg-info src/*.egg-info
