"""The actor-critic family with what works for QMIX: agent groups (per-group actors, heterogeneous
agents, random and frozen groups), evaluation from a checkpoint, MLflow contents, worker processes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from runner.build import build, seed_everything
from runner.controllers.deterministic import DeterministicController
from runner.controllers.stochastic import StochasticController
from runner.errors import ConfigError
from runner.experiment import Experiment, StopRequest
from tests.conftest import compose, runs_of, train

SHORT = ["logger=[]", "t_max=400", "test_interval=200", "test_nepisodes=4"]
RANDOM_THIRD = "groups={learners:[agent_0,agent_1],others:{agents:[agent_2],policy:random}}"


def _one_update(*overrides: str):
    cfg = compose(*overrides, "logger=[]")
    seed_everything(0)
    c = build(cfg, torch.device("cpu"))
    exp = Experiment(cfg, c, Path("."), StopRequest())
    try:
        while exp.state.last_learner_log_t < 0:
            exp.train_iteration()
        return c, dict(exp.state.latest)
    finally:
        c.runner.close()


@pytest.mark.parametrize("algo", ["ippo", "maddpg"])
def test_heterogeneous_continuous_agents_get_an_actor_each(algo: str) -> None:
    """Speaker (3 action dims) and listener (5) of the continuous speaker-listener, one group each:
    each group's actor has its own sizes, and the team's actions keep each agent's dims."""
    extra = ["agent=mlp", "buffer=transition_replay", "learner.batch_size=16"] if algo == "maddpg" else [
        "runner.n_envs=2", "learner.batch_size=2"]
    c, stats = _one_update(f"+algo={algo}", "+env=pz_simple_speaker_listener_continuous", "groups=per_agent",
                           "runner.n_workers=0", *extra)
    kind = StochasticController if algo == "ippo" else DeterministicController
    nets = {name: net for name, net in c.controller.nets.items()}
    assert set(nets) == {"speaker_0", "listener_0"} and all(isinstance(n, kind) for n in nets.values())
    assert (nets["speaker_0"].spec.n_actions, nets["listener_0"].spec.n_actions) == (3, 5)
    assert all(torch.isfinite(torch.tensor(v)) for v in stats.values() if isinstance(v, float))
    if algo == "ippo":  # the Gaussian's log std, per group, scattered into the team's [N, A]
        log_std = c.controller.action_log_std()
        assert log_std.shape == (2, 5) and torch.equal(log_std[0, 3:], torch.zeros(2))


@pytest.mark.parametrize("algo", ["mappo", "maddpg"])
def test_a_random_group_is_part_of_the_environment(tmp_path: Path, algo: str) -> None:
    """Two agents learn, the third acts at random: the per-group returns are logged, and the
    learners' losses only count the learning agents."""
    result = train(tmp_path, f"+algo={algo}", "+env=twostep3", RANDOM_THIRD, *SHORT, "learner.batch_size=8",
                   *(["runner.n_envs=8"] if algo == "mappo" else []))
    assert result.status == "FINISHED"
    assert {"test_return_learners_mean", "test_return_others_mean"} <= set(result.stats)


def test_a_frozen_group_can_come_from_an_ippo_run(tmp_path: Path) -> None:
    """An IPPO run's policy plays as a frozen group in a MAPPO run: it acts with its own stochastic
    controller, greedily, with the source run's weights, and does not change."""
    src = train(tmp_path / "src", "+algo=ippo", "+env=twostep", *SHORT, "runner.n_envs=4", "learner.batch_size=4")
    frozen = "groups={pair:{agents:[agent_0,agent_1],policy:frozen,checkpoint:" + str(src.checkpoint) + "},third:[agent_2]}"
    cfg = compose("+algo=mappo", "+env=twostep3", frozen, "logger=[]", "runner.n_envs=4", "learner.batch_size=4")
    c = build(cfg, torch.device("cpu"))
    try:
        net = c.controller.nets["pair"]
        assert isinstance(net, StochasticController)
        weights = torch.load(src.checkpoint, weights_only=True)["learner"]["modules"]["agent"]
        for name, t in net.agent.state_dict().items():
            assert torch.equal(t, weights[name]), name
        before = {k: v.clone() for k, v in net.agent.state_dict().items()}
        exp = Experiment(cfg, c, tmp_path / "run", StopRequest())
        for _ in range(3):
            exp.train_iteration()
        assert all(torch.equal(v, net.agent.state_dict()[k]) for k, v in before.items())
    finally:
        c.runner.close()


