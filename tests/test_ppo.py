"""IPPO and MAPPO: returns, the clipped objective, the rollout buffer, bad input, learning and resume."""

from __future__ import annotations

import math
import signal
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from runner.buffers.episode import EpisodeBatch, FieldSpec
from runner.buffers.rollout import RolloutBuffer, RolloutBufferConfig
from runner.build import build, seed_everything
from runner.errors import ConfigError
from runner.experiment import Experiment, StopRequest, run
from runner.learners.ppo import clipped_surrogate, gae, masked_mean, nstep_returns
from tests.conftest import compose, runs_of, train
from tests.fakes.interrupt import metrics as _metrics
from tests.fakes.interrupt import run_until as _run
from tests.fakes.stateless_env import NoStateEnv  # noqa: F401 (registers _stateless_test_env)

IPPO = ["+algo=ippo", "+env=twostep", "logger=[]"]
MAPPO = ["+algo=mappo", "+env=twostep", "logger=[]"]


# -- returns -----------------------------------------------------------------------------------
def _episodes() -> tuple[torch.Tensor, ...]:
    """Two episodes of a batch with T = 3 steps: episode 0 terminates after 3 steps, episode 1 is
    truncated (time limit) after 2. Values of one agent: V(s_t) = 10 t + 1 (+ 100 for episode 1)."""
    rewards = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 0.0]]).unsqueeze(-1)
    terminated = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]).unsqueeze(-1)
    filled = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]]).unsqueeze(-1)
    values = torch.tensor([[1.0, 11.0, 21.0, 31.0], [101.0, 111.0, 121.0, 131.0]]).unsqueeze(-1)
    return rewards, values, terminated, filled


def test_gae_bootstraps_a_truncation_and_not_a_termination() -> None:
    rewards, values, terminated, filled = _episodes()
    g, lam = 0.9, 0.5
    adv, ret = gae(rewards, values, terminated, filled, g, lam)
    # episode 0: the last step terminates (no V(s_3)); deltas r_t + g V_{t+1} - V_t
    d0 = [1 + g * 11 - 1, 2 + g * 21 - 11, 3 - 21]
    a0_2 = d0[2]
    a0_1 = d0[1] + g * lam * a0_2
    a0_0 = d0[0] + g * lam * a0_1
    # episode 1: truncated after step 1: its last delta bootstraps from V(s_2) = 121 (the observation that followed)
    d1 = [4 + g * 111 - 101, 5 + g * 121 - 111]
    a1_1 = d1[1]
    a1_0 = d1[0] + g * lam * a1_1
    expected = torch.tensor([[a0_0, a0_1, a0_2], [a1_0, a1_1, 0.0]]).unsqueeze(-1)
    assert torch.allclose(adv, expected)
    assert torch.allclose(ret[:, :, 0] * filled[:, :3, 0], ((expected + values[:, :3]) * filled[:, :3])[:, :, 0])


def test_nstep_returns_bootstrap_a_truncation_and_not_a_termination() -> None:
    rewards, values, terminated, filled = _episodes()
    g = 0.9
    two = nstep_returns(rewards, values, terminated, filled, g, 2)
    expected = torch.tensor([
        [1 + g * 2 + g**2 * 21, 2 + g * 3, 3.0],  # the termination at step 2 adds no value
        [4 + g * 5 + g**2 * 121, 5 + g * 121, 0.0],  # the truncation after step 1 adds V(s_2)
    ]).unsqueeze(-1)
    assert torch.allclose(two, expected)
    one = nstep_returns(rewards, values, terminated, filled, g, 1)
    assert torch.allclose(one, torch.tensor([[1 + g * 11, 2 + g * 21, 3.0], [4 + g * 111, 5 + g * 121, 0.0]]).unsqueeze(-1))


# -- the update ------------------------------------------------------------------------------------
def _learner_and_batch(tmp_path: Path, *overrides: str):
    cfg = compose(*IPPO, "learner.batch_size=10", *overrides)
    seed_everything(0)
    c = build(cfg, torch.device("cpu"))
    exp = Experiment(cfg, c, tmp_path, StopRequest())
    r = c.runner.run(0)
    c.buffer.insert(r.batch)
    exp.state.t_env += r.steps
    return c, c.buffer.sample(10)


