# The two commands a new user needs (README.md):  `make serve`  and  `make test`.
# Both create .venv and install everything on first use; later runs reuse it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install serve test test-lint test-main test-langchain test-llama-index lint proto bench clean

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

# Every suite runs, whatever an earlier one did; the target fails at the end, naming the suites that failed.
SUITES := lint main langchain llama-index

test: $(STAMP)
	@failed=""; \
	for suite in $(SUITES); do \
		echo "== make test: $$suite"; \
		$(MAKE) --no-print-directory test-$$suite || failed="$$failed $$suite"; \
	done; \
	if [ -n "$$failed" ]; then echo "== make test: FAILED:$$failed"; exit 1; fi; \
	echo "== make test: all suites passed ($(SUITES))"

test-lint: lint
	$(PY) -m ruff check integrations

test-main: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

# Each integration has its own pytest config (its pyproject.toml), so each runs on its own.
test-langchain: $(STAMP)
	$(PY) -m pytest -q integrations/langchain

test-llama-index: $(STAMP)
	$(PY) -m pytest -q integrations/llama-index

proto: $(STAMP)
	$(PY) scripts/gen_proto.py

clean:
	rm -rf $(VENV) build *.egg-info
