# CPU development set-up. torch is installed first from its CPU build and kept there by
# constraints/cpu.txt for every later pip call (otherwise pip may pull a multi-GB CUDA build).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.unifier-installed

.PHONY: setup setup-gpu demo lint test test-fast mutation gpu-check bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints/cpu.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -c constraints/cpu.txt -e ".[all]"
	# PyPI's torchvision does not load beside torch 2.13.0+cpu and breaks `import unsloth`; nothing here needs it
	$(PIP) uninstall --quiet -y torchvision
	# llama.cpp's GGUF converter into $(VENV)/share/llama.cpp, and its Python bindings (a CPU build, for the tests)
	$(PY) -m unifier.llama_cpp --bindings --constraints constraints/cpu.txt
	touch $(STAMP)

# GPU set-up (Linux, an NVIDIA driver for CUDA 12): PyPI's torch wheel is the CUDA build; then every backend,
# DeepSpeed and Liger (the gpu extra), and flash-attn where it builds (data.packing on ms-swift needs it)
setup-gpu:
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PY) -c "import torch; assert torch.version.cuda, 'torch is a CPU build: a GPU machine needs the CUDA wheel'"
	$(PIP) install --quiet -e ".[all,gpu]"
	$(PIP) install --quiet --no-build-isolation flash-attn || echo "flash-attn did not build here: data.packing on ms-swift needs it (everything else runs)"
	$(PY) -m unifier.llama_cpp
	touch $(STAMP)

demo: setup
	$(VENV)/bin/unify demo

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# two pytest-xdist workers (2 cores); every scenario is trained once per session and shared (tests/conftest.py)
PYTEST := $(VENV)/bin/python -m pytest -q -p no:cacheprovider -n 2 --durations=15

test: lint
	$(PYTEST)

# nothing that trains: a test without the slow mark that starts a trainer fails (tests/tier_guard/)
test-fast: lint
	$(PYTEST) -m "not slow"

mutation: setup
	$(VENV)/bin/python tests/mutation/run_mutation.py

gpu-check: setup
	bash tests/gpu/run_gpu_checks.sh

# the CPU benchmarks (README.md, "Benchmarks"): about 19 minutes on 2 cores; rewrites bench/RESULTS.md
bench: setup
	$(PY) -m bench

clean:
	rm -rf runs unsloth_compiled_cache .pytest_cache
