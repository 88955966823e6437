# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# torch is pinned through constraints.txt: any other torch request pulls a multi-GB CUDA build.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tjepa-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export DVC_NO_ANALYTICS := 1

.PHONY: venv test demo bench bench-quick reliability lint clean

$(STAMP): pyproject.toml setup.py constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

test: venv
	$(PY) -m pytest -q -p no:cacheprovider

# The whole pipeline on the embedded default (params.yaml): synth -> models -> cache -> train x3 -> eval -> compare.
demo: venv
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/dvc repro
	@cat reports/compare.md

bench: venv
	$(PY) -m benchmarks

bench-quick: venv
	$(PY) -m benchmarks --quick --out BENCHMARKS-quick.md

reliability: venv
	$(PY) -m pytest -q -p no:cacheprovider -m reliability tests/reliability

# ruff, then the import boundaries (contracts in pyproject.toml; make test checks them too).
lint: venv
	$(VENV)/bin/ruff check .
	$(PY) scripts/lint_imports.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
