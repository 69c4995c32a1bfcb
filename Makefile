# Quick start: `make demo` and `make test` work on a fresh machine with Python 3.11 and make.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# Prebuilt wheels (llama-cpp-python for CPU) beside the checkout, used when the folder exists.
WHEELS := ../shared/wheels
FIND_LINKS := $(if $(wildcard $(WHEELS)),--find-links $(WHEELS),)

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install --quiet $(FIND_LINKS) -e '.[test]'
	# megatron-core declares no CPU-only dependency set: install it alone, beside the CPU torch above
	$(BIN)/python -m pip install --quiet --no-deps megatron-core==0.16.1
	touch $@

demo: $(VENV)/.installed
	$(BIN)/longtrove demo

test: $(VENV)/.installed-test
	$(BIN)/ruff check pipelines tokenization packing longctx tests bench
	$(BIN)/python -m pytest tests

lint: $(VENV)/.installed-test
	$(BIN)/ruff check pipelines tokenization packing longctx tests bench

bench: $(VENV)/.installed-test
	@echo "Benchmarks read ../shared/bench; run one with e.g. $(BIN)/python bench/shards.py"

clean:
	rm -rf $(VENV) build *.egg-info
