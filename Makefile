# visionops: `make run` runs the pipeline on the embedded digits, `make test` runs the test suite.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: install run lint format test test-fast ui stack stack-down stack-status browser secrets clean

install: $(STAMP)

# Reinstall when the pins or the package metadata change. pip compiles the installed modules one at
# a time (about 40 s here); compileall does it on every core. A file it cannot compile (torch ships
# one written for Python 3.12) fails only if imported, as after pip's own step, so its status is
# not the install's.
$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install --no-compile -r requirements.txt
	$(BIN)/python -m compileall -qq -j 0 $$($(BIN)/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") || true
	$(BIN)/python -m pip install --no-deps -e .
	@touch $@

run: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/visionops pipeline run $(ARGS)

# Formatting, lint and the import contract (one direction of imports between the layers).
lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Two lanes (pytest-xdist): whole modules go to each lane, the heaviest first (tests/conftest.py
# orders them); a lane mostly waits on Airflow and its services, so two fill the two cores.
# TEST_LANES=0: one lane, in collection order.
TEST_LANES ?= 2
# The project's own modules are compiled first: where PYTHONDONTWRITEBYTECODE is set (as on CI),
# each of the suite's few hundred Python processes (Airflow tasks, CLI calls, smoke tests) would
# otherwise compile them again.
test: lint
	$(BIN)/python -m compileall -q -j 0 src dags plugins >/dev/null
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -n $(TEST_LANES) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

test-fast: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -m "not e2e and not integration" $(PYTEST_ARGS)

# exec: Ctrl-C and SIGTERM reach `visionops ui`, which stops Airflow and MLflow with all their processes.
ui: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" exec $(BIN)/visionops ui $(ARGS)

# The multi-service deployment of docker-compose.yaml as processes on this machine (Celery workers,
# PostgreSQL, Redis, the MLflow server with its login): secrets made into .env on the first start.
stack: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/visionops stack up $(ARGS)

stack-down: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/visionops stack down $(ARGS)

stack-status: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/visionops stack status $(ARGS)

# Chromium from Debian for the browser tests (Playwright drives it; its own browser download is not used).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; }

# The passwords and keys of docker-compose.yaml, random, in .env (mode 600; existing values kept).
secrets:
	python3 docker/make_secrets.py

clean:
	rm -rf .visionops
