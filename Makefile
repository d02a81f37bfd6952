# Two commands do all the set-up on a fresh machine with Python 3.11 and make: `make demo`, `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# checkov lives in its own virtual environment: it pins an old boto3 and ships a `hcl2` that clashes with
# python-hcl2. Pinned so a new release cannot fail the build unannounced; bump it on purpose.
CHECKOV_VERSION := 3.3.30
CHECKOV_VENV    := .venv-checkov
CHECKOV_STAMP   := $(CHECKOV_VENV)/.installed

.PHONY: demo test lint bench bench-scale clean checkov terraform-policies

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/spendwatch demo

# tests/deploy/test_checkov.py runs checkov from $(CHECKOV_VENV) (set up once, about 30 s; a scan takes 8-25 s).
test: $(STAMP) $(CHECKOV_STAMP)
	$(BIN)/python -m pytest -q -n 2 -p no:cacheprovider

$(CHECKOV_STAMP):
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install --quiet 'checkov==$(CHECKOV_VERSION)'
	touch $(CHECKOV_STAMP)

checkov: $(CHECKOV_STAMP)
	$(CHECKOV_VENV)/bin/checkov -d deploy/terraform --config-file deploy/terraform/.checkov.yaml --quiet --compact

# Rewrites deploy/terraform/{aws/policies,gcp/roles,azure/roles} from the code's declarations; commit the result.
terraform-policies: $(STAMP)
	$(BIN)/python deploy/terraform/gen_policies.py

lint: $(STAMP)
	$(BIN)/ruff check spendwatch connectors models tests bench
	$(BIN)/mypy -p spendwatch

bench: $(STAMP)
	$(BIN)/python bench/scan_org.py

# 5 million flow records by default; RECORDS=50000000 for the big run (generated once under tmp/bench).
RECORDS ?= 5000000
bench-scale: $(STAMP)
	$(BIN)/python bench/flows_scale.py --records $(RECORDS)

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) build *.egg-info
