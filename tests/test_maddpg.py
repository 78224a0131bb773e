"""MADDPG and MATD3: the deterministic controller, the learner, transition replay and point_game."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from envs.base import EnvSpec
from runner.buffers.episode import EpisodeBatch, base_scheme
from runner.buffers.transitions import TransitionReplayBuffer, TransitionReplayConfig
from runner.build import Components, build, seed_everything, storage_estimate
from runner.config import validate
from runner.controllers.deterministic import DeterministicController, DeterministicControllerConfig
from runner.errors import ConfigError
from runner.experiment import Experiment, StopRequest
from runner.learners.maddpg import MADDPGLearner
from tests.conftest import compose, runs_of, train
from tests.fakes.interrupt import metrics as _metrics
from tests.fakes.interrupt import run_until as _run

# MLP actors on single transitions, learning every 5 env steps: the quick continuous setup
POINT_RUN = ["+env=point_game", "agent=mlp", "buffer=transition_replay", "learner.target_update=soft", "learner.tau=0.01",
             "learner.batch_size=128", "learner.learn_every=5", "learner.actor_lr=0.001", "learner.critic_lr=0.001",
             "learner.standardise_rewards=false", "learner.gamma=0.95"]
POINT = [*POINT_RUN, "logger=[]"]
TWOSTEP = ["+algo=maddpg", "+env=twostep", "agent=mlp", "logger=[]"]


def _filled(overrides: list[str], batch_size: int, tmp_path: Path) -> tuple[Components, EpisodeBatch]:
    """Components built from a config, their buffer filled by training rollouts, and one sample."""
    cfg = compose(*overrides)
    seed_everything(0)
    c = build(cfg, torch.device("cpu"))
    exp = Experiment(cfg, c, tmp_path, StopRequest())
    while not c.buffer.can_sample(batch_size):
        exp.train_iteration()
    return c, c.buffer.sample(batch_size)


def _learner(c: Components) -> MADDPGLearner:
    assert isinstance(c.learner, MADDPGLearner)
    return c.learner


def _constant(net: torch.nn.Module, value: float) -> None:
    """Every weight and bias 0, the output bias ``value``: the critic outputs ``value`` everywhere."""
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        net.out.bias.fill_(value)  # type: ignore[union-attr]


# -- the controller ---------------------------------------------------------------------------------
def _spec(low: float = -2.0, high: float = 3.0) -> EnvSpec:
    return EnvSpec(2, 2, 3, 4, 5, ("a", "b"), continuous=True, action_low=((low, -1.0),) * 2, action_high=((high, 1.0),) * 2)


def _controller(spec: EnvSpec, **kw) -> DeterministicController:
    from modules.agents.mlp import MLPAgentConfig

    cfg = DeterministicControllerConfig(name="deterministic", **kw)
    return DeterministicController(cfg, MLPAgentConfig(name="mlp"), spec, torch.device("cpu"))


def _one_step_batch(spec: EnvSpec, b: int) -> EpisodeBatch:
    batch = EpisodeBatch.empty(base_scheme(spec), b, spec.episode_limit, torch.device("cpu"))
    batch.write(0, obs=torch.randn(b, spec.n_agents, spec.obs_dim) * 5,
                avail_actions=torch.ones(b, spec.n_agents, spec.n_actions, dtype=torch.bool))
    return batch


@pytest.mark.parametrize("noise", ["gaussian", "ou"])
def test_continuous_actions_stay_in_the_bounds_and_test_actions_have_no_noise(noise: str) -> None:
    torch.manual_seed(0)
    spec = _spec()
    ctrl = _controller(spec, noise=noise, noise_start=1.0, noise_finish=0.2, noise_anneal_time=100)
    batch = _one_step_batch(spec, 64)
    ctrl.init_hidden(64)
    a = ctrl.select_actions(batch, 0, 0, test_mode=False)
    assert a.shape == (64, 2, 2) and a.dtype == torch.float32
    low, high = torch.tensor([-2.0, -1.0]), torch.tensor([3.0, 1.0])
    assert (a >= low).all() and (a <= high).all()
    greedy = [ctrl.select_actions(batch, 0, 0, test_mode=True) for _ in range(2)]
    assert torch.equal(greedy[0], greedy[1]) and not torch.equal(greedy[0], a)
    # forward_seq: the same test actions, differentiably, for every step
    seq = ctrl.forward_seq(batch)
    assert seq.requires_grad and torch.allclose(seq[:, 0], greedy[0])
    assert ctrl.exploration_stats(50) == {"noise_scale": pytest.approx(0.6)} and ctrl.epsilon(50) == 0.0
    assert ctrl.exploration_stats(1000) == {"noise_scale": pytest.approx(0.2)}


def test_discrete_actions_are_sampled_from_the_available_ones_and_greedy_in_tests() -> None:
    torch.manual_seed(0)
    spec = EnvSpec(2, 4, 3, 4, 5, ("a", "b"))
    ctrl = _controller(spec)
    batch = _one_step_batch(spec, 256)
    avail = torch.ones(256, 2, 4, dtype=torch.bool)
    avail[:, :, 1] = False
    batch.write(0, avail_actions=avail)
    ctrl.init_hidden(256)
    a = ctrl.select_actions(batch, 0, 0, test_mode=False)
    assert a.dtype == torch.long and (a != 1).all() and len(a.unique()) == 3  # samples, not only the argmax
    logits = ctrl.forward_seq(batch)[:, 0]
    assert (logits[..., 1] <= -1e9).all()
    assert torch.equal(ctrl.select_actions(batch, 0, 0, test_mode=True), logits.argmax(-1))
    assert ctrl.exploration_stats(0) == {}


def test_unbounded_continuous_actions_are_refused_by_the_controller() -> None:
    with pytest.raises(ConfigError) as e:
        _controller(_spec(low=-float("inf")))
    assert "controller=deterministic needs bounded continuous actions" in str(e.value)
    assert "set env.action_bounds=[low, high]" in str(e.value)


# -- the learner ------------------------------------------------------------------------------------
def test_straight_through_gumbel_softmax_gradients_reach_the_actor(tmp_path: Path) -> None:
    c, batch = _filled(TWOSTEP + ["learner.batch_size=8"], 8, tmp_path)
    learner = _learner(c)
    logits = c.controller.forward_seq(batch)[:, :-1]
    policy = learner.policy_joint(logits, batch["avail_actions"][:, :-1])
    assert torch.equal(policy.detach().sum(-1), torch.ones(policy.shape[:-1]))  # hard one-hots forward ...
    assert set(policy.detach().unique().tolist()) == {0.0, 1.0}
    m = batch["filled"][:, :-1].float().unsqueeze(-1)
    loss = learner.actor_loss(batch, learner.stored_joint(batch), m, m.sum() * 2)
    loss.backward()  # ... and soft gradients back to every actor parameter
    grads = [p.grad for p in c.controller.agent.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    learner.critics.zero_grad(set_to_none=True)
    learner._actor_update(batch, learner.stored_joint(batch), m, m.sum() * 2, 0)
    assert all(p.grad is None for p in learner.critics.parameters())  # an actor update leaves the critic alone


@pytest.mark.parametrize(("algo", "expected_next_q"), [("maddpg", 1.0), ("matd3", -2.0)])
def test_the_target_uses_the_twin_critics_minimum(tmp_path: Path, algo: str, expected_next_q: float) -> None:
    """Target critics fixed at 1 and -2 everywhere: MADDPG's one critic bootstraps from 1, MATD3 from
    min(1, -2) = -2; point_game never terminates, so every target is r + 0.95 * that."""
    c, batch = _filled([f"+algo={algo}", *POINT, "learner.batch_size=16"], 16, tmp_path)
    learner = _learner(c)
    assert len(learner.critics) == (2 if algo == "matd3" else 1)
    for net, v in zip(learner.target_critics, (1.0, -2.0)):
        _constant(net, v)
    stats = learner.train(batch, 0, episodes=0)
    expected = batch["reward"][:, 0] + 0.95 * expected_next_q
    assert stats["target_mean"] == pytest.approx(expected.mean().item(), rel=1e-5)


def test_matd3_updates_the_actors_and_targets_every_policy_freq_updates(tmp_path: Path) -> None:
    c, batch = _filled(["+algo=matd3", *POINT, "learner.batch_size=16", "learner.policy_freq=3"], 16, tmp_path)
    learner = _learner(c)

    def snapshot() -> list[torch.Tensor]:
        return [p.detach().clone() for m in (learner.actor, learner.target_actor, learner.target_critics)
                for p in m.parameters()]

    changed, first = [], learner.n_updates  # the rollouts that filled the buffer made updates already
    for _ in range(6):
        before = snapshot()
        critic_before = [p.detach().clone() for p in learner.critics.parameters()]
        learner.train(batch, 0, episodes=0)
        changed.append(all(not torch.equal(a, b) for a, b in zip(before, snapshot())))
        assert any(not torch.equal(a, b) for a, b in zip(critic_before, learner.critics.parameters()))  # every update
        if not changed[-1]:
            assert all(torch.equal(a, b) for a, b in zip(before, snapshot()))  # nothing of them moved
    assert changed == [(first + i) % 3 == 0 for i in range(6)]


@pytest.mark.parametrize("algo", ["maddpg", "matd3"])
def test_one_train_step_on_a_fixed_batch_lowers_the_critic_loss(tmp_path: Path, algo: str) -> None:
    c, batch = _filled([f"+algo={algo}", *POINT, "learner.batch_size=64", "learner.target_update=hard"], 64, tmp_path)
    learner = _learner(c)
    first = learner.train(batch, 0, episodes=0)
    assert {"critic_loss", "actor_loss", "q_taken_mean", "target_mean", "critic_grad_norm", "actor_grad_norm"} <= set(first)
    assert all(isinstance(v, float) for v in first.values())
    assert learner.train(batch, 0, episodes=0)["critic_loss"] < first["critic_loss"]


def test_updates_due_counts_env_steps_and_is_checkpointed(tmp_path: Path) -> None:
    cfg = compose("+algo=maddpg", *POINT, "learner.learn_every=10", "learner.updates_per_learn=2")
    c = build(cfg, torch.device("cpu"))
    learner = _learner(c)
    assert [learner.updates_due(s, 1) for s in (25, 3, 2, 9, 1, 40)] == [4, 0, 2, 0, 2, 8]
    state = learner.state_dict()
    assert state["step_clock"] == 80
    again = _learner(build(cfg, torch.device("cpu")))
    again.load_state_dict(state)
    assert [again.updates_due(s, 1) for s in (5, 15)] == [learner.updates_due(s, 1) for s in (5, 15)] == [0, 4]
    once = _learner(build(compose("+algo=maddpg", *POINT, "learner.learn_every=0", "learner.updates_per_learn=3"),
                          torch.device("cpu")))
    assert [once.updates_due(s, 1) for s in (1, 25, 100)] == [3, 3, 3]


@pytest.mark.parametrize("overrides", [
    ("+algo=maddpg", "+env=twostep3", "agent=mlp", "learner.batch_size=4"),
    ("+algo=matd3", *POINT, "env.n_agents=3", "learner.batch_size=16"),
])
def test_agent_groups_learn_only_their_agents_and_see_the_others_actions(tmp_path: Path, overrides: tuple[str, ...]) -> None:
    groups = "groups={learners:[agent_0,agent_1],others:{agents:[agent_2],policy:random}}"
    c, batch = _filled([*overrides, "logger=[]", groups], 16, tmp_path)
    learner = _learner(c)
    assert learner.learn_idx.tolist() == [0, 1] and learner.learns.squeeze(-1).tolist() == [True, True, False]
    stats = learner.train(batch, 0, episodes=0)
    assert all(torch.isfinite(torch.tensor(v)) for v in stats.values())
    # the critic sees agent 2's stored (random) actions: its row of the joint action is not empty
    assert learner.stored_joint(batch)[:, :-1, 2].abs().sum() > 0
    result = train(tmp_path / "run", *overrides, "logger=[]", groups, "t_max=100", "test_interval=50", "test_nepisodes=2")
    assert result.status == "FINISHED" and result.q_tables == []


# -- transition replay --------------------------------------------------------------------------------
def _episodes(spec: EnvSpec, lengths: list[int]) -> EpisodeBatch:
    """Episodes whose every value encodes (episode, step): obs = 100 e + t, actions e + t / 10."""
    batch = EpisodeBatch.empty(base_scheme(spec), len(lengths), spec.episode_limit, torch.device("cpu"))
    for e, n in enumerate(lengths):
        for t in range(n + 1):  # + the bootstrap slot
            batch.data["obs"][e, t] = 100 * e + t
            batch.data["state"][e, t] = -(100 * e + t)
            batch.data["avail_actions"][e, t] = True
            if t < n:
                batch.data["actions"][e, t] = e + t / 10
                batch.data["reward"][e, t] = 10 * e + t
                batch.data["filled"][e, t] = True
        batch.data["terminated"][e, n - 1] = True
    return batch


def test_transition_replay_round_trip() -> None:
    torch.manual_seed(0)
    spec = _spec()
    buf = TransitionReplayBuffer(TransitionReplayConfig(name="transition_replay", buffer_size=6), base_scheme(spec), 5,
                                 torch.device("cpu"))
    buf.insert(_episodes(spec, [3, 2]))
    assert buf.size == 5 and buf.can_sample(5) and not buf.can_sample(6)
    d = buf.storage.data
    assert d["obs"][:5, :, 0, 0].tolist() == [[0, 1], [1, 2], [2, 3], [100, 101], [101, 102]]  # t and t+1
    assert d["state"][:5, 1, 0].tolist() == [-1, -2, -3, -101, -102]
    assert d["actions"][:5, 0, 0, 0].tolist() == pytest.approx([0, 0.1, 0.2, 1, 1.1])
    assert d["reward"][:5].tolist() == [[0, 0], [1, 0], [2, 0], [10, 0], [11, 0]]
    assert d["filled"][:5].tolist() == [[True, False]] * 5
    assert d["terminated"][:5, 0].tolist() == [False, False, True, False, True] and not d["terminated"][:, 1].any()
    s = buf.sample(4)
    assert s.batch_size == 4 and s.max_t == 1 and s["obs"].shape == (4, 2, 2, 3) and s["actions"].shape == (4, 2, 2, 2)
    # the ring: 3 more transitions overwrite the 2 oldest
    buf.insert(_episodes(spec, [3]))
    assert buf.size == 6 and buf.pos == 2
    assert d["obs"][:, 0, 0, 0].tolist() == [1, 2, 2, 100, 101, 0]
    # exact state_dict round trip
    other = TransitionReplayBuffer(TransitionReplayConfig(name="transition_replay", buffer_size=6), base_scheme(spec), 5,
                                   torch.device("cpu"))
    other.load_state_dict(buf.state_dict())
    assert (other.pos, other.size) == (buf.pos, buf.size)
    assert all(torch.equal(v, other.storage.data[k]) for k, v in d.items())
    torch.manual_seed(1)
    a = buf.sample(3)
    torch.manual_seed(1)
    b = other.sample(3)
    assert all(torch.equal(v, b.data[k]) for k, v in a.data.items())


def test_transition_replay_memory_is_counted_per_transition() -> None:
    cfg = compose("+algo=maddpg", *POINT, "buffer.buffer_size=1000")
    spec = _spec()
    scheme = base_scheme(spec)
    est = storage_estimate(cfg, scheme, spec, 1, torch.device("cpu"))
    episodes = storage_estimate(compose("+algo=maddpg", "+env=point_game", "buffer.buffer_size=1000"), scheme, spec, 1,
                                torch.device("cpu"))
    assert est.buffer_bytes * 3 == episodes.buffer_bytes  # 2 slots per transition, 6 per episode of 5 steps


# -- config -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("learner.tau=0",), "learner.tau=0.0 is invalid: must be in (0, 1]"),
        (("learner.gamma=1.5",), "learner.gamma=1.5 is invalid: must be in (0, 1]"),
        (("learner.actor_lr=0",), "learner.actor_lr=0.0 is invalid: must be > 0"),
        (("learner.critic_lr=-0.001",), "learner.critic_lr=-0.001 is invalid: must be > 0"),
        (("learner.policy_freq=0",), "learner.policy_freq=0 is invalid: must be >= 1"),
        (("learner.updates_per_learn=0",), "learner.updates_per_learn=0 is invalid: must be >= 1"),
        (("learner.learn_every=-1",), "learner.learn_every=-1 is invalid: must be >= 0 (0 = once per rollout)"),
        (("learner.target_noise=-0.2",), "learner.target_noise=-0.2 is invalid: must be >= 0"),
        (("learner.reg=-1",), "learner.reg=-1.0 is invalid: must be >= 0"),
        (("controller.noise_start=-0.1",), "controller.noise_start=-0.1 is invalid: must be >= 0"),
        (("controller.noise_anneal_time=-5",), "controller.noise_anneal_time=-5 is invalid: must be >= 0"),
        (("controller.ou_dt=0",), "controller.ou_dt=0.0 is invalid: must be in (0, inf)"),
        (("controller.obs_last_action=true",), "controller.obs_last_action=True is invalid: deterministic actors"),
        (("buffer.buffer_size=0",), "buffer.buffer_size=0 is invalid: must be >= 1"),
        (("mixer=qmix",), "learner=matd3_learner needs no mixer"),
    ],
)
def test_bad_values_are_refused_before_any_run(tmp_path: Path, overrides: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        train(tmp_path, "+algo=matd3", *POINT, *overrides)
    assert message in str(e.value)
    assert not (tmp_path / "checkpoints").exists()


def test_a_recurrent_actor_on_transition_replay_is_refused() -> None:
    with pytest.raises(ConfigError) as e:
        validate(compose("+algo=maddpg", "+env=point_game", "buffer=transition_replay"))
    msg = str(e.value)
    assert "agent=gru needs whole episodes from the buffer (a recurrent network): buffer=episode_replay" in msg
    assert "(got buffer='transition_replay')" in msg


def test_a_q_controller_is_refused_by_the_learner(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="learner=maddpg_learner needs deterministic actors: controller=deterministic"):
        train(tmp_path, *TWOSTEP, "controller=basic")


# -- slow: learning, resuming --------------------------------------------------------------------------
RANDOM_POINT_RETURN = -26.0  # a uniformly random policy on point_game (its docstring; measured -26.6 +- 9)


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["maddpg", "matd3"])
@pytest.mark.parametrize("seed", [0, 1])
def test_point_game_is_learned(tmp_path: Path, algo: str, seed: int) -> None:
    """8,000 env steps (~15 s): the greedy actors earn clearly more than random ones (about -26)."""
    result = train(tmp_path, f"+algo={algo}", *POINT, f"seed={seed}", "t_max=8000", "test_interval=8000",
                   "test_nepisodes=20", "torch_threads=1")
    assert result.stats["test_return_mean"] > RANDOM_POINT_RETURN + 12


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_discrete_maddpg_learns_the_two_step_game(tmp_path: Path, seed: int) -> None:
    """Gumbel-softmax actors on the QMIX paper's two-step game: the greedy joint policy starts at 7 (state
    2A) and learns the optimum 8 (2B, both agents' second action). (On the climbing game MADDPG settles
    on the safe joint action, 5, in 3 of 4 seeds, like the independent learners: no test for it.)"""
    result = train(tmp_path, *TWOSTEP, f"seed={seed}", "t_max=1000", "test_interval=500", "test_nepisodes=10",
                   "torch_threads=1")
    assert result.checkpoint is not None
    curve = torch.load(result.checkpoint, weights_only=True)["loop"]["curves"]["test_return_mean"]
    assert curve[0] == [0, 7.0] and result.stats["test_return_mean"] == 8.0


RESUME = {
    "matd3": ["+algo=matd3", *POINT_RUN, "learner.batch_size=32", "learner.learn_every=10", "controller.noise=ou",
              "runner=parallel", "runner.n_envs=2", "test_nepisodes=2", "t_max=600", "test_interval=100", "log_interval=50"],
    "maddpg": ["+algo=maddpg", "+env=twostep", "agent.hidden_dim=16", "learner.batch_size=8", "runner=parallel",
               "runner.n_envs=4", "test_nepisodes=4", "t_max=600", "test_interval=100", "log_interval=50"],
}


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["maddpg", "matd3"])
def test_resume_equals_an_uninterrupted_run_and_runs_are_deterministic(
    tmp_path: Path, store: MlflowClient, exp_name: str, algo: str
) -> None:
    """A run interrupted by SIGINT and resumed logs exactly the metrics of an uninterrupted one and ends
    with the same weights (actors, critics, targets); a second run is identical."""
    exp = f"logger.mlflow.experiment_name={exp_name}"
    full = _run(tmp_path / "full", *RESUME[algo], exp, "run_name=full")
    again = _run(tmp_path / "again", *RESUME[algo], exp, "run_name=again")
    killed = _run(tmp_path / "part", *RESUME[algo], exp, "run_name=part", interrupt_at=250, signum=signal.SIGINT)
    assert killed.status == "KILLED" and 250 <= killed.t_env < 600
    resumed = _run(tmp_path / "elsewhere", *RESUME[algo], exp, "run_name=part", f"resume={tmp_path / 'part'}")
    assert resumed.status == "FINISHED" and resumed.t_env == full.t_env
    runs = {r.info.run_name: r for r in runs_of(store, exp_name)}
    m_full = _metrics(store, runs["full"].info.run_id)
    assert {"critic_loss", "actor_loss"} <= set(m_full)
    assert _metrics(store, runs["part"].info.run_id) == m_full
    assert _metrics(store, runs["again"].info.run_id) == m_full
    ckpts = [torch.load(r.checkpoint, weights_only=True) for r in (full, resumed, again)]
    for part in ("modules", "targets"):
        for k, tensors in ckpts[0]["learner"][part].items():
            for name, t in tensors.items():
                assert all(torch.equal(t, c["learner"][part][k][name]) for c in ckpts[1:]), (part, k, name)
