# Two commands on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= $(or $(GATEWAY_CONFIG),config/gateway.yaml)
PYTEST_ARGS ?=
SUDO   := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: serve test demo check-config system-test-deps clean bench bench-peers

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
	@command -v valgrind >/dev/null || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq valgrind; }
	@{ command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; } && [ -e /usr/lib/nginx/modules/ngx_http_echo_module.so ] && \
		command -v wrk >/dev/null || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nginx-light libnginx-mod-http-echo wrk; }

serve: $(VENV)/.run-deps
	$(BIN)/gateway serve --config $(CONFIG)

test: $(VENV)/.test-deps system-test-deps
	$(BIN)/pytest $(PYTEST_ARGS)

check-config: $(VENV)/.run-deps
	$(BIN)/gateway check-config $(CONFIG)

# The gateway in front of the bundled fake OpenAI upstream: try it with no API key. scripts/demo.py
# runs both and stops both (Ctrl-C, `kill` of make or of it, either server exiting). No shell in
# the recipe: make runs python itself, so the SIGTERM make forwards on `kill` reaches it.
# GATEWAY_PORT and DEMO_UPSTREAM_PORT move the ports.
demo: $(VENV)/.run-deps
	@$(BIN)/python scripts/demo.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache

# The benchmark (bench/README.md): the gateway side by side with the upstream alone, a bare
# pass-through and the peers. Results in bench/results/<timestamp>/. Options:
#   SCENARIO=passthrough,slow,streams,exact,openloop,guardrails,semantic,mix,memory,workers,keys,providers,tracing (default all); soak and instructions on their own
#   DURATION=seconds per measurement  LONG=1 (leak check to 1M requests)  PEERS=0  PROFILE=1
SCENARIO ?= all
DURATION ?= 10
LONG     ?= 0
PEERS    ?= 1
PROFILE  ?= 0
BENCH_ARGS ?=

$(VENV)/.bench-deps: pyproject.toml bench/requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -e '.[local]' -r bench/requirements.txt
	@touch $@ $(VENV)/.run-deps

bench: $(VENV)/.bench-deps system-test-deps
	$(BIN)/python bench/run.py --scenario $(SCENARIO) --duration $(DURATION) --peers $(PEERS) \
		$(if $(filter 1,$(LONG)),--long) $(if $(filter 1,$(PROFILE)),--profile) $(BENCH_ARGS)

# LiteLLM proxy (PyPI, own venv) and the Portkey gateway (npm) into bench/.peers/, on request only.
bench-peers: $(VENV)/.bench-deps
	$(BIN)/python bench/peers.py install
