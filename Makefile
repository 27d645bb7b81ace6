# One entry point for people and CI. Every target installs what it needs first.
VENV ?= .venv
PY := $(VENV)/bin/python
MODEL_REPO ?= model_repo
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: setup run build test stress bench gpu-check clean openapi schema

setup: $(VENV)/.installed

# pip runs without -q: the first install takes minutes, and its "Collecting ..." lines show it moving.
$(VENV)/.installed: pyproject.toml constraints.txt
	@echo "==> setup 1/2: creating $(VENV)"
	python3 -m venv $(VENV)
	@echo "==> setup 2/2: installing torch, onnxruntime, FastAPI and the rest into $(VENV) (the first time: several minutes)"
	$(PY) -m pip install --progress-bar on -c constraints.txt -e '.[tool,service,dev]'
	touch $@

build: setup
	@echo "==> build: the demo models (synthetic weights) into $(MODEL_REPO)/ (reused when already there)"
	$(VENV)/bin/sinder build --demo --model-repo $(MODEL_REPO)

run: build
	@echo "==> run: serving on http://$(HOST):$(PORT) (ready at /health/ready; Ctrl-C stops)"
	$(PY) -m service --model-repo $(MODEL_REPO) --host $(HOST) --port $(PORT)

test: setup
	$(PY) -m pytest -q -m "not slow"

stress: setup
	$(PY) -m pytest -q -m slow

bench: setup
	$(PY) -m bench

GPU_PY ?= python3
gpu-check:
	$(GPU_PY) -m bench.gpu_check --out docs/gpu_check.json --report docs/benchmarks.md

clean:
	rm -rf $(VENV) .pytest_cache

openapi: setup
	$(PY) -m service.openapi > openapi.yaml

schema: setup
	$(PY) -m contract.manifest > contract/manifest.schema.json
