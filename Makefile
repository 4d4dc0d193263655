# physnet developer commands. `make demo` and `make test` each work from a clean clone:
# they create .venv on first use, install a CPU build of torch when none is available
# (an existing torch, in .venv or the system site-packages, is kept) and install physnet.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_VERSION ?= 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
PYTEST_ARGS ?=

.PHONY: demo test test-slow test-gpu lint format bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -c "import torch" 2>/dev/null \
	  || $(PIP) install "torch==$(TORCH_VERSION)+cpu" \
	  || $(PIP) install torch --index-url $(TORCH_CPU_INDEX)
	$(PIP) install -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	mkdir -p out/demo
	$(VENV)/bin/physnet solve --scene sphere --size 64 --method cg,jacobi,ic,amg,dcdm --rtol 1e-6 \
	  --plot out/demo/convergence.png

test: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(PY) -m pytest $(PYTEST_ARGS)

test-slow: $(VENV)/.installed
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

test-gpu: $(VENV)/.installed
	$(PY) -m pytest -m gpu $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.installed
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(VENV)/.installed
	$(PY) benchmarks/poisson.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