def test_the_ratio_is_one_in_the_first_epoch(tmp_path: Path) -> None:
    """One epoch of one minibatch: the actor has not moved when its loss is computed, so every
    ratio is exactly 1: no clipping, and the KL estimate is 0."""
    c, batch = _learner_and_batch(tmp_path, "learner.epochs=1", "learner.n_minibatch=1")
    stats = c.learner.train(batch, 0)
    assert stats["clip_fraction"] == 0.0 and stats["approx_kl"] == 0.0
    assert {"pg_loss", "value_loss", "entropy", "approx_kl", "clip_fraction", "advantage_mean", "value_mean",
            "actor_grad_norm", "critic_grad_norm", "target_mean"} <= set(stats)


def test_the_clipped_objective_and_the_clip_fraction() -> None:
    """Ratios 1.3, 0.7, 1.1 (and a padded step) with clip 0.2: the first two lie outside the clip range."""
    ratio = torch.tensor([1.3, 0.7, 1.1, 5.0])
    adv = torch.tensor([2.0, 2.0, -1.0, 1.0])
    m = torch.tensor([1.0, 1.0, 1.0, 0.0])
    surr, outside = clipped_surrogate(ratio.log(), adv, 0.2)
    # a positive advantage is capped at (1 + clip) A; a ratio below 1 - clip with A > 0 keeps ratio A (the min)
    assert torch.allclose(surr[:3], torch.tensor([1.2 * 2.0, 0.7 * 2.0, 1.1 * -1.0]))
    assert outside.tolist() == [True, True, False, True]
    assert float(masked_mean(outside.float(), m)) == pytest.approx(2 / 3)


def test_one_epoch_is_the_advantage_actor_critic_gradient() -> None:
    """IA2C and MAA2C are the PPO learner with one epoch: at ratio 1 the clipped objective's gradient is
    A2C's, A grad log pi."""
    torch.manual_seed(0)
    logits = torch.randn(6, 4, requires_grad=True)
    actions = torch.randint(0, 4, (6,))
    adv = torch.randn(6)
    logp = torch.log_softmax(logits, -1).gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    surr, outside = clipped_surrogate(logp - logp.detach(), adv, 0.2)
    (ppo,) = torch.autograd.grad(-surr.mean(), logits, retain_graph=True)
    (a2c,) = torch.autograd.grad(-(adv * logp).mean(), logits)
    assert torch.allclose(ppo, a2c) and not outside.any()


def test_one_update_on_a_fixed_batch_lowers_both_losses(tmp_path: Path) -> None:
    c, batch = _learner_and_batch(tmp_path, "learner.epochs=1")
    learner = c.learner
    first = learner.train(batch, 0)
    critic_before = [p.detach().clone() for p in learner.critic.parameters()]
    second = learner.train(batch, 0)
    assert second["value_loss"] < first["value_loss"]
    assert any(not torch.equal(a, b) for a, b in zip(critic_before, learner.critic.parameters()))
    # the surrogate objective of the policy rises: its loss on the batch, with pi_old fixed, falls
    T = batch.max_t
    with torch.no_grad():
        old_logp, _ = learner.policy_terms(batch, T)
    adv = torch.randn_like(old_logp)
    m = batch["filled"][:, :T].float().unsqueeze(-1).expand_as(old_logp)

    def surrogate_loss() -> torch.Tensor:
        logp, _ = learner.policy_terms(batch, T)
        return -((logp - old_logp).exp() * adv * m).sum() / m.sum()

    loss0 = surrogate_loss()
    learner.actor_opt.zero_grad()
    loss0.backward()
    learner.actor_opt.step()
    assert surrogate_loss().item() < loss0.item()


