"""Shared fixtures: a real SQLite MLflow store per session, composing configs, running the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from runner.compose import compose_config
from runner.experiment import RunResult, run

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def store_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One real SQLite store for the session (creating a store costs seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def store(store_uri: str, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store_uri)
    return MlflowClient(tracking_uri=store_uri)


@pytest.fixture
def exp_name(request: pytest.FixtureRequest) -> str:
    """An MLflow experiment name unique to the test, so tests can count their own runs."""
    import hashlib
    import re

    name = request.node.name  # readable; the hash is of the node id (tests of one name in several files differ)
    return f"test-{re.sub(r'[^A-Za-z0-9_]', '_', name)[:60]}-{hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:8]}"


def compose(*overrides: str):
    return compose_config(["progress=false", *overrides])


def train(run_dir: Path, *overrides: str) -> RunResult:
    return run(compose(*overrides), hydra_dir=run_dir)


def runs_of(client: MlflowClient, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id])


def cli(args: list[str], cwd: Path, store_uri: str | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if store_uri:
        env["MLFLOW_TRACKING_URI"] = store_uri
    return subprocess.run(
        [sys.executable, "-m", "runner", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
