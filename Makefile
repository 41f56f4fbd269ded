# Two entry points, both self-contained on a fresh machine:
#   make demo   — the equal-FLOPs baseline-vs-TST experiment on the bundled corpus (CPU, <= 10 min)
#   make test   — the test suite
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(PY) -m pip
# Pinned first: a bare torch requirement on a machine without torch pulls several GB of CUDA wheels.
TORCH  ?= torch==2.13.0

.PHONY: venv test demo bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[train,hf,data,titan,dev]"
	touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m pytest -q

demo: venv
	$(VENV)/bin/tst demo --out runs/demo

bench: venv
	$(PY) benchmarks/bench_loss.py

clean:
	rm -rf $(VENV) runs build src/*.egg-info
