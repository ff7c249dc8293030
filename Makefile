# Green Channel developer and CI entry points. `make test` is what CI runs (via .ci/run).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST := $(BIN)/pytest -p no:cacheprovider
PYTEST_ARGS ?=
# xdist workers for the broker tiers: each worker starts its own broker (tests/conftest.py).
WORKERS ?= 3
# Tiers by marker (tests/conftest.py marks by directory and by the fixtures a test uses).
FAST   := (unit or contract) and not (kafka or deploy)
KAFKA  := kafka and not soak

.PHONY: venv lint test test-fast test-unit test-kafka test-deploy test-soak demo bench soak \
	soak-short broker-start broker-stop clean deploy-check lock audit kafka-drift docs bench-venv \
	lock-bench

venv: $(STAMP) ## virtualenv with the package (editable) and its dev + simulator extras

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev,sim]"
	@touch $@

lint: venv ## ruff lint + format check, mypy strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

SHORT_SOAK := tests/soak/test_soak_short.py
test: venv lint ## what CI runs: every tier but the long soak; the short soak beside $(WORKERS) xdist workers
	@# The short soak (5 min, its own broker) runs as its own pytest from the start, beside the
	@# xdist workers (a broker each) that run everything else, slowest first; its report follows.
	@set -u; log=$$(mktemp); \
	$(PYTEST) -q $(SHORT_SOAK) > $$log 2>&1 & soak=$$!; \
	rc=0; $(PYTEST) -n $(WORKERS) --dist loadgroup --no-loadscope-reorder -m "not soak" \
		--deselect $(SHORT_SOAK) --durations=15 $(PYTEST_ARGS) || rc=$$?; \
	wait $$soak || rc=$$?; echo "==== short soak ($(SHORT_SOAK)) ===="; cat $$log; rm -f $$log; \
	exit $$rc

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

docs: venv ## regenerate what docs/ derives from the code: the ranges table of docs/configuration.md
	$(BIN)/python -m gateway.dev.config_ranges

lock: venv ## rewrite constraints.txt from the venv (after changing pyproject.toml)
	@head -n 3 constraints.txt > constraints.txt.new
	$(BIN)/python -m pip freeze --exclude-editable --disable-pip-version-check >> constraints.txt.new
	mv constraints.txt.new constraints.txt

audit: ## pip-audit the locked set (constraints.txt) against PyPI's / OSV's vulnerability data
	bash .ci/audit constraints.txt

KAFKA_LATEST := .venv-kafka-latest
kafka-drift: ## the newest kafka-python release: fast-path self-check, compat tests, Kafka integration tests
	@test -x $(KAFKA_LATEST)/bin/python || $(PYTHON) -m venv $(KAFKA_LATEST)
	$(KAFKA_LATEST)/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev,sim]"
	$(KAFKA_LATEST)/bin/python -m pip install -q --disable-pip-version-check --upgrade kafka-python
	$(KAFKA_LATEST)/bin/python -c "import kafka; print('kafka-drift: kafka-python', kafka.__version__, '(locked: $$(grep -i ^kafka-python== constraints.txt))')"
	$(KAFKA_LATEST)/bin/pytest -p no:cacheprovider -q \
		"tests/unit/test_liveness.py::test_the_self_check_passes_on_the_installed_kafka_python" \
		tests/unit/test_unpack.py tests/unit/test_append_encode.py tests/unit/test_positions.py \
		tests/unit/test_kafka_compat.py tests/unit/test_kafka_partitioner.py tests/integration/test_kafka_producer.py

demo: venv ## broker + bureau simulator + gateway, with sample complaints
	$(BIN)/python -m gateway.dev.demo $(ARGS)

bench: venv ## routing and delivery throughput against the local broker (peers: make bench-venv)
	$(BIN)/python -m bench.route
	$(BIN)/python -m bench.deliver

BENCH_VENV := .venv-bench
bench-venv: ## the benchmark's Quix Streams peer: its own venv (the `bench` extra), see pyproject.toml
	@test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q --disable-pip-version-check -c constraints-bench.txt -e ".[bench]"

lock-bench: bench-venv ## rewrite constraints-bench.txt from .venv-bench (after changing the bench extra)
	@head -n 4 constraints-bench.txt > constraints-bench.txt.new
	$(BENCH_VENV)/bin/python -m pip freeze --exclude-editable --disable-pip-version-check >> constraints-bench.txt.new
	mv constraints-bench.txt.new constraints-bench.txt

SOAK_MINUTES ?= 30
SOAK_ARGS ?=
soak: venv ## chaos soak (opt-in): SOAK_MINUTES (default 30) of faults, then the ledger's verdict into docs/benchmarks.md; needs root + nftables for the network cut
	$(BIN)/python -m bench.soak --minutes $(SOAK_MINUTES) $(SOAK_ARGS)

soak-short: venv ## the short soak as CI runs it (tests/soak; GC_SOAK_MINUTES, default 5)
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
