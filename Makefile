# One entry point for people and CI. Every target installs what it needs first.
VENV ?= .venv
PY := $(VENV)/bin/python
MODEL_REPO ?= model_repo
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: help setup run build test stress bench gpu-check clean openapi schema

# `make` alone is `make setup`; `make help` lists the targets from their `##` comments.
setup: $(VENV)/.installed ## create .venv and install the tool, the service and the test tools into it

# pip runs without -q: the first install takes minutes, and its "Collecting ..." lines show it moving.
$(VENV)/.installed: pyproject.toml constraints.txt
	@echo "==> setup 1/2: creating $(VENV)"
	python3 -m venv $(VENV)
	@echo "==> setup 2/2: installing torch, onnxruntime, FastAPI and the rest into $(VENV) (the first time: several minutes)"
	$(PY) -m pip install --progress-bar on -c constraints.txt -e '.[tool,service,dev]'
	touch $@

build: setup ## build the demo models (synthetic weights) into model_repo/ (MODEL_REPO=...), reusing what is there
	@echo "==> build: the demo models (synthetic weights) into $(MODEL_REPO)/ (reused when already there)"
	$(VENV)/bin/sinder build --demo --model-repo $(MODEL_REPO)

run: build ## build, then serve on http://127.0.0.1:8000 (HOST=..., PORT=...)
	@echo "==> run: serving on http://$(HOST):$(PORT) (ready at /health/ready; Ctrl-C stops)"
	$(PY) -m service --model-repo $(MODEL_REPO) --host $(HOST) --port $(PORT)

test: setup ## every fast test (pytest -m "not slow"), as CI runs it
	$(PY) -m pytest -q -m "not slow"

stress: setup ## the slow fault and load tests (pytest -m slow)
	$(PY) -m pytest -q -m slow

bench: setup ## every benchmark; rewrites docs/benchmarks.md and docs/benchmarks.json
	$(PY) -m bench

GPU_PY ?= python3
gpu-check: ## on an NVIDIA machine: the GPU check, into docs/gpu_check.json and docs/benchmarks.md
	$(GPU_PY) -m bench.gpu_check --out docs/gpu_check.json --report docs/benchmarks.md

clean: ## remove .venv and .pytest_cache
	rm -rf $(VENV) .pytest_cache

openapi: setup ## regenerate openapi.yaml from the app
	$(PY) -m service.openapi > openapi.yaml

schema: setup ## regenerate contract/manifest.schema.json (the manifest's JSON Schema)
	$(PY) -m contract.manifest > contract/manifest.schema.json

help: ## this list
	@awk 'BEGIN {FS = ":[^#]*## "} /^[a-z][a-z-]*:.*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
