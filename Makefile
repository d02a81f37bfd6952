# Two commands do all the set-up on a fresh machine with Python 3.11 and make: `make demo`, `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/spendwatch demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check spendwatch connectors models tests bench
	$(BIN)/mypy -p spendwatch

bench: $(STAMP)
	$(BIN)/python bench/scan_org.py

clean:
	rm -rf $(VENV) build *.egg-info
