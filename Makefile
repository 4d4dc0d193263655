# physnet developer commands. `make demo` and `make test` each work from a clean clone:
# they create .venv on first use, install a CPU build of torch when none is available
# (an existing torch, in .venv or the system site-packages, is kept) and install physnet
# with its dev and docs extras.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_VERSION ?= 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
PYTEST_ARGS ?=
SPHINX_ARGS ?=
DOCS_OUT ?= docs/_build/html

.PHONY: demo test test-slow test-gpu lint format docs docs-gallery bench clean

# torch, first found wins: the one already importable; PyPI's CPU wheel (`+cpu`, where
# the index has it); the PyTorch CPU index; plain `pip install torch` from PyPI (on Linux
# that wheel brings the CUDA libraries, but it runs on the CPU), so a machine that only
# reaches PyPI still gets a working torch.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -c "import torch" 2>/dev/null \
	  || $(PIP) install "torch==$(TORCH_VERSION)+cpu" \
	  || $(PIP) install torch --index-url $(TORCH_CPU_INDEX) \
	  || $(PIP) install torch
	$(PIP) install -e ".[dev,docs]"
	touch $@

demo: $(VENV)/.installed
	mkdir -p out/demo
	$(VENV)/bin/physnet solve --scene sphere --size 64 --method cg,jacobi,ic,amg,dcdm --rtol 1e-6 \
	  --plot out/demo/convergence.png

test: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(PY) -m pytest $(PYTEST_ARGS)
	$(MAKE) docs

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

# The documentation (docs/, Sphinx): every warning is an error. The generated pages (API
# stubs, the gallery) are rebuilt from scratch each time, so a stale page cannot hide a
# warning. The examples are not run here; `make docs-gallery` runs them (minutes).
docs: $(VENV)/.installed
	rm -rf docs/api/generated docs/auto_examples
	$(VENV)/bin/sphinx-build -E -W --keep-going -q -b html $(SPHINX_ARGS) docs $(DOCS_OUT)
	@echo "documentation: $(DOCS_OUT)/index.html"

docs-gallery: $(VENV)/.installed
	rm -rf docs/api/generated docs/auto_examples
	PHYSNET_DOCS_RUN_EXAMPLES=1 $(VENV)/bin/sphinx-build -E -W --keep-going -q -b html \
	  $(SPHINX_ARGS) docs $(DOCS_OUT)
	@echo "documentation with the examples run: $(DOCS_OUT)/index.html"

bench: $(VENV)/.installed
	$(PY) benchmarks/poisson.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
	rm -rf docs/_build docs/api/generated docs/auto_examples docs/sg_execution_times.rst
