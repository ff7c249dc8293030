# Green Channel developer and CI entry points. `make test` is what CI runs (via .ci/run).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST := $(BIN)/pytest -p no:cacheprovider
PYTEST_ARGS ?=

.PHONY: venv lint test test-unit demo bench soak soak-short broker-start broker-stop clean deploy-check

venv: $(STAMP) ## virtualenv with the package (editable) and its dev + simulator extras

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[dev,sim]"
	@touch $@

lint: venv ## ruff lint + format check, mypy strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: venv lint ## the whole suite, real Kafka broker included (started by the tests)
	$(PYTEST) $(PYTEST_ARGS)

test-unit: venv ## offline unit tests only
	$(PYTEST) -m unit $(PYTEST_ARGS)

demo: venv ## broker + bureau simulator + gateway, with sample complaints
	$(BIN)/python -m gateway.dev.demo $(ARGS)

bench: venv ## routing and delivery throughput against the local broker
	$(BIN)/python -m bench.route
	$(BIN)/python -m bench.deliver

SOAK_MINUTES ?= 30
SOAK_ARGS ?=
soak: venv ## chaos soak (opt-in): SOAK_MINUTES (default 30) of faults, then the ledger's verdict into docs/benchmarks.md; needs root + nftables for the network cut
	$(BIN)/python -m bench.soak --minutes $(SOAK_MINUTES) $(SOAK_ARGS)

soak-short: venv ## the short soak as CI runs it (tests/soak; GC_SOAK_MINUTES, default 3)
	$(PYTEST) tests/soak $(PYTEST_ARGS)

broker-start: venv ## local Kafka on 127.0.0.1:19092 (data in var/kafka)
	$(BIN)/greenchannel broker start

broker-stop: venv
	$(BIN)/greenchannel broker stop

clean: ## stop the local broker, remove its data and build/tool caches (keeps .venv)
	-@test -x $(BIN)/greenchannel && $(BIN)/greenchannel broker stop
	rm -rf var build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

deploy-check: venv ## validate deploy/ offline (rules, dashboard, image, compose, chart); installs validators into ~/.cache/greenchannel/tools
	bash deploy/check.sh