@pytest.mark.parametrize("algo", ["ippo", "mappo"])
def test_mappo_sees_the_state_and_ippo_the_observation(tmp_path: Path, algo: str) -> None:
    cfg = compose(f"+algo={algo}", "+env=twostep", "logger=[]")
    c = build(cfg, torch.device("cpu"))
    try:
        spec, critic = c.spec, c.learner.critic
        want = {"ippo": spec.obs_dim, "mappo": spec.state_dim}[algo] + spec.n_agents
        assert critic.net.hidden[0].weight.shape[-1] == want
    finally:
        c.runner.close()


def test_gaussian_policy_samples_around_its_mean_and_tests_within_the_bounds() -> None:
    """Continuous actions (point_game: 2-d velocities in [-1, 1]): training actions are the mean plus
    std * noise (stored as drawn: the env clips them), test actions the mean clamped into the bounds,
    and the learner's log-probabilities are the Gaussian's."""
    cfg = compose("+algo=ippo", "+env=point_game", "logger=[]", "runner.n_envs=4", "learner.batch_size=4",
                  "controller.log_std_init=-1.0", "controller.test_greedy=true")
    seed_everything(0)
    c = build(cfg, torch.device("cpu"))
    try:
        ctrl = c.controller.member()
        with torch.no_grad():
            ctrl.agent.net.fc2.bias.fill_(3.0)  # (the GRU actor's output layer) a mean far outside the bounds
        r = c.runner.run(0, test_mode=True)
        acts = r.batch["actions"][r.batch["filled"]]
        assert torch.equal(acts, torch.ones_like(acts))  # the mean 3 + x, clamped to the upper bound 1
        torch.manual_seed(1)
        r = c.runner.run(0)
        acts = r.batch["actions"][r.batch["filled"]]
        assert acts.max() > 1.0  # drawn around the mean (~3), stored unclipped
        assert torch.equal(c.controller.action_log_std(), torch.full((2, 2), -1.0))
        batch = r.batch
        T = batch.max_t
        logp, entropy = c.learner.policy_terms(batch, T)
        mean = c.controller.forward_seq(batch)[:, :T]
        expected = torch.distributions.Normal(mean, torch.exp(torch.tensor(-1.0))).log_prob(batch["actions"][:, :T]).sum(-1)
        assert torch.allclose(logp, expected, atol=1e-5)
        assert torch.allclose(entropy, torch.full_like(entropy, 2 * (0.5 + 0.5 * math.log(2 * math.pi) - 1.0)))
    finally:
        c.runner.close()


def test_chunks_stop_the_recurrent_gradient_at_their_start_and_keep_the_values(tmp_path: Path) -> None:
    """data_chunk_length: a chunk starting at step t0 sees the same actor outputs as the whole episode
    (the hidden state is carried in), but no gradient flows from its steps into the steps before t0."""
    c, batch = _learner_and_batch(tmp_path)  # GRU actor (EPyMARL's preset)
    obs = batch.data["obs"] = batch["obs"].clone().requires_grad_(True)
    cut = torch.ones(batch.batch_size, dtype=torch.long)
    whole = c.controller.forward_seq(batch)
    chunked = c.controller.forward_seq(batch, cut=cut)
    assert torch.allclose(whole, chunked)
    (g_whole,) = torch.autograd.grad(whole[:, 1].sum(), obs)
    (g_cut,) = torch.autograd.grad(chunked[:, 1].sum(), obs)
    assert g_whole[:, 0].abs().sum() > 0 and g_cut[:, 0].abs().sum() == 0  # step 0 reached only without the cut
    assert torch.equal(g_whole[:, 1], g_cut[:, 1])


def test_chunked_minibatches_cover_every_step_once_per_epoch(tmp_path: Path) -> None:
    """Episodes of 2 steps in chunks of 1: 2 units per episode; one epoch of one minibatch is still on
    pi_old (ratio 1), and the update runs with a recurrent critic too."""
    c, batch = _learner_and_batch(tmp_path, "learner.epochs=1", "learner.data_chunk_length=1",
                                  "learner.critic_recurrent=true")
    rows, starts = c.learner._units(batch["filled"].float().unsqueeze(-1), batch.max_t)
    assert rows.tolist() == [b for b in range(10) for _ in range(2)] and starts.tolist() == [0, 1] * 10
    stats = c.learner.train(batch, 0)
    assert stats["clip_fraction"] == 0.0 and stats["approx_kl"] == 0.0


