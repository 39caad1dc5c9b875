# dogbreed — every target sets up what it needs (the venv first).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
DOGBREED := $(VENV)/bin/dogbreed
WORK ?= .work
STAMP := $(VENV)/.installed
# the image tag: the commit (plus -dirty-<hash> for uncommitted changes); one definition, in scripts/build_images.sh
REVISION ?= $(shell scripts/build_images.sh --revision)
# DEFAULT_BASE_IMAGE and the torch, torchvision and Python it holds (base-local builds its twin)
include docker/base/versions.env
BASE_IMAGE ?= $(DEFAULT_BASE_IMAGE)
CPU_BASE_IMAGE ?= $(DEFAULT_CPU_BASE_IMAGE)
LOCAL_BASE ?= dogbreed-base:local
LOCAL_CPU_BASE ?= dogbreed-base-cpu:local
EXTRA_CA ?=
PYTEST_ARGS ?=

.PHONY: torchserve-peer install demo test test-fast lint build push base-local bench bench-train bench-serve bench-tune bench-accuracy bench-transform test-reliability clean

install: $(STAMP)
	@$(PY) scripts/patch_mms_frontend.py || echo "WARNING: multi-model-server's frontend is unpatched here (no JDK):" \
		"a response frame split across two reads can kill a worker (500 Worker died). Install a JDK and rerun make install."

$(STAMP): requirements/*.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip 'setuptools<82' wheel
	$(PIP) install -q -r requirements/dev.txt
	$(PIP) install -q --no-deps -e .
	touch $(STAMP)

## demo: make the bundled synthetic sample, train on it through the image's train entry, print the metrics
demo: install
	rm -rf $(WORK)/demo
	$(DOGBREED) make-sample $(WORK)/demo/sample
	$(DOGBREED) local-train --data $(WORK)/demo/sample --work-dir $(WORK)/demo/run \
		--model resnet18 --pretrained-weights none --input-size 96 --epochs 6 --batch-size 25 --lr 0.003 --patience 0
	@echo "--- metrics ($(WORK)/demo/run/opt_ml/output/data/metrics.json):"
	@$(PY) -c "import json;m=json.load(open('$(WORK)/demo/run/opt_ml/output/data/metrics.json'));print('test_acc=%.3f test_loss=%.4f best_epoch=%d' % (m['test_acc'], m['test_loss'], m['best_epoch']))"
	@echo "model: $(WORK)/demo/run/model.tar.gz  (serve it: $(DOGBREED) local-serve --model $(WORK)/demo/run/model.tar.gz)"

## test: the whole suite (docker tests run wherever a daemon answers; CI makes them mandatory)
test: install
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -m "not slow and not docker" $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/bandit -q -c pyproject.toml -r src

## images
## base-local: a twin of DEFAULT_BASE_IMAGE (same torch, torchvision, Python minor) from Debian's packages and PyPI,
## and one of DEFAULT_CPU_BASE_IMAGE (slim Python, same Python minor); then: make build BASE_IMAGE=$(LOCAL_BASE) CPU_BASE_IMAGE=$(LOCAL_CPU_BASE)
base-local:
	scripts/build_local_base.sh $(LOCAL_BASE) "$(EXTRA_CA)"
	scripts/build_local_base.sh --cpu $(LOCAL_CPU_BASE) "$(EXTRA_CA)"

## build: dogbreed-train, dogbreed-serve (CUDA) and dogbreed-serve-cpu (IMAGES="train serve" for some of them)
build:
	BASE_IMAGE=$(BASE_IMAGE) CPU_BASE_IMAGE=$(CPU_BASE_IMAGE) REVISION=$(REVISION) EXTRA_CA="$(EXTRA_CA)" scripts/build_images.sh

push:
	REVISION=$(REVISION) scripts/build_and_push.sh

## benchmarks
PEER_VENV ?= $(WORK)/torchserve-peer

## torchserve-peer: the official AWS PyTorch serving stack in a venv of its own (bench-serve's peer)
torchserve-peer: $(PEER_VENV)/.installed

$(PEER_VENV)/.installed: requirements/torchserve-peer.txt requirements/constraints.txt requirements/torch.txt
	test -x $(PEER_VENV)/bin/python || $(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/pip install -q --upgrade pip 'setuptools<82' wheel
	$(PEER_VENV)/bin/pip install -q -r requirements/torchserve-peer.txt
	touch $@

# Each bench takes its flags from BENCH_<NAME>_ARGS and BENCH_ARGS (all of them): BENCH_ARGS=--quick tries every
# bench out in a few minutes on tiny synthetic data (what tests/integration/test_benches.py runs in CI); a quick run
# writes its table to a temporary file (or --out FILE), never to BENCHMARKS.md.
BENCH_ARGS ?=
QUICK_BENCH = $(findstring --quick,$(BENCH_ARGS) $(BENCH_SERVE_ARGS))

## bench-train: training images/s, ours beside the seed's loop, and the loader alone; BENCH_TRAIN_ARGS=--quick to try it out
bench-train: install
	$(PY) -m benchmarks.train_bench $(BENCH_ARGS) $(BENCH_TRAIN_ARGS)

## bench-serve: ours (multi-model-server and native fronts) beside the TorchServe peer; BENCH_SERVE_ARGS=--quick to try it out (no peer)
bench-serve: install $(if $(QUICK_BENCH),,torchserve-peer)
	$(PY) -m benchmarks.serve_bench $(BENCH_ARGS) $(BENCH_SERVE_ARGS)

## bench-tune: local tuning with and without the feature cache; BENCH_TUNE_ARGS=--quick to try it out
bench-tune: install
	$(PY) -m benchmarks.tune_bench $(BENCH_ARGS) $(BENCH_TUNE_ARGS)

## bench-accuracy: the default recipe's test accuracy beside the linear probe (dogs10, its 5-shot subset, the sample)
bench-accuracy: install
	$(PY) -m benchmarks.accuracy_bench $(BENCH_ARGS) $(BENCH_ACCURACY_ARGS)

## bench-transform: Batch Transform (SDK local mode) beside the real-time endpoint, both serve images' size and cold start; needs docker, the images (make build) and ../shared
bench-transform: install
	$(PY) -m benchmarks.transform_bench $(BENCH_ARGS) $(BENCH_TRANSFORM_ARGS)

## bench: all four (BENCH_ARGS=--quick: all four tried out)
bench: bench-train bench-serve bench-tune bench-accuracy

test-reliability: install
	$(PY) -m pytest -m reliability $(PYTEST_ARGS)

clean:
	rm -rf $(WORK) .pytest_cache build dist src/*.egg-info
