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

.PHONY: setup test onnx android ios tensorrt all bench clean help

help:
	@echo "make all    - set up, then convert the default model ($(MODEL)) to every target this machine can build"
	@echo "make test   - set up, then run the test suite"
	@echo "make onnx | android | ios | tensorrt | bench | clean | setup   (variables: MODEL= WEIGHTS= CONFIG= WIDTH= RESOLUTION= THREADS=)"

setup: $(STAMP)

# Reinstall only when the lock file or the project metadata changed.
$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

test: setup
	$(PY) -m pytest -q

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
all: setup
	$(CLI) run $(RUN_ARGS) --targets onnx,tflite,coreml$(if $(HAVE_GPU),$(COMMA)tensorrt) \
		--precisions fp32,fp16,int8

bench: setup
	$(PY) -m pipeline.bench_suite --out artifacts/bench/bench.json

clean:
	rm -rf artifacts/cache artifacts/reports artifacts/onnx artifacts/android artifacts/ios artifacts/tensorrt artifacts/bench
