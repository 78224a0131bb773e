# hymarl -- `make help` lists the targets. `make run` and `make test` set everything up themselves.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
VENV_RL := .venv-routerl
STAMP_RL := $(VENV_RL)/.installed
STAMP_DOCS := $(VENV)/.installed-docs
PYTHON ?= python3
PORT ?= 5000

.DEFAULT_GOAL := help
.PHONY: help install install-routerl run run-routerl test test-main test-routerl test-fast bench bench-routerl ui server report lint docs clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-15s %s\n", $$1, $$2}'

install: $(STAMP) ## build .venv/ (CPU torch 2.13.0 first, then hymarl editable with the dev, envs, sweep and sacred extras)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,envs,sweep,sacred]"
	@touch $@

install-routerl: $(STAMP_RL) ## build .venv-routerl/ (torch, hymarl, RouteRL + SUMO 1.21: its pins clash with the envs extra)

$(STAMP_RL): pyproject.toml
	$(PYTHON) -m venv $(VENV_RL)
	$(VENV_RL)/bin/python -m pip install -q --upgrade pip
	$(VENV_RL)/bin/python -m pip install -q torch==2.13.0
	$(VENV_RL)/bin/python -m pip install -q -e ".[dev,routerl]"
	@touch $@

run: install ## train QMIX on the two-step game, logged to MLflow (outputs/mlflow.db)
	$(PY) -m runner +algo=qmix +env=twostep

run-routerl: install-routerl ## QMIX machine agents among human drivers in RouteRL (SUMO), two_route_yield
	$(VENV_RL)/bin/python -m runner +algo=qmix +env=routerl_two_route_yield

test: test-main test-routerl ## the whole test suite, slow learning tests included (what CI runs)

test-main: install ## the test suite in .venv (RouteRL's tests are skipped there)
	@$(PY) -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

test-routerl: install-routerl ## RouteRL's tests against the real package and SUMO, in .venv-routerl
	@$(VENV_RL)/bin/python -m pytest -q tests/test_routerl.py; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

test-fast: install ## the test suite without the slow tests
	@$(PY) -m pytest -q -m "not slow"; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

bench: install ## throughput benchmark -> outputs/bench/bench.{md,json}, table in docs/performance.md
	$(PY) -m runner.tools bench

bench-routerl: install-routerl ## seconds per simulated RouteRL day, TraCI vs libsumo
	$(VENV_RL)/bin/python -m envs.routerl_env

ui: install ## MLflow UI on the local store at http://127.0.0.1:5000 (PORT=... to change)
	@mkdir -p outputs
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/outputs/mlflow.db --host 127.0.0.1 --port $(PORT)

server: install ## MLflow tracking server on http://127.0.0.1:5000 (PORT=...), SQLite + served artifacts in outputs/server/
	@mkdir -p outputs/server/mlartifacts
	@echo "MLflow tracking server (SQLite outputs/server/mlflow.db, artifacts outputs/server/mlartifacts)."
	@echo "Point runs at it:  export MLFLOW_TRACKING_URI=http://127.0.0.1:$(PORT)"
	$(VENV)/bin/mlflow server --host 127.0.0.1 --port $(PORT) \
		--backend-store-uri sqlite:///$(CURDIR)/outputs/server/mlflow.db \
		--serve-artifacts --artifacts-destination $(CURDIR)/outputs/server/mlartifacts

report: install ## curves + stats tables of MLflow runs -> outputs/report/ (REPORT_ARGS="--parent ID ...")
	$(PY) -m runner.tools report $(REPORT_ARGS)

lint: install ## ruff, import-linter (contracts in pyproject.toml), mypy
	$(VENV)/bin/ruff check runner modules envs tests
	$(VENV)/bin/lint-imports --no-cache --no-logo
	$(VENV)/bin/mypy

docs: $(STAMP_DOCS) ## the docs site (docs/, docs/mkdocs.yml) -> outputs/site/; strict: a broken link or anchor fails
	@mkdir -p outputs
	@printf 'INHERIT: ../docs/mkdocs.yml\ndocs_dir: ../docs\nsite_dir: site\n' > outputs/mkdocs.yml
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict -f outputs/mkdocs.yml

$(STAMP_DOCS): $(STAMP) pyproject.toml
	$(PY) -m pip install -q -e ".[docs]"
	@touch $@

clean: ## remove .venv and outputs (runs, MLflow store)
	rm -rf $(VENV) $(VENV_RL) outputs/runs outputs/multirun outputs/mlflow.db outputs/mlflow.db.lock outputs/mlartifacts outputs/server outputs/sacred outputs/report outputs/site outputs/mkdocs.yml
