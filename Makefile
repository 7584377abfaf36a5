# The two set-up commands: `make serve` and `make test`. Everything else is a step of these.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Optional dependency groups; the Dockerfile's build stage sets EXTRAS= (artifacts only).
EXTRAS ?= test,bench

.PHONY: serve test build install tools test-fast soak chaos overload gpu-check clean

serve: build
	$(BIN)/modelrepo serve

test: build tools
	$(BIN)/modelrepo check
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Reliability runs, not part of `make test` (results in perf/results/soak.md, faults.md and overload_*.md).
soak: build
	$(BIN)/python -m modelrepo.perf.soak $(SOAK_ARGS)

chaos: build
	$(BIN)/python -m modelrepo.perf.chaos $(CHAOS_ARGS)

overload: build
	$(BIN)/python -m modelrepo.perf.overload $(OVERLOAD_ARGS)

# Every GPU-only step end to end on a GPU host with Docker (perf/results/gpu-check.md); elsewhere one sentence.
gpu-check: install
	$(BIN)/python -m modelrepo.perf.gpu_check

# Unit tests only (no server start).
test-fast: install
	$(BIN)/python -m pytest -m "not server" $(PYTEST_ARGS)

build: install
	$(BIN)/modelrepo build

install: $(STAMP)

# Linters, promtool, Prometheus, kubectl: pinned in pyproject.toml, installed when missing.
tools: install
	$(BIN)/python -m modelrepo.tools

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".$(if $(EXTRAS),[$(EXTRAS)])"
	$(BIN)/python -m pip install --quiet --no-deps $$($(BIN)/python -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["tool"]["modelrepo"]["install_no_deps"])')
	touch $(STAMP)

clean:
	rm -rf $(VENV) .cache
