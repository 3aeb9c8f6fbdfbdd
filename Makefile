# One entry point for users and CI. `make demo` and `make test` are the two commands to know.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SHARED ?= ../shared
FIXTURE ?= $(SHARED)/reference/teran-tiny $(SHARED)/reference/teran-tiny-shared
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install lock demo serve demo-model up down test fuzz lint fmt refcheck protos bench bench-scorer bench-quality bench-services bench-upgrade bench-scale bench-load bench-gateway clean

install: $(STAMP)

# torch first and pinned: any other torch spec resolves to a multi-GB CUDA build. Every other
# version, indirect ones included, comes from requirements.lock (`make lock` rewrites it).
$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c requirements.lock -e '.[dev]'
	touch $(STAMP)

# the installed set, exactly, as constraints for the next install (torch's local +cpu label
# dropped: the same release, whichever build the machine has)
lock: $(STAMP)
	$(PY) -m pip freeze --exclude-editable | sed 's/+cpu$$//' > requirements.lock

DEMO_MODEL ?= models/teran-synthetic-tiny

demo: $(STAMP)
	$(PY) -m teran_dev.demo --checkpoint $(DEMO_MODEL)

# the single-process platform with the demo collection, searched from a browser (URL printed)
SERVE_PORT ?= 8080
serve: $(STAMP)
	$(PY) -m teran_dev.serve --checkpoint $(DEMO_MODEL) --port $(SERVE_PORT)

# The demo model: teran-minilm-tiny's CPU recipe on synthetic scenes, exactly the MrSw run of
# `make bench-quality` (frozen MiniLM; only its own weights are stored).
demo-model: $(STAMP)
	$(PY) -m trainer.main --model teran-minilm-tiny --measure MrSw --dataset synthetic \
		--train-images 2000 --val-images 500 --data-seed 0 --seed 0 --time-budget 12 \
		--val-every-steps 156 --no-progress --output runs/demo-model
	rm -rf $(DEMO_MODEL) && cp -r runs/demo-model/best $(DEMO_MODEL)

# The microservice topology on this machine: tritonserver + three services as processes.
up: $(STAMP)
	$(PY) -m teran_dev.local up --checkpoint $(DEMO_MODEL)

down: $(STAMP)
	$(PY) -m teran_dev.local down

# system packages first (Prometheus, via apt; a clear message where that needs privileges)
test: $(STAMP)
	bash tools/system-packages.sh
	$(PY) -m pytest

# property-based fuzzing of every public RPC against a running server; `make test` runs 20
# examples a property, this many more (FUZZ_EXAMPLES)
FUZZ_EXAMPLES ?= 500
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q tests/services/test_fuzz.py

# the unit tests that start no server: the library, the contracts, the chart (about a minute)
FAST_TESTS := tests/teran tests/test_layering.py tests/test_protos.py tests/services/test_config.py \
	tests/helm/test_chart.py tests/helm/test_topology.py tests/helm/test_upgrade_job.py \
	tests/helm/test_images.py
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(FAST_TESTS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

refcheck: $(STAMP)
	$(PY) -m trainer.refcheck $(FIXTURE)

# gRPC contracts -> teran_protos/v1/*_pb2*.py (committed; tests check they are up to date)
protos: $(STAMP)
	$(PY) -m grpc_tools.protoc -I protos --python_out=. --pyi_out=. --grpc_python_out=. protos/teran_protos/v1/*.proto

bench: bench-scorer bench-quality bench-services bench-upgrade bench-scale bench-load bench-gateway

bench-scorer: $(STAMP)
	$(PY) -m benchmarks.bench_scorer --out benchmarks/results/scorer.json

# every variant, 12 training minutes each (about 55 min in all); VARIANTS=MrSw runs one and merges
VARIANTS ?= MrSw,MwSr,symm,global
bench-quality: $(STAMP)
	$(PY) -m benchmarks.bench_quality --variants $(VARIANTS) --out benchmarks/results/quality.json

bench-services: $(STAMP)
	$(PY) -m benchmarks.bench_services --checkpoint $(DEMO_MODEL) --out benchmarks/results/services.json

# 10k and 100k images (about an hour); SIZES=1000000 adds the 1M point to the same file
SIZES ?= 10000,100000
bench-scale: $(STAMP)
	$(PY) -m benchmarks.bench_scale --sizes $(SIZES) --merge --out benchmarks/results/scale.json

bench-upgrade: $(STAMP)
	$(PY) -m benchmarks.bench_upgrade --checkpoint $(DEMO_MODEL) --out benchmarks/results/upgrade.json

# ten minutes of eight search clients, one ingest stream and periodic deletes, keys on
bench-load: $(STAMP)
	$(PY) -m benchmarks.bench_load --checkpoint $(DEMO_MODEL) --out benchmarks/results/load.json

# Search through the HTTP/JSON gateway beside gRPC, 1 and 8 clients (about three minutes)
bench-gateway: $(STAMP)
	$(PY) -m benchmarks.bench_gateway --checkpoint $(DEMO_MODEL) --out benchmarks/results/gateway.json

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info
