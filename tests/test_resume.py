"""Interrupts write a checkpoint and mark the run KILLED; resume continues it exactly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from runner import checkpoint
from runner.checkpoint import CheckpointError
from tests.conftest import ROOT, runs_of, train
from tests.fakes.interrupt import metrics as _metrics
from tests.fakes.interrupt import run_until as _run

BASE = ["+algo=qmix", "+env=twostep", "runner=parallel", "runner.n_envs=4", "test_nepisodes=4",
        "t_max=1200", "test_interval=200", "log_interval=100", "learner.batch_size=8"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_checkpoints_and_resume_equals_an_uninterrupted_run(
    tmp_path: Path, store: MlflowClient, exp_name: str, signum: int
) -> None:
    exp = f"logger.mlflow.experiment_name={exp_name}"
    full = _run(tmp_path / "full", *BASE, exp, "run_name=full")

    killed = _run(tmp_path / "part", *BASE, exp, "run_name=part", interrupt_at=500, signum=signum)
    assert killed.status == "KILLED" and killed.exit_code == {signal.SIGINT: 130, signal.SIGTERM: 143}[signum]
    assert 500 <= killed.t_env < 1200 and killed.checkpoint == tmp_path / "part" / "checkpoints" / f"step_{killed.t_env}.pt"
    part = next(r for r in runs_of(store, exp_name) if r.info.run_name == "part")
    assert part.info.status == "KILLED"
    assert "stopped by signal" in part.data.tags["error"]

    resumed = _run(tmp_path / "elsewhere", *BASE, exp, "run_name=part", f"resume={tmp_path / 'part'}")
    assert resumed.status == "FINISHED" and resumed.t_env == full.t_env
    runs = {r.info.run_name: r for r in runs_of(store, exp_name)}
    assert len(runs_of(store, exp_name)) == 2  # resumed in the same MLflow run
    assert runs["part"].info.status == "FINISHED" and runs["part"].info.run_id == part.info.run_id
    assert "error" not in runs["part"].data.tags  # the last stop's reason is gone once it finished
    assert runs["part"].data.tags["resumed_at_t_env"] == str(killed.t_env)
    m_full, m_part = _metrics(store, runs["full"].info.run_id), _metrics(store, part.info.run_id)
    assert m_part == m_full  # every step exactly once, with the same values
    assert [s for s, _ in m_part["test_return_mean"]] == [0, 200, 400, 600, 800, 1000, 1200]

    a, b = torch.load(full.checkpoint, weights_only=True), torch.load(resumed.checkpoint, weights_only=True)
    for k in ("agent", "mixer"):
        for name, t in a["learner"]["modules"][k].items():
            assert torch.equal(t, b["learner"]["modules"][k][name]), name
    assert a["learner"]["n_updates"] == b["learner"]["n_updates"]


def test_resume_refuses_a_config_that_changes_the_experiment(tmp_path: Path, store, exp_name: str) -> None:
    exp = f"logger.mlflow.experiment_name={exp_name}"
    _run(tmp_path / "part", *BASE, exp, interrupt_at=300)
    with pytest.raises(CheckpointError) as e:
        _run(tmp_path / "again", *BASE, exp, "learner.lr=0.01", "mixer.embed_dim=16", f"resume={tmp_path / 'part'}")
    msg = str(e.value)
    assert "the config differs in keys that change the experiment" in msg
    assert "learner.lr: 0.0005 in the checkpoint, 0.01 now" in msg and "mixer.embed_dim: 32 in the checkpoint, 16 now" in msg
    (run_,) = runs_of(store, exp_name)
    assert run_.info.status == "KILLED"  # untouched


def test_resume_may_extend_t_max(tmp_path: Path, store, exp_name: str) -> None:
    exp = f"logger.mlflow.experiment_name={exp_name}"
    first = train(tmp_path / "r", *BASE, exp)
    more = train(tmp_path / "r2", *[o for o in BASE if not o.startswith("t_max")], "t_max=1600", exp, f"resume={tmp_path / 'r'}")
    assert (first.t_env, more.t_env) == (1200, 1600)
    (run_,) = runs_of(store, exp_name)
    steps = [m.step for m in store.get_metric_history(run_.info.run_id, "return_mean")]
    assert len(steps) == len(set(steps)) and steps == sorted(steps) and steps[-1] == 1600


def test_evaluate_a_checkpoint(tmp_path: Path, store, exp_name: str) -> None:
    exp = f"logger.mlflow.experiment_name={exp_name}"
    trained = train(tmp_path / "t", *BASE, exp)
    ev = train(tmp_path / "e", *BASE, exp, "evaluate=true", f"checkpoint={tmp_path / 't'}")
    assert ev.status == "FINISHED" and ev.t_env == trained.t_env
    assert ev.stats["test_return_mean"] == trained.stats["test_return_mean"]  # greedy policy, deterministic game
    run_ = next(r for r in runs_of(store, exp_name) if r.data.tags["mode"] == "evaluate")
    assert run_.info.run_name == "eval-qmix-twostep-s0" and run_.info.status == "FINISHED"
    assert [m.step for m in store.get_metric_history(run_.info.run_id, "test_return_mean")] == [1200]


def test_checkpoint_that_does_not_fit_the_config(tmp_path: Path, store, exp_name: str) -> None:
    exp = f"logger.mlflow.experiment_name={exp_name}"
    train(tmp_path / "t", *BASE, exp)
    n = len(runs_of(store, exp_name))
    with pytest.raises(CheckpointError, match="does not fit this config"):
        train(tmp_path / "e", *BASE, exp, "evaluate=true", "agent.hidden_dim=32", f"checkpoint={tmp_path / 't'}")
    assert len(runs_of(store, exp_name)) == n


@pytest.mark.slow
def test_ctrl_c_on_the_cli_then_resume_with_the_checkpoint_config(tmp_path: Path, store_uri: str, store, exp_name: str) -> None:
    """The real thing: a process killed with SIGINT mid-run, resumed with `resume=DIR` alone."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": store_uri}
    args = ["+algo=qmix", "+env=twostep", "t_max=100000", f"logger.mlflow.experiment_name={exp_name}",
            f"hydra.run.dir={tmp_path / 'run'}"]
    proc = subprocess.Popen([sys.executable, "-m", "runner", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(True for r in runs_of(store, exp_name) if r.data.metrics.get("loss") is not None):
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "stop requested: saving a checkpoint" in out and "resume with:" in out
    (run_,) = runs_of(store, exp_name)
    assert run_.info.status == "KILLED"
    ckpts = list((tmp_path / "run" / "checkpoints").glob("step_*.pt"))
    assert len(ckpts) == 1
    stopped_at = int(ckpts[0].stem.split("_")[1])

    refused = subprocess.run([sys.executable, "-m", "runner", f"resume={tmp_path / 'run'}", "learner.lr=0.1",
                              f"hydra.run.dir={tmp_path / 'refused'}"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert refused.returncode == 2
    assert "without +algo/+env runs the checkpoint's own config, so these overrides cannot apply: learner" in refused.stderr

    res = subprocess.run([sys.executable, "-m", "runner", f"resume={tmp_path / 'run'}", f"t_max={stopped_at + 400}",
                          f"hydra.run.dir={tmp_path / 'run2'}"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    (run_,) = runs_of(store, exp_name)
    assert run_.info.status == "FINISHED"
    steps = [m.step for m in store.get_metric_history(run_.info.run_id, "test_return_mean")]
    assert len(steps) == len(set(steps)) and steps[-1] == stopped_at + 400
    arts = {a.path for a in store.list_artifacts(run_.info.run_id)}
    assert ".hydra" in arts and f".hydra-resume-{stopped_at}" in arts


@pytest.mark.slow
def test_ctrl_c_during_a_long_rollout_is_honoured_before_it_ends(tmp_path: Path, store_uri: str, store, exp_name: str) -> None:
    """A test phase of 128 episodes of a slow env (4 copies, 0.5 s per step: 32 s). A Ctrl-C 1 s into it
    abandons the rollout once it has waited StopRequest.ABANDON_AFTER_S, checkpoints, and exits 130."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": store_uri, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests' / 'fakes'}"}
    stepped = tmp_path / "stepped"
    args = ["+algo=qmix", "+env=pettingzoo",
            f"env.factory={{_target_: slow_env.parallel_env, step_seconds: 0.5, stepped_file: '{stepped}'}}",
            "env.episode_limit=2", "runner=parallel", "runner.n_envs=4", "runner.n_workers=0", "test_nepisodes=128",
            "progress=false", f"logger.mlflow.experiment_name={exp_name}", f"hydra.run.dir={tmp_path / 'run'}"]
    proc = subprocess.Popen([sys.executable, "-m", "runner", *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not stepped.exists() and time.monotonic() < deadline:  # the first test phase is under way
            time.sleep(0.1)
        time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, out
    out = " ".join(out.split())  # rich wraps long lines at 80 columns when not on a terminal
    assert "rollout of 4 env copies abandoned" in out and "its episodes are not stored" in out
    assert "stopped at t_env=0; checkpoint:" in out
    (run_,) = runs_of(store, exp_name)
    assert run_.info.status == "KILLED"
    assert "test_return_mean" not in run_.data.metrics  # the first test phase never completed


def test_a_checkpoint_from_before_a_schema_field_existed_still_resumes(tmp_path: Path) -> None:
    """runner.n_envs/n_workers were added to the episode runner's schema: an older checkpoint lacks
    them, and resuming it with their defaults is the same experiment; another value is not."""
    from runner.checkpoint import check_resume_config

    cfg = {"runner": {"name": "episode", "n_envs": 1, "n_workers": 0}, "seed": 0}
    check_resume_config({**cfg, "runner": {"name": "episode"}}, cfg, Path("x.pt"))
    with pytest.raises(CheckpointError, match="runner.n_envs: '<unset>' in the checkpoint, 2 now"):
        check_resume_config({**cfg, "runner": {"name": "episode"}},
                            {**cfg, "runner": {"name": "episode", "n_envs": 2, "n_workers": 0}}, Path("x.pt"))


def test_a_checkpoint_from_before_a_key_was_added_resumes_with_its_default(tmp_path: Path) -> None:
    """A component that gains a config key (e.g. learner.data_chunk_length) still resumes and
    evaluates checkpoints written before it: the checkpoint's config takes the key's default."""
    from runner.tools.jobs import with_schema_defaults

    src = train(tmp_path / "src", "+algo=ippo", "+env=twostep", "logger=[]", "t_max=40", "test_interval=20",
                "test_nepisodes=2", "runner.n_envs=2", "learner.batch_size=2")
    data = torch.load(src.checkpoint, weights_only=False)
    del data["config"]["learner"]["data_chunk_length"]  # as written before the key existed
    saved = with_schema_defaults(OmegaConf.create(data["config"]))
    assert saved.learner.data_chunk_length == 0
    from runner.config import validate

    validate(saved)  # the learner's own checks read the key
    checkpoint.check_resume_config(data["config"], OmegaConf.to_container(saved, resolve=True, enum_to_str=True),
                                   src.checkpoint)
