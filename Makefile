# One entry point for people and CI. Every target installs what it needs first.
VENV ?= .venv
PY := $(VENV)/bin/python
MODEL_REPO ?= model_repo
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: setup run build test stress bench gpu-check clean openapi schema

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e '.[tool,service,dev]'
	touch $@

build: setup
	$(VENV)/bin/sinder build --demo --model-repo $(MODEL_REPO)

run: build
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
