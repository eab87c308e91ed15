# Nimbus: two commands for users (`make up`, `make test`); the rest for developers.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP  := $(VENV)/.installed

.PHONY: install lock up test test-deps bench bench-deps soak soak-short lint proto fresh-clone-check clean

# Every install comes from uv.lock, exactly: the versions a fresh clone gets are the ones
# tested here. `make lock` is the one way the lock changes.
UV_VERSION := 0.13.8
UV         := UV_PROJECT_ENVIRONMENT=$(VENV) $(BIN)/uv

$(STAMP): pyproject.toml uv.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	test -x $(BIN)/uv || $(BIN)/pip install --quiet uv==$(UV_VERSION)
	$(UV) sync --locked --extra dev --quiet
	touch $(STAMP)

install: $(STAMP)

# Re-resolve every dependency to today's newest allowed release; then `make proto`, and commit both.
lock: install
	$(BIN)/uv lock --upgrade

# The whole system on this machine; two sites: make up UP_ARGS="--sites 2".
up: install
	$(BIN)/nimbus up $(UP_ARGS)

# Debian's skopeo (a real client), docker-registry (CNCF Distribution, the reference peer) and
# docker.io (the Docker engine: the classic docker push/pull workflow is tested for real);
# chromium and chromium-driver: the web console's browser test.
test-deps: install
	@missing=""; \
	command -v skopeo >/dev/null || missing="$$missing skopeo"; \
	command -v docker-registry >/dev/null || missing="$$missing docker-registry"; \
	command -v dockerd >/dev/null || missing="$$missing docker.io"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

# The suite runs in TEST_JOBS processes (pytest-xdist; every test has its own ports and
# directories); TEST_JOBS=0 runs it in this one.
TEST_JOBS ?= 2
test: test-deps
	$(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist worksteal $(PYTEST_ARGS)

# wrk: the HTTP load generator of the benchmarks.
bench-deps: test-deps
	@command -v wrk >/dev/null || { echo "installing wrk"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq wrk; }

bench: bench-deps
	$(BIN)/python -m bench $(BENCH_ARGS)

# The chaos soak (not part of `make test`): three sites under load while services are killed,
# frozen and cut off at random, then an audit of every promise; exit 1 on any violation.
SOAK_DURATION ?= 600
soak: install
	$(BIN)/python -m bench.soak --duration $(SOAK_DURATION) $(SOAK_ARGS)

soak-short: install
	$(BIN)/python -m bench.soak --duration 120 $(SOAK_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy nimbus registry notifier replicator console

proto: install
	$(BIN)/python -m grpc_tools.protoc -I . --python_out=. --grpc_python_out=. --pyi_out=. proto/nimbus/v1/*.proto

# A fresh clone of HEAD with empty caches runs `make test`: run it before a change lands.
fresh-clone-check:
	.ci/fresh-clone-check

clean:
	rm -rf $(VENV) build *.egg-info
