# Two commands set everything up on a fresh machine:
#   make train   creates .venv if missing, installs layerwise, trains the built-in default job
#   make test    creates .venv (with dev extras) if missing, runs the whole test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# Without a GPU take PyTorch's CPU build (a plain `torch` requirement pulls a multi-GB CUDA
# build on Linux). TORCH_CPU names the release to try first; `torch>=2.6` is the fallback.
TORCH_CPU ?= torch==2.13.0
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)

.PHONY: train test install clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	@if [ -z "$(HAS_GPU)" ] && ! $(PY) -c "import torch" 2>/dev/null; then \
		$(PIP) install -q "$(TORCH_CPU)" || $(PIP) install -q "torch>=2.6" \
			--index-url https://download.pytorch.org/whl/cpu; \
	fi
	$(PIP) install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

train: install
	$(VENV)/bin/layerwise train

# torchvision and timm for models/hub.py's equal-logits tests, without their dependencies (pip would
# replace the CPU build of torch): the torchvision release built for the installed torch, where known.
# Elsewhere those tests skip and say why.
$(VENV)/.hub-tests: $(VENV)/.installed
	@tv=$$($(PY) -c "import torch; print({'2.13': '0.28.0'}.get('.'.join(torch.__version__.split('.')[:2]), ''))"); \
	if [ -n "$$tv" ]; then $(PIP) install -q --no-deps "torchvision==$$tv" "timm==1.0.31"; fi
	touch $@

test: install $(VENV)/.hub-tests
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) runs .pytest_cache
