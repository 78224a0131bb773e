"""MAVEN and the m-step game (Mahajan et al. 2019)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from envs.mstep import MStepConfig, MStepGame
from runner.build import build, seed_everything
from runner.errors import ConfigError
from runner.experiment import Experiment, StopRequest
from tests.conftest import compose, train
from tests.fakes.stateless_env import NoStateEnv

MAVEN = ["+algo=maven", "+env=mstep", "env.m=4", "logger=[]"]


def _play(m: int, first: list[int], middle: list[int], last: list[int]) -> tuple[float, int]:
    env = MStepGame(MStepConfig(name="mstep", m=m), n_envs=1, seed=0, device="cpu")
    env.reset()
    total, steps = 0.0, 0
    for t in range(m):
        a = first if t == 0 else last if t == m - 1 else middle
        r = env.step(torch.tensor([a]))
        total += r.reward.item()
        steps += 1
        if r.terminated.item():
            break
    return total, steps


@pytest.mark.parametrize("m", [2, 4, 10])
def test_mstep_returns_of_scripted_joint_policies(m: int) -> None:
    assert _play(m, [0, 0], [0, 0], [1, 1]) == (m + 3, m)  # left branch, best final joint action
    assert _play(m, [1, 1], [1, 1], [1, 1]) == (m, m)  # right branch
    assert _play(m, [0, 1], [0, 0], [1, 1]) == (0, 1)  # off-diagonal first step ends it
    assert _play(m, [1, 0], [1, 1], [1, 1]) == (0, 1)
    assert _play(m, [0, 0], [0, 0], [0, 0]) == (m, m)  # left branch, worst final joint action


def test_mstep_leaving_a_branch_ends_the_episode() -> None:
    assert _play(10, [0, 0], [1, 0], [1, 1]) == (1, 2)
    assert _play(10, [1, 1], [0, 0], [1, 1]) == (1, 2)


def test_mstep_observation_is_step_and_branch() -> None:
    env = MStepGame(MStepConfig(name="mstep", m=3), n_envs=2, seed=0, device="cpu")
    ob = env.reset()
    assert ob.state.tolist() == [[1, 0, 0, 0, 0, 0]] * 2
    ob = env.step(torch.tensor([[0, 0], [1, 1]])).observation
    assert ob.state.tolist() == [[0, 1, 0, 0, 1, 0], [0, 1, 0, 0, 0, 1]]
    assert torch.equal(ob.obs[:, 0], ob.state)


def _maven(*overrides: str):
    cfg = compose(*MAVEN, *overrides)
    seed_everything(0)
    return cfg, build(cfg, torch.device("cpu"))


@pytest.mark.parametrize("runner", ["episode", "parallel"])
def test_maven_shapes_and_one_train_step(tmp_path: Path, runner: str) -> None:
    cfg, c = _maven(f"runner={runner}", "learner.batch_size=4")
    r = c.runner.run(0)
    noise = r.batch["noise"]
    assert noise.shape == (r.batch.batch_size, 16) and torch.equal(noise.sum(-1), torch.ones(r.batch.batch_size))
    exp = Experiment(cfg, c, tmp_path, StopRequest())
    while not c.buffer.can_sample(4):
        exp.train_iteration()
    before = {k: [p.detach().clone() for p in m.parameters()] for k, m in c.learner.modules.items()}
    stats = c.learner.train(c.buffer.sample(4), 0)
    assert {"loss", "td_error_abs", "discrim_loss", "latent_policy_entropy"} <= set(stats)
    assert stats["latent_policy_entropy"] == pytest.approx(torch.log(torch.tensor(16.0)).item(), abs=0.1)
    for k, m in c.learner.modules.items():  # agent, mixer, discriminator and latent policy all learn
        assert any(not torch.equal(a, b) for a, b in zip(before[k], m.parameters())), k
    assert set(c.learner.modules) == {"agent", "mixer", "discriminator", "latent_policy"}
    assert c.learner.mixer.hyper_b1.in_features == c.spec.state_dim + 16  # the mixer sees state ++ z


def test_discriminator_loss_falls_on_a_fixed_batch() -> None:
    cfg, c = _maven("runner=parallel", "runner.n_envs=32", "learner.batch_size=32", "controller.latent_policy=uniform",
                    "learner.lr=0.003")
    c.buffer.insert(c.runner.run(0).batch)
    batch = c.buffer.sample(32)
    losses = [c.learner.train(batch, 0)["discrim_loss"] for _ in range(150)]
    assert losses[-1] < 0.5 * losses[0]


def test_z_changes_the_agents_q_values() -> None:
    cfg, c = _maven("runner=parallel", "runner.n_envs=2", "learner.batch_size=2", "controller.latent_policy=uniform")
    for _ in range(2):
        c.buffer.insert(c.runner.run(0).batch)
    batch = c.buffer.sample(2)
    for _ in range(20):
        c.learner.train(batch, 0)
    batch.data["noise"][:] = torch.nn.functional.one_hot(torch.tensor([0, 1]), 16).float()
    batch.data["obs"][1] = batch.data["obs"][0]  # same observations, different z
    q = c.controller.forward_seq(batch)
    assert not torch.allclose(q[0], q[1])


def test_per_z_and_uniform_z_test_returns_are_logged(tmp_path: Path) -> None:
    result = train(tmp_path, *MAVEN, "t_max=200", "test_interval=100", "test_nepisodes=4", "controller.noise_dim=3")
    assert {"test_return_mean", "test_return_mean_zuniform", "test_return_mean_z0", "test_return_mean_z1",
            "test_return_mean_z2"} <= set(result.stats)
    assert "test_return_mean_z3" not in result.stats


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("controller.noise_dim=0", "controller.noise_dim=0 is invalid: must be >= 1"),
        ("controller.latent_policy=bandit", "controller.latent_policy='bandit' is invalid: available latent policies: learned, uniform"),
        ("agent=gru", "controller=maven needs a latent-conditioned agent: agent=noise_gru (got agent='gru')"),
        ("controller=basic", "learner=maven_learner needs a latent z drawn per episode: controller=maven (got controller='basic')"),
    ],
)
def test_maven_bad_input(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        train(tmp_path, *MAVEN, override)
    assert message in str(e.value)


def test_maven_needs_an_env_with_a_state(tmp_path: Path, store, exp_name: str) -> None:
    cfg = compose(*[o for o in MAVEN if o != "logger=[]"], f"logger.mlflow.experiment_name={exp_name}")
    cfg.env = {"name": "_stateless_test_env", "t_max": 10, "test_interval": 5, "log_interval": 5}
    from runner.experiment import run

    NoStateEnv.closed = 0
    with pytest.raises(ConfigError, match="learner=maven_learner needs an env with a global state"):
        run(cfg, hydra_dir=tmp_path)
    assert NoStateEnv.closed == 1  # the env copies built before the refusal are closed
    from tests.conftest import runs_of

    assert runs_of(store, exp_name) == []


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_maven_solves_a_short_mstep_game(tmp_path: Path, seed: int) -> None:
    result = train(tmp_path, "+experiment=maven_mstep", "env.m=4", "t_max=15000", "test_nepisodes=8",
                   "controller.test_each_z=0", f"seed={seed}", "logger=[]")
    assert result.stats["test_return_mean"] == 7.0  # m + 3


@pytest.mark.parametrize("eps", [0.0, 1.0])
def test_latent_sampling_modes(eps: float) -> None:
    cfg, c = _maven("runner=parallel", "runner.n_envs=512", f"controller.latent_epsilon={eps}")
    ctrl = c.controller.member()  # the team's one group: MAVEN's controller
    with torch.no_grad():  # a latent policy that strongly prefers z = 3
        last = ctrl.latent_policy.net[-1]
        last.weight.zero_()
        last.bias.fill_(-10.0)
        last.bias[3] = 10.0
    from runner.buffers.episode import EpisodeBatch

    batch = EpisodeBatch.empty(c.runner.scheme, 512, c.spec.episode_limit, torch.device("cpu"))
    ob = c.env.reset()

    def zs(test_mode: bool) -> torch.Tensor:
        ctrl.on_episode_start(batch, ob, test_mode)
        return batch["noise"].argmax(-1)

    assert (zs(test_mode=True) == 3).all()  # argmax of the policy in test mode, whatever eps is
    train_z = zs(test_mode=False)
    if eps == 0.0:
        assert (train_z == 3).all()
    else:  # uniform: every value of z appears
        assert set(train_z.tolist()) == set(range(16))
    ctrl.set_test_variant("_z5")
    assert (zs(test_mode=True) == 5).all()
    ctrl.set_test_variant("_zuniform")
    assert len(set(zs(test_mode=True).tolist())) > 8
    ctrl.set_test_variant("")
