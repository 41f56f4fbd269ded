# Two entry points, both self-contained on a fresh machine:
#   make demo   — how much compute TST saves at one shape, and where it stands against the frontier (CPU, <= 10 min)
#   make test   — the test suite
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(PY) -m pip
# Pinned first: a bare torch requirement on a machine without torch pulls several GB of CUDA wheels.
TORCH  ?= torch==2.13.0

.PHONY: venv test demo bench clean

# The demo needs only the trainer; the tests also need the integrations' frameworks.
$(VENV)/.torch:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	touch $@

$(VENV)/.train: $(VENV)/.torch pyproject.toml
	$(PIP) install -q -e ".[train]"
	touch $@

$(VENV)/.all: $(VENV)/.train
	$(PIP) install -q -e ".[train,hf,data,titan,dev]"
	touch $@

venv: $(VENV)/.all

test: $(VENV)/.all
	$(PY) -m pytest -q

demo: $(VENV)/.train
	$(VENV)/bin/tst demo --out runs/demo

bench: $(VENV)/.all
	$(PY) benchmarks/bench_loss.py

clean:
	rm -rf $(VENV) runs build src/*.egg-info
