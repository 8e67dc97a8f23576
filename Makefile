# The two commands a new user needs (README.md):  `make serve`  and  `make test`.
# Both create .venv and install everything on first use; later runs reuse it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install serve test lint proto bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# Pinned: plain `torch` would pull a multi-GB CUDA build on a CPU machine.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[engine,dev]"
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/trt-gateway serve $(ARGS)

lint: $(STAMP)
	$(PY) scripts/gen_proto.py --check
	$(PY) -m ruff check trt_gateway tests scripts benchmarks
	$(PY) -m mypy

test: lint
	$(PY) -m pytest -q $(ARGS)

proto: $(STAMP)
	$(PY) scripts/gen_proto.py

clean:
	rm -rf $(VENV) build *.egg-info
