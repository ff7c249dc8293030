# Green Channel developer and CI entry points. `make test` is what CI runs (via .ci/run).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST := $(BIN)/pytest -p no:cacheprovider
PYTEST_ARGS ?=
# xdist workers for the broker tiers: each worker starts its own broker (tests/conftest.py).
WORKERS ?= 2
# Tiers by marker (tests/conftest.py marks by directory and by the fixtures a test uses).
FAST   := (unit or contract) and not (kafka or deploy)
KAFKA  := kafka and not soak

.PHONY: venv lint test test-fast test-unit test-kafka test-deploy test-soak demo bench \
	broker-start broker-stop clean deploy-check

venv: $(STAMP) ## virtualenv with the package (editable) and its dev + simulator extras

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[dev,sim]"
	@touch $@

lint: venv ## ruff lint + format check, mypy strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: venv lint ## what CI runs: every tier but soak, $(WORKERS) xdist workers, a broker each
	$(PYTEST) -n $(WORKERS) --dist loadgroup -m "not soak" --durations=15 $(PYTEST_ARGS)

test-fast: venv ## unit + contract: no broker, no deploy tools, no network (seconds)
	$(PYTEST) -m "$(FAST)" $(PYTEST_ARGS)

test-unit: venv ## unit tests only
	$(PYTEST) -m "unit and not (kafka or deploy)" $(PYTEST_ARGS)

test-kafka: venv ## the broker tiers (integration, e2e, hostile, interop, security), in parallel
	$(PYTEST) -n $(WORKERS) --dist loadgroup -m "$(KAFKA)" $(PYTEST_ARGS)

test-deploy: venv ## deploy/ with its validators (bash deploy/check.sh install first)
	$(PYTEST) -m deploy $(PYTEST_ARGS)

test-soak: venv ## long runs (tests/soak), one broker
	$(PYTEST) -m soak $(PYTEST_ARGS)

demo: venv ## broker + bureau simulator + gateway, with sample complaints
	$(BIN)/python -m gateway.dev.demo $(ARGS)

bench: venv ## routing and delivery throughput against the local broker
	$(BIN)/python -m bench.route
	$(BIN)/python -m bench.deliver

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
