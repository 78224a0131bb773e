# hymarl -- `make help` lists the targets. `make run` and `make test` set everything up themselves.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTHON ?= python3
PORT ?= 5000

.DEFAULT_GOAL := help
.PHONY: help install run test test-fast bench ui server report lint clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'

install: $(STAMP) ## build .venv/ (CPU torch 2.13.0 first, then hymarl editable with the dev, envs, sweep and sacred extras)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,envs,sweep,sacred]"
	@touch $@

run: install ## train QMIX on the two-step game, logged to MLflow (outputs/mlflow.db)
	$(PY) -m runner +algo=qmix +env=twostep

test: install ## the whole test suite, slow learning tests included (what CI runs)
	@$(PY) -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

test-fast: install ## the test suite without the slow tests
	@$(PY) -m pytest -q -m "not slow"; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

bench: install ## throughput benchmark -> outputs/bench/bench.{md,json}, table in README
	$(PY) -m runner.bench

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
	$(PY) -m runner.report $(REPORT_ARGS)

lint: install ## ruff
	$(VENV)/bin/ruff check runner modules envs tests

clean: ## remove .venv and outputs (runs, MLflow store)
	rm -rf $(VENV) outputs/runs outputs/multirun outputs/mlflow.db outputs/mlartifacts outputs/server outputs/sacred outputs/report