def test_a_frozen_group_from_maven_is_refused(tmp_path: Path) -> None:
    src = train(tmp_path / "src", "+algo=maven", "+env=twostep", "logger=[]", "t_max=40", "test_interval=20",
                "test_nepisodes=2", "learner.batch_size=4")
    frozen = "groups={pair:{agents:[agent_0,agent_1],policy:frozen,checkpoint:" + str(src.checkpoint) + "},third:[agent_2]}"
    with pytest.raises(ConfigError, match="its controller is 'maven', which acts for the whole team; frozen groups need "
                                          "the network of a per-group controller \\(basic, deterministic, stochastic\\)"):
        train(tmp_path / "run", "+algo=ippo", "+env=twostep3", frozen, "logger=[]")


@pytest.mark.parametrize("algo", ["ippo", "matd3"])
def test_evaluate_a_checkpoint_logs_test_returns_to_mlflow(tmp_path: Path, store: MlflowClient, exp_name: str,
                                                           algo: str) -> None:
    """train, then evaluate=true from its checkpoint: a FINISHED eval run with the test stats and the
    train run's params; an actor-critic run has no Q tables."""
    exp = f"logger.mlflow.experiment_name={exp_name}"
    extra = ["runner.n_envs=4", "learner.batch_size=4"] if algo == "ippo" else ["learner.batch_size=4"]
    src = train(tmp_path / "src", f"+algo={algo}", "+env=twostep", exp, "t_max=200", "test_interval=100",
                "test_nepisodes=4", *extra)
    assert src.status == "FINISHED" and src.q_tables == []
    ev = train(tmp_path / "eval", f"+algo={algo}", "+env=twostep", exp, "evaluate=true", f"checkpoint={src.checkpoint}",
               "test_nepisodes=8", *extra)
    assert ev.status == "FINISHED" and 0.0 <= ev.stats["test_return_mean"] <= 8.0  # the two-step game pays 0 to 8
    runs = {r.info.run_name: r for r in runs_of(store, exp_name)}
    eval_run = next(r for name, r in runs.items() if name.startswith("eval-"))
    assert eval_run.info.status == "FINISHED" and eval_run.data.tags["mode"] == "evaluate"
    assert eval_run.data.params["learner.name"] == f"{'ippo' if algo == 'ippo' else 'matd3'}_learner"
    train_run = next(r for name, r in runs.items() if not name.startswith("eval-"))
    for key in ("pg_loss", "value_loss", "entropy") if algo == "ippo" else ("critic_loss", "actor_loss", "q_taken_mean"):
        assert key in train_run.data.metrics, key


def test_ippo_with_worker_processes_equals_in_process(tmp_path: Path) -> None:
    """The parallel runner's worker processes step LBF copies exactly as in-process stepping does: the
    same seeds give the same metrics."""
    common = ["+algo=ippo", "+env=lbf", "env.key=lbforaging:Foraging-5x5-2p-1f-v3", "env.episode_limit=10",
              "runner.n_envs=4", "learner.batch_size=4", "t_max=160", "test_interval=80", "test_nepisodes=4",
              "logger=[]"]
    a = train(tmp_path / "a", *common, "runner.n_workers=2")
    b = train(tmp_path / "b", *common, "runner.n_workers=0")
    assert a.stats == b.stats


@pytest.mark.parametrize("greedy", [True, False])
def test_test_episodes_take_the_mode_or_sample(greedy: bool) -> None:
    """controller.test_greedy: the two-step game's first state is the same in every copy, so greedy
    test actions agree across 64 copies; sampled ones (EPyMARL's soft_policies) do not."""
    cfg = compose("+algo=ippo", "+env=twostep", "logger=[]", "runner.n_envs=64", "learner.batch_size=64",
                  f"controller.test_greedy={str(greedy).lower()}")
    seed_everything(0)
    c = build(cfg, torch.device("cpu"))
    try:
        first = c.runner.run(0, test_mode=True).batch["actions"][:, 0].long()  # [64, 2]
        assert (first.unique(dim=0).shape[0] == 1) is greedy
    finally:
        c.runner.close()