# -- the rollout buffer --------------------------------------------------------------------------------
def test_the_rollout_buffer_hands_each_episode_over_once_newest_last() -> None:
    scheme = {"x": FieldSpec((), torch.float32), "filled": FieldSpec((), torch.bool)}
    buf = RolloutBuffer(RolloutBufferConfig(buffer_size=4), scheme, 2, torch.device("cpu"))

    def episodes(*ids: float) -> EpisodeBatch:
        b = EpisodeBatch.empty(scheme, len(ids), 2, torch.device("cpu"))
        b.data["x"][:] = torch.tensor(ids).unsqueeze(1)
        b.data["filled"][:, :2] = True
        return b

    buf.insert(episodes(1, 2))
    assert not buf.can_sample(4)
    buf.insert(episodes(3, 4))
    assert buf.can_sample(4)
    state = buf.state_dict()
    assert buf.sample(4)["x"][:, 0].tolist() == [1, 2, 3, 4]
    assert not buf.can_sample(1)  # used once
    buf.insert(episodes(5, 6, 7))
    assert buf.sample(3)["x"][:, 0].tolist() == [5, 6, 7]
    again = RolloutBuffer(RolloutBufferConfig(buffer_size=4), scheme, 2, torch.device("cpu"))
    again.load_state_dict(state)
    assert again.sample(4)["x"][:, 0].tolist() == [1, 2, 3, 4]


# -- bad input --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("learner.clip=0",), "learner.clip=0.0 is invalid: must be > 0"),
        (("learner.epochs=0",), "learner.epochs=0 is invalid: must be >= 1"),
        (("learner.n_minibatch=11",), "learner.n_minibatch=11 is invalid: more minibatches than the learner.batch_size=10 "
                                      "episodes they split"),
        (("learner.gae_lambda=1.5",), "learner.gae_lambda=1.5 is invalid: must be in [0.0, 1.0]"),
        (("learner.data_chunk_length=-1",), "learner.data_chunk_length=-1 is invalid: must be >= 0 (0: whole episodes)"),
        (("learner.value_clip=-1",), "learner.value_clip=-1.0 is invalid: must be >= 0 (0: off)"),
        (("learner.critic_input=state",), "learner.critic_input=state is invalid for ippo_learner: its critic is "
                                          "decentralised (obs); a centralised critic is learner=mappo_learner"),
        (("buffer=episode_replay",), "learner=ippo_learner needs the episodes of the latest rollout only (on-policy data): "
                                     "buffer=rollout (got buffer='episode_replay')"),
        (("mixer=qmix",), "learner=ippo_learner needs no mixer (it learns its own joint value networks): mixer=none"),
    ],
)
def test_bad_input_is_refused_before_any_run(tmp_path: Path, overrides: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        train(tmp_path, *IPPO, *overrides)
    assert message in str(e.value)
    assert not (tmp_path / "checkpoints").exists()


def test_mappo_on_an_env_without_a_state_is_refused_before_any_run(tmp_path: Path, store: MlflowClient,
                                                                    exp_name: str) -> None:
    cfg = compose("+algo=mappo", "+env=twostep", f"logger.mlflow.experiment_name={exp_name}")
    cfg.env = {"name": "_stateless_test_env", "t_max": 10, "test_interval": 5, "log_interval": 5}
    with pytest.raises(ConfigError, match="learner=mappo_learner needs an env with a global state: env "
                                          "'_stateless_test_env' has state_dim 0"):
        run(cfg, hydra_dir=tmp_path)
    assert runs_of(store, exp_name) == []  # refused before any run exists


def test_a_value_based_learner_on_the_rollout_buffer_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"learner=q_learner needs a replay buffer of stored episodes \(off-policy "
                                          r"data\): buffer=episode_replay"):
        train(tmp_path, "+algo=qmix", "+env=twostep", "buffer=rollout", "logger=[]")


