"""RouteRL against the real package and SUMO binary, on two_route_yield (run in .venv-routerl:
``make test-routerl``; in .venv, where RouteRL cannot be installed, only the install hint is checked)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from runner.config import ConfigError, validate
from tests.conftest import ROOT, compose, runs_of, train

try:
    import routerl  # noqa: F401

    HAVE_ROUTERL = True
except ImportError:
    HAVE_ROUTERL = False

needs_routerl = pytest.mark.skipif(not HAVE_ROUTERL, reason="RouteRL lives in .venv-routerl (make test-routerl)")
ENV = ["+algo=qmix", "+env=routerl_two_route_yield", "env.human_days=3"]


def _cfg(*overrides: str):
    from envs.routerl_env import RouteRLConfig

    cfg = compose(*ENV, *overrides)
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(RouteRLConfig), cfg.env))


def sumo_pids() -> set[int]:
    """Live processes running this venv's SUMO binary (zombies have no cmdline and are not counted)."""
    import sumo

    binary = os.path.join(sumo.SUMO_HOME, "bin", "sumo")
    pids = set()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].decode(errors="replace") == binary:
            pids.add(int(d))
    return pids


def _wait_gone(before: set[int], timeout: float = 10.0) -> set[int]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        left = sumo_pids() - before
        if not left:
            return left
        time.sleep(0.2)
    return sumo_pids() - before


@pytest.mark.skipif(HAVE_ROUTERL, reason="checks the message where RouteRL is missing")
def test_without_routerl_the_config_names_the_separate_venv() -> None:
    with pytest.raises(ConfigError) as err:
        validate(compose(*ENV))
    assert ("env 'routerl_two_route_yield': RouteRL is not installed in this environment: it pins older "
            "pettingzoo/gymnasium than hymarl's env extra, so it lives in its own venv: `make install-routerl`") in str(err.value)


@needs_routerl
def test_human_phase_and_mutation_give_the_configured_agent_counts() -> None:
    from envs.routerl_env import RouteRLEnv

    for agents, machines in ((20, 10), (12, 3)):
        env = RouteRLEnv.make_single(_cfg(f"env.agents={agents}", f"env.machines={machines}"), seed=1)
        try:
            assert env.spec.n_agents == machines
            assert env.spec.agent_ids == tuple(f"machine_{i}" for i in range(machines))
            assert env.env.env.day == 3  # the human phase's days
            env.reset()
            env.step(np.zeros(machines, dtype=np.int64))
            kinds = [r["kind"] for r in env.env.env.last_episode_travel_times]
            assert (kinds.count("AV"), kinds.count("Human")) == (machines, agents - machines)
        finally:
            env.close()


@needs_routerl
def test_rewards_are_minus_the_travel_times_routerl_reports() -> None:
    from envs.routerl_env import RouteRLEnv

    cfg = _cfg("env.agent_returns=true", "env.use_libsumo=false")
    env = RouteRLEnv.make_single(cfg, seed=2)
    try:
        rng = np.random.default_rng(0)
        for _ in range(3):
            env.reset()
            actions = rng.integers(0, 2, size=10)
            tr = env.step(actions)
            records = env.env.env.last_episode_travel_times
            machines = {r["id"]: r for r in records if r["kind"] == "AV"}
            by_name = {env.env.name_of[str(i)]: r for i, r in machines.items()}
            stats = env.episode_stats()
            for i, name in enumerate(env.spec.agent_ids):
                assert stats[f"agent_return/{name}"] == pytest.approx(-by_name[name]["travel_time"], abs=1e-9)
                assert int(by_name[name]["action"]) == int(actions[i])  # RouteRL routed it as we chose
            tts = [r["travel_time"] for r in machines.values()]
            assert tr.reward == pytest.approx(-np.mean(tts))  # reward=mean: the team's mean
            assert tr.terminated and not tr.truncated  # a day is one terminated step
            assert stats["travel_time_machines"] == pytest.approx(np.mean(tts))
            assert stats["machines_route_1"] == pytest.approx(np.mean(actions == 1))
            humans = [r["travel_time"] for r in records if r["kind"] == "Human"]
            assert stats["travel_time_humans"] == pytest.approx(np.mean(humans))
        # normalised observations: travel times relative to free flow (about 1 at the start of a day), start / 3600
        ob = env.reset()
        assert ob.obs.shape == (10, 7) and np.all(ob.obs[:, :2] >= 0.99) and np.all(ob.obs[:, 4] <= 1.0)
        assert ob.state.shape == (10 * 7 + 2,)
    finally:
        env.close()


