# BloodNet Screening: `make demo` and `make test` are the two commands a new user needs.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# The CPU build of PyTorch. Machines that carry the wheel locally (find-links) need no index;
# elsewhere pip reads PyTorch's CPU index. CUDA is a choice of index, not an extra: `make install-gpu`.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
EXTRAS ?= test,bench
STAMP := $(VENV)/.installed

.PHONY: install install-gpu test test-fast demo bench generalisation lint clean-demo

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade "pip>=24" 
	if $(PIP) download -q --no-deps -d /tmp/bloodnet-torch-probe "torch==2.13.0+cpu" >/dev/null 2>&1; then \
	  $(PIP) install -q -c constraints.txt -e ".[$(EXTRAS)]"; \
	else \
	  $(PIP) install -q --extra-index-url $(TORCH_INDEX) -c constraints.txt -e ".[$(EXTRAS)]"; \
	fi
	touch $(STAMP)

install: $(STAMP)

# The same pins, except torch, which comes from PyTorch's CUDA index with the same version.
CUDA_INDEX ?= https://download.pytorch.org/whl/cu128
install-gpu:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	grep -v '^torch==' constraints.txt > $(VENV)/constraints-cuda.txt
	$(PIP) install -q --extra-index-url $(CUDA_INDEX) -c $(VENV)/constraints-cuda.txt \
	  "torch==$$(sed -n 's/^torch==\([0-9.]*\).*/\1/p' constraints.txt)" -e ".[$(EXTRAS)]"
	touch $(STAMP)

test: install
	bash scripts/test-prereqs.sh
	$(VENV)/bin/pytest -q -p no:cacheprovider

# The unit tests (no service, Airflow or browser; not slow): under 2 minutes, while you work.
test-fast: install
	$(VENV)/bin/pytest -q -p no:cacheprovider -m unit

demo: install
	$(VENV)/bin/bloodnet demo

bench: install
	$(PY) bench/run_all.py

# The shipped model on 100 studies of the independent hold-out phantom (about 5 min on 2 cores).
generalisation: install
	$(PY) bench/bench_generalisation.py --studies 100 --seed 7 --workers 2

lint: install
	$(VENV)/bin/ruff check bloodnet_ops dags plugins tests bench