# -- slow: learning and resuming ----------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("algo", ["ippo", "mappo"])
@pytest.mark.parametrize("seed", [0, 1])
def test_the_two_step_game_is_solved(tmp_path: Path, algo: str, seed: int) -> None:
    """The QMIX paper's two-step game: the optimal joint policy earns 8 (IQL and VDN settle on 7); the
    policy's mode (greedy test episodes) is the optimum."""
    result = train(tmp_path, f"+algo={algo}", "+env=twostep", "logger=[]", f"seed={seed}", "t_max=10000",
                   "test_interval=10000", "controller.test_greedy=true")
    assert result.stats["test_return_mean"] == 8.0


RANDOM_POINT_GAME = -26.4  # a uniformly random policy on point_game (envs/point_game.py)


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["ippo", "mappo"])
def test_a_continuous_task_is_learned(tmp_path: Path, algo: str) -> None:
    """point_game, continuous 2-d velocities: the Gaussian policies steer the agents to the target
    (seed 0, 20k steps: IPPO measured -8.2, where a random policy earns -26.4)."""
    result = train(tmp_path, f"+algo={algo}", "+env=point_game", "logger=[]", "t_max=20000", "test_interval=20000",
                   "controller.test_greedy=true")  # the Gaussian's mean
    assert result.stats["test_return_mean"] > RANDOM_POINT_GAME + 10


RANDOM_LBF_5X5 = 0.32  # a uniformly random policy's mean return on Foraging-5x5-2p-1f-v3 in 25 steps (300 episodes)


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["ippo", "mappo"])
def test_a_tiny_lbf_is_learned(tmp_path: Path, algo: str) -> None:
    """Level-Based Foraging on a 5x5 grid with 2 agents and 1 food (25 steps): EPyMARL's presets with
    the parallel runner collect the food in clearly more test episodes after 50k steps than a random
    policy does (a third of them)."""
    result = train(tmp_path, f"+algo={algo}", "+env=lbf", "env.key=lbforaging:Foraging-5x5-2p-1f-v3",
                   "env.episode_limit=25", "logger=[]", "t_max=50000", "test_interval=50000", "test_nepisodes=64")
    assert result.stats["test_return_mean"] > RANDOM_LBF_5X5 + 0.2


RESUME = ["+algo=mappo", "+env=twostep", "runner.n_envs=4", "learner.batch_size=8", "test_nepisodes=4", "t_max=1200", "test_interval=200",
          "log_interval=100"]


@pytest.mark.slow
def test_resume_equals_an_uninterrupted_run_and_runs_are_deterministic(
    tmp_path: Path, store: MlflowClient, exp_name: str
) -> None:
    """A MAPPO run interrupted by SIGINT between updates (the rollout buffer holds 4 of the 8
    episodes of the next update) and resumed logs exactly the metrics of an uninterrupted run and
    ends with the same actor and critic; a second run is identical."""
    exp = f"logger.mlflow.experiment_name={exp_name}"
    full = _run(tmp_path / "full", *RESUME, exp, "run_name=full")
    again = _run(tmp_path / "again", *RESUME, exp, "run_name=again")
    killed = _run(tmp_path / "part", *RESUME, exp, "run_name=part", interrupt_at=500, signum=signal.SIGINT)
    assert killed.status == "KILLED" and 500 <= killed.t_env < 1200
    resumed = _run(tmp_path / "elsewhere", *RESUME, exp, "run_name=part", f"resume={tmp_path / 'part'}")
    assert resumed.status == "FINISHED" and resumed.t_env == full.t_env
    runs = {r.info.run_name: r for r in runs_of(store, exp_name)}
    m_full = _metrics(store, runs["full"].info.run_id)
    assert {"pg_loss", "value_loss", "entropy", "approx_kl", "clip_fraction"} <= set(m_full)
    assert _metrics(store, runs["part"].info.run_id) == m_full
    assert _metrics(store, runs["again"].info.run_id) == m_full
    ckpts = [torch.load(r.checkpoint, weights_only=True) for r in (full, resumed, again)]
    for k in ("agent", "critic"):
        for name, t in ckpts[0]["learner"]["modules"][k].items():
            assert all(torch.equal(t, c["learner"]["modules"][k][name]) for c in ckpts[1:]), name
