"""What lands in MLflow, read back with MlflowClient; FAILED runs; determinism."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from envs.matrix import ClimbingConfig, MatrixGame
from runner.learners.base import NonFiniteLossError
from runner.registry import ENVS
from tests.conftest import compose, runs_of, train

SHORT = ["+algo=qmix", "+env=twostep", "t_max=400", "test_interval=200", "log_interval=100", "test_nepisodes=4"]
TRAIN_METRICS = {"return_mean", "return_std", "ep_length_mean", "epsilon", "episode"}
LEARNER_METRICS = {"loss", "td_error_abs", "grad_norm", "q_taken_mean", "target_mean"}
TEST_METRICS = {"test_return_mean", "test_return_std", "test_ep_length_mean"}


def _history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_a_run_logs_params_tags_metrics_artifacts(tmp_path: Path, store: MlflowClient, exp_name: str) -> None:
    result = train(tmp_path / "run", *SHORT, f"logger.mlflow.experiment_name={exp_name}")
    (run,) = runs_of(store, exp_name)
    assert run.info.status == "FINISHED" and run.info.run_name == "qmix-twostep-s0"
    p = run.data.params
    assert p["learner.lr"] == "0.0005" and p["mixer.name"] == "qmix" and p["t_max"] == "400"
    assert p["env.payoff_2b"] == "[[0.0, 1.0], [1.0, 8.0]]"
    t = run.data.tags
    assert (t["algo"], t["env"], t["seed"], t["mode"]) == ("qmix", "twostep", "0", "train")
    assert len(t["git_commit"]) in (40, len("unknown"))
    assert set(run.data.metrics) >= TRAIN_METRICS | LEARNER_METRICS | TEST_METRICS
    assert [s for s, _ in _history(store, run.info.run_id, "test_return_mean")] == [0, 200, 400]
    assert [s for s, _ in _history(store, run.info.run_id, "return_mean")] == [100, 200, 300, 400]
    assert _history(store, run.info.run_id, "episode")[-1] == (400, 200.0)
    arts = {a.path for a in store.list_artifacts(run.info.run_id)}
    assert {"learning_curve.png", "q_tables.json", "checkpoints"} <= arts
    assert [a.path for a in store.list_artifacts(run.info.run_id, "checkpoints")] == ["checkpoints/step_400.pt"]
    tables = json.loads(Path(store.download_artifacts(run.info.run_id, "q_tables.json", str(tmp_path))).read_text())
    assert [tb["state"] for tb in tables] == ["state 1", "state 2A", "state 2B"]
    assert tables == json.loads(json.dumps(result.q_tables))


def test_same_seed_same_metrics(tmp_path: Path, store: MlflowClient, exp_name: str) -> None:
    for i in range(2):
        train(tmp_path / f"r{i}", *SHORT, "runner=parallel", "runner.n_envs=4", f"logger.mlflow.experiment_name={exp_name}")
    train(tmp_path / "other", *SHORT, "runner=parallel", "runner.n_envs=4", "seed=1", f"logger.mlflow.experiment_name={exp_name}")
    runs = {r.info.run_name: r for r in runs_of(store, exp_name)}
    a, b = [r for r in runs_of(store, exp_name) if r.data.tags["seed"] == "0"]
    other = runs["qmix-twostep-s1"]
    for key in TRAIN_METRICS | LEARNER_METRICS | TEST_METRICS:
        assert _history(store, a.info.run_id, key) == _history(store, b.info.run_id, key), key
    assert _history(store, a.info.run_id, "loss") != _history(store, other.info.run_id, "loss")


def test_nan_loss_fails_the_run_with_the_reason(tmp_path: Path, store: MlflowClient, exp_name: str) -> None:
    with pytest.raises(NonFiniteLossError, match=r"loss became nan at t_env=\d+ \(update 1\); training stopped"):
        train(tmp_path, "+algo=vdn", "+env=matrix", "env.payoff=[[nan,0],[0,1]]", "learner.batch_size=4",
              f"logger.mlflow.experiment_name={exp_name}")
    (run,) = runs_of(store, exp_name)
    assert run.info.status == "FAILED"
    assert run.data.tags["error"].startswith("NonFiniteLossError: loss became nan")


@ENVS.register("_crashing_test_env", config=ClimbingConfig)
class _CrashingEnv(MatrixGame):
    """A matrix game whose step fails after a while, like a simulator crashing mid-run."""

    calls = 0

    @staticmethod
    def payoff_of(cfg):
        return [[1.0, 0.0], [0.0, 1.0]]

    def step(self, actions: torch.Tensor):
        type(self).calls += 1
        if type(self).calls > 50:
            raise RuntimeError("simulator connection lost")
        return super().step(actions)


def test_a_crash_marks_the_run_failed_with_the_error(tmp_path: Path, store: MlflowClient, exp_name: str) -> None:
    cfg = compose("+algo=qmix", "+env=climbing", f"logger.mlflow.experiment_name={exp_name}")
    cfg.env.name = "_crashing_test_env"
    from runner.experiment import run

    with pytest.raises(RuntimeError, match="simulator connection lost"):
        run(cfg, hydra_dir=tmp_path)
    (run_,) = runs_of(store, exp_name)
    assert run_.info.status == "FAILED"
    assert run_.data.tags["error"] == "RuntimeError: simulator connection lost"


def test_logger_list_without_mlflow_creates_no_run(tmp_path: Path, store: MlflowClient) -> None:
    before = len(runs_of(store, "hymarl"))
    result = train(tmp_path, *SHORT, "logger=[console]")
    assert result.status == "FINISHED" and result.checkpoint.exists()
    assert len(runs_of(store, "hymarl")) == before


def test_stats_table_aggregates_runs_by_tag(tmp_path: Path, store: MlflowClient, exp_name: str) -> None:
    from runner.tools.stats import quartiles, table

    for algo in ("qmix", "vdn"):
        for seed in (0, 1, 2):
            train(tmp_path / f"{algo}{seed}", f"+algo={algo}", "+env=twostep", "t_max=200", "test_interval=100",
                  "test_nepisodes=2", f"seed={seed}", f"logger.mlflow.experiment_name={exp_name}")
    out = table(store, exp_name, "test_return_mean", [100, 200], "algo", "FINISHED").splitlines()
    assert out[0].startswith("| algo | seeds | test_return_mean at 100: median [IQR] (mean)")
    rows = {line.split(" | ")[0].strip("| "): line for line in out[2:]}
    assert set(rows) == {"qmix", "vdn"} and all(" | 3 | " in r for r in rows.values())
    runs = [r for r in runs_of(store, exp_name) if r.data.tags["algo"] == "vdn"]
    finals = sorted(store.get_metric_history(r.info.run_id, "test_return_mean")[-1].value for r in runs)
    q1, med, q3 = quartiles(finals)
    assert f"{med:.2f} [{q1:.2f}, {q3:.2f}]" in rows["vdn"].split(" | ")[3]
    assert quartiles([1.0, 2.0, 3.0, 4.0, 5.0]) == (2.0, 3.0, 4.0)
