# Nimbus: two commands for users (`make up`, `make test`); the rest for developers.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP  := $(VENV)/.installed

.PHONY: install up test test-deps bench bench-deps lint proto clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The whole system on this machine; two sites: make up UP_ARGS="--sites 2".
up: install
	$(BIN)/nimbus up $(UP_ARGS)

# Debian's skopeo (a real client) and docker-registry (CNCF Distribution, the reference peer).
test-deps: install
	@missing=""; \
	command -v skopeo >/dev/null || missing="$$missing skopeo"; \
	command -v docker-registry >/dev/null || missing="$$missing docker-registry"; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

test: test-deps
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# wrk: the HTTP load generator of the benchmarks.
bench-deps: test-deps
	@command -v wrk >/dev/null || { echo "installing wrk"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq wrk; }

bench: bench-deps
	$(BIN)/python -m bench $(BENCH_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy nimbus registry notifier replicator

proto: install
	$(BIN)/python -m grpc_tools.protoc -I . --python_out=. --grpc_python_out=. --pyi_out=. proto/nimbus/v1/*.proto

clean:
	rm -rf $(VENV) build *.egg-info
