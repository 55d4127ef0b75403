# Two commands set everything up on a fresh machine:
#   make train   creates .venv if missing, installs layerwise, trains the built-in default job
#   make test    creates .venv (with dev extras) if missing, runs the whole test suite
#   make bench   also creates one virtual environment per peer framework under .bench-venvs/ for
#                benchmarks/peers.py and benchmarks/recipes.py (never needed to use or test layerwise)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# Without a GPU take PyTorch's CPU build (a plain `torch` requirement pulls a multi-GB CUDA
# build on Linux). TORCH_CPU names the release to try first; `torch>=2.6` is the fallback.
TORCH_CPU ?= torch==2.13.0
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)

.PHONY: train test install bench clean

# $(call torch_cpu,PYTHON): install PyTorch's CPU build into PYTHON's environment unless it has a
# torch already or the machine has a GPU
define torch_cpu
	@if [ -z "$(HAS_GPU)" ] && ! $(1) -c "import torch" 2>/dev/null; then \
		$(1) -m pip install -q "$(TORCH_CPU)" || $(1) -m pip install -q "torch>=2.6" \
			--index-url https://download.pytorch.org/whl/cpu; \
	fi
endef

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(call torch_cpu,$(PY))
	$(PIP) install -q -e ".[dev]"
	touch $@

# The peers of benchmarks/peers.py, each in its own environment (their torchvision pins may
# differ): the same torch as .venv, then the peer's pinned requirements with torch held at that
# version (a peer that wants another torch fails here rather than being measured on it).
BENCH_VENVS := .bench-venvs
BENCH_PEERS := lightning keras fastai

$(BENCH_VENVS)/%/.installed: benchmarks/peers/%.txt
	test -x $(BENCH_VENVS)/$*/bin/python || $(PYTHON) -m venv $(BENCH_VENVS)/$*
	$(BENCH_VENVS)/$*/bin/python -m pip install -q --upgrade pip
	$(call torch_cpu,$(BENCH_VENVS)/$*/bin/python)
	$(BENCH_VENVS)/$*/bin/python -m pip install -q -r $< \
		"torch==$$($(BENCH_VENVS)/$*/bin/python -c 'import torch; print(torch.__version__)' 2>/dev/null)"
	touch $@

bench: install $(foreach p,$(BENCH_PEERS),$(BENCH_VENVS)/$(p)/.installed)

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

# Two pytest-xdist workers (TEST_WORKERS=0 runs them in one process); a test file stays on one worker, so its
# module fixtures (trained runs shared by its tests) are built once.
TEST_WORKERS ?= 2
# The report's browser test drives the system's Chromium with Playwright (no browser download): as root with
# apt-get, Debian's chromium is installed when missing; elsewhere, or if that fails, the test skips and says why.
test: install $(VENV)/.hub-tests
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		(apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1; } || \
		echo "chromium not installed: the report's browser test will skip"
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile tests

clean:
	rm -rf $(VENV) $(BENCH_VENVS) runs .pytest_cache
