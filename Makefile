# The two commands a new user needs (README.md):  `make serve`  and  `make test`.
# Both create .venv and install everything on first use; later runs reuse it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install serve test lint proto bench clean

$(STAMP): pyproject.toml integrations/langchain/pyproject.toml integrations/llama-index/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# Pinned: plain `torch` would pull a multi-GB CUDA build on a CPU machine.
	$(PY) -m pip install -q torch==2.13.0
	# The gateway, and the LangChain / LlamaIndex integrations with their test tools, in one resolve.
	# langchain-core < 1.7.3: later releases need a certifi newer than some package mirrors serve.
	$(PY) -m pip install -q -e ".[engine,dev]" -e "integrations/langchain[test]" -e "integrations/llama-index[test]" \
		"langchain-core<1.7.3"
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
	$(PY) -m ruff check integrations
	# Each integration has its own pytest config (its pyproject.toml), so each runs on its own.
	$(PY) -m pytest -q integrations/langchain
	$(PY) -m pytest -q integrations/llama-index

proto: $(STAMP)
	$(PY) scripts/gen_proto.py

clean:
	rm -rf $(VENV) build *.egg-info