@needs_routerl
def test_qmix_trains_and_logs_traffic_metrics(tmp_path: Path, store: MlflowClient, exp_name: str) -> None:
    before = sumo_pids()
    res = train(tmp_path / "run", *ENV, "logger=[console,mlflow]", f"logger.mlflow.experiment_name={exp_name}",
                "t_max=40", "test_interval=20", "log_interval=20", "test_nepisodes=2", "learner.batch_size=8")
    assert res.status == "FINISHED" and res.t_env == 40
    (run,) = runs_of(store, exp_name)
    m = run.data.metrics
    for key in ("travel_time_machines_mean", "travel_time_humans_mean", "machines_route_0_mean", "humans_route_1_mean",
                "test_travel_time_machines_mean", "loss", "test_return_mean"):
        assert key in m, key
    assert m["test_return_mean"] == pytest.approx(-m["test_travel_time_machines_mean"])
    assert _wait_gone(before) == set()


@needs_routerl
def test_traci_copies_in_workers_leave_no_sumo_process(tmp_path: Path) -> None:
    before = sumo_pids()
    cfg = compose(*ENV, "env.use_libsumo=false", "runner=parallel", "runner.n_envs=2", "runner.n_workers=2",
                  "logger=[console]", "t_max=20", "test_interval=10", "log_interval=10", "test_nepisodes=2",
                  "learner.batch_size=4")
    import torch

    from runner.build import build

    comps = build(cfg, torch.device("cpu"))
    try:
        assert len(sumo_pids() - before) == 2  # one SUMO per env copy
        r = comps.runner.run(0)
        assert r.returns.shape == (2,)
    finally:
        comps.runner.close()
    assert _wait_gone(before) == set()


@needs_routerl
def test_libsumo_needs_a_process_per_copy() -> None:
    with pytest.raises(ConfigError) as err:
        validate(compose(*ENV, "runner=parallel", "runner.n_envs=4", "runner.n_workers=2"))
    assert ("runner.n_workers=2 is invalid with env.use_libsumo=true: libsumo runs one simulation per process, so each "
            "of the runner.n_envs=4 copies needs its own worker (n_workers=4, or null), or use env.use_libsumo=false (TraCI)") in str(err.value)


@needs_routerl
@pytest.mark.slow
def test_ctrl_c_and_a_killed_worker_leave_no_sumo_process(tmp_path: Path) -> None:
    before = sumo_pids()
    args = [sys.executable, "-m", "runner", *ENV, "env.use_libsumo=false", "runner=parallel", "runner.n_envs=2",
            "runner.n_workers=2", "logger=[console]", "progress=false", "t_max=100000", "log_interval=10",
            "test_interval=1000", "learner.batch_size=4"]
    for how in ("sigint", "kill_worker"):
        proc = subprocess.Popen([*args, f"hydra.run.dir={tmp_path / how}"], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        lines = []
        for line in proc.stdout:  # wait until it trains
            lines.append(line)
            if line.startswith("t_env"):
                break
        running = sumo_pids() - before
        assert len(running) == 2, "".join(lines)
        if how == "sigint":
            proc.send_signal(signal.SIGINT)
        else:  # the process that owns a SUMO: an env worker
            with open(f"/proc/{min(running)}/stat") as f:
                worker = int(f.read().rsplit(")", 1)[1].split()[1])
            os.kill(worker, signal.SIGKILL)
        out = proc.communicate(timeout=120)[0]
        if how == "sigint":
            assert proc.returncode == 130, out
            assert list((tmp_path / how).glob("checkpoints/*.pt")), out
        else:
            assert proc.returncode == 1, out
        assert _wait_gone(before) == set(), how
