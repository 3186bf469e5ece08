# Two commands on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= $(or $(GATEWAY_CONFIG),config/gateway.yaml)
PYTEST_ARGS ?=
SUDO   := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: serve test demo check-config system-test-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.run-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	@touch $@

$(VENV)/.test-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test,local]'
	@touch $@ $(VENV)/.run-deps

# Debian packages the tests talk to for real.
system-test-deps:
	@command -v redis-server >/dev/null || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq redis-server; }
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends prometheus; }

serve: $(VENV)/.run-deps
	$(BIN)/gateway serve --config $(CONFIG)

test: $(VENV)/.test-deps system-test-deps
	$(BIN)/pytest $(PYTEST_ARGS)

check-config: $(VENV)/.run-deps
	$(BIN)/gateway check-config $(CONFIG)

# The gateway in front of the bundled fake OpenAI upstream: try it with no API key.
demo: $(VENV)/.run-deps
	@$(BIN)/python tests/fake_upstream.py --port 9999 & upstream=$$!; \
	trap "kill $$upstream 2>/dev/null" EXIT INT TERM; \
	$(BIN)/gateway serve --config config/examples/demo.yaml

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
