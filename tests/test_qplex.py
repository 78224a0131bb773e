"""QPLEX (Wang et al., ICLR 2021): the duplex dueling mixer, its learner and the paper's matrix game."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from mlflow.tracking import MlflowClient
from torch import nn

from modules.mixers.qplex import QplexConfig, QplexMixer
from runner.build import build, seed_everything
from runner.errors import ConfigError
from runner.experiment import Experiment, StopRequest
from runner.learners.qplex import QplexLearner
from tests.conftest import compose, runs_of, train
from tests.fakes.interrupt import metrics as _metrics
from tests.fakes.interrupt import run_until as _run

QPLEX = ["+algo=qplex", "+env=twostep", "logger=[]"]
MATRIX = ["+experiment=qplex_matrix", "logger=[]"]
PAYOFF = [[8.0, -12.0, -12.0], [-12.0, 0.0, 0.0], [-12.0, 0.0, 0.0]]


def _fixed_mixer(is_minus_one: bool = True) -> QplexMixer:
    """2 agents, 3 actions, 1 state feature; every network's output set by its last bias:
    w = (2, 3), b = (0.5, -1), one head with |key| = 2, sigmoid(agent) = sigmoid(action) = 0.5, so
    lambda_i = 2 * 0.5 * 0.5 = 0.5 for every joint action."""
    cfg = QplexConfig(name="qplex", n_head=1, adv_hypernet_layers=1, is_minus_one=is_minus_one)
    m = QplexMixer(cfg, n_agents=2, state_dim=1, n_actions=3)
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        m.hyper_w[-1].bias.copy_(torch.tensor([2.0, 3.0]))
        m.hyper_b[-1].bias.copy_(torch.tensor([0.5, -1.0]))
        m.lambdas.keys.biases[0].fill_(2.0)
    return m


def test_mixer_against_a_hand_computed_case() -> None:
    m = _fixed_mixer()
    q, v = torch.tensor([[1.0, -2.0]]), torch.tensor([[3.0, -2.0]])  # agent 0 off its argmax, agent 1 on it
    acts = F.one_hot(torch.tensor([[1, 0]]), 3).float()
    s = torch.ones(1, 1)
    # V_i' = w_i V_i + b_i = (6.5, -7); A_i' = w_i (Q_i - V_i) = (-4, 0); Q_tot = sum V' + sum lambda A'
    assert m(q, s, acts, v).item() == pytest.approx(6.5 - 7.0 + 0.5 * -4.0)
    # greedy actions: Q_tot = sum_i V_i'
    assert m(v, s, acts, v).item() == pytest.approx(6.5 - 7.0)
    # is_minus_one=false: the authors' other form, sum_i Q_i' + sum_i lambda_i A_i' (weights 1 + lambda)
    assert _fixed_mixer(is_minus_one=False)(q, s, acts, v).item() == pytest.approx(2.5 - 7.0 + 0.5 * -4.0)


def test_lambda_depends_on_the_joint_action_and_is_positive() -> None:
    torch.manual_seed(0)
    m = QplexMixer(QplexConfig(name="qplex"), n_agents=3, state_dim=4, n_actions=5)
    s = torch.randn(1, 4).expand(125, -1)
    joint = torch.cartesian_prod(*[torch.arange(5)] * 3)
    lam = m.lambdas(s, F.one_hot(joint, 5).float())
    assert lam.shape == (125, 3) and (lam > 0).all()
    assert lam.std(0).min() > 0  # differs between joint actions


@pytest.mark.parametrize("seed", range(5))
def test_igm_greedy_joint_action_is_the_agents_argmaxes(seed: int) -> None:
    """Over the whole joint table, for random Q_i, states and (scaled-up) random networks: the argmax
    of Q_tot is the tuple of individual argmaxes, and its value is sum_i V_i'."""
    torch.manual_seed(seed)
    n, a, s_dim = 3, 4, 5
    m = QplexMixer(QplexConfig(name="qplex", n_head=4), n_agents=n, state_dim=s_dim, n_actions=a)
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(3.0)
    joint = torch.cartesian_prod(*[torch.arange(a)] * n)  # [a^n, n]
    for _ in range(10):
        agent_q = torch.randn(n, a) * 5
        state = torch.randn(s_dim).expand(len(joint), -1)
        qs = agent_q.gather(1, joint.T).T
        v = agent_q.max(-1).values.expand_as(qs)
        q_tot = m(qs, state, F.one_hot(joint, a).float(), v).squeeze(-1)
        best = int(q_tot.argmax())
        assert joint[best].tolist() == agent_q.argmax(-1).tolist()
        assert q_tot[best].item() == pytest.approx(m.transform(v[:1], state[:1]).sum().item(), rel=1e-5)
        others = torch.ones(len(joint), dtype=torch.bool)
        others[best] = False
        assert (q_tot[others] < q_tot[best]).all()


def test_td_loss_equals_the_squared_error_of_the_joint_table_on_a_one_step_game(tmp_path: Path) -> None:
    """Matrix game: one step, terminal, so the target is the reward and the loss is the mean of
    (Q_tot[a] - payoff[a])^2 over the batch, with Q_tot[a] read off q_table's joint table."""
    cfg = compose(*MATRIX, "learner.batch_size=16")
    seed_everything(0)
    c = build(cfg, torch.device("cpu"))
    exp = Experiment(cfg, c, tmp_path, StopRequest())
    while not c.buffer.can_sample(16):
        exp.train_iteration()
    batch = c.buffer.sample(16)
    learner = c.learner
    assert isinstance(learner, QplexLearner)
    loss, stats, _ = learner.td_loss(batch)
    (point,) = c.env.q_points()
    table = torch.tensor(learner.q_table(point.obs, point.state, point.avail_actions)["q_tot"])
    acts = batch["actions"][:, 0].long()  # [B, N]
    rewards = batch["reward"][:, 0]
    assert torch.equal(rewards, torch.tensor(PAYOFF)[acts[:, 0], acts[:, 1]])
    expected = ((table[acts[:, 0], acts[:, 1]] - rewards) ** 2).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert stats["q_tot_taken_mean"].item() == pytest.approx(table[acts[:, 0], acts[:, 1]].mean().item(), rel=1e-5)


def test_one_train_step_on_a_fixed_batch_lowers_the_loss(tmp_path: Path) -> None:
    cfg = compose(*QPLEX, "learner.batch_size=8")
    seed_everything(0)
    c = build(cfg, torch.device("cpu"))
    exp = Experiment(cfg, c, tmp_path, StopRequest())
    while not c.buffer.can_sample(8):
        exp.train_iteration()
    batch = c.buffer.sample(8)
    before = {k: [p.detach().clone() for p in m.parameters()] for k, m in c.learner.modules.items()}
    loss0 = c.learner.loss(batch, 0)[0].item()
    stats = c.learner.train(batch, 0)
    assert stats["loss"] == pytest.approx(loss0)
    assert {"hit_prob", "q_tot_taken_mean", "target_tot_mean", "td_error_abs"} <= set(stats)
    assert c.learner.loss(batch, 0)[0].item() < loss0
    for k, m in c.learner.modules.items():  # the agents and every part of the mixer learn
        assert any(not torch.equal(a, b) for a, b in zip(before[k], m.parameters())), k
    mixer = c.learner.mixer
    assert isinstance(mixer, QplexMixer)
    for part in (mixer.hyper_w, mixer.hyper_b, mixer.lambdas):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters()), part


def test_a_run_gives_qplex_joint_tables(tmp_path: Path) -> None:
    result = train(tmp_path, *QPLEX, "t_max=100", "test_interval=50", "test_nepisodes=2", "learner.batch_size=4")
    assert result.status == "FINISHED"
    assert [t["state"] for t in result.q_tables] == ["state 1", "state 2A", "state 2B"]
    for t in result.q_tables:
        q_tot = torch.tensor(t["q_tot"])
        assert q_tot.shape == (2, 2)
        greedy = torch.tensor(t["agent_q"]).argmax(-1).tolist()
        assert divmod(int(q_tot.argmax()), 2) == tuple(greedy)  # IGM on the learned table


def test_agent_groups_mix_the_learning_agents_only(tmp_path: Path) -> None:
    overrides = ["+algo=qplex", "+env=twostep3", "logger=[]",
                 "groups={learners:[agent_0,agent_1],others:{agents:[agent_2],policy:random}}"]
    result = train(tmp_path, *overrides, "t_max=60", "test_interval=30", "test_nepisodes=2", "learner.batch_size=4")
    assert result.status == "FINISHED"
    t = result.q_tables[0]
    assert t["agents"] == ["agent_0", "agent_1"] and torch.tensor(t["q_tot"]).shape == (2, 2)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("mixer.n_head=0",), "mixer.n_head=0 is invalid: must be >= 1"),
        (("mixer.adv_hypernet_layers=4",), "mixer.adv_hypernet_layers=4 is invalid: must be 1, 2 or 3"),
        (("mixer.hypernet_embed=0",), "mixer.hypernet_embed=0 is invalid: must be >= 1"),
        (("mixer.adv_hypernet_embed=-1",), "mixer.adv_hypernet_embed=-1 is invalid: must be >= 1"),
        (("learner=q_learner",), "mixer=qplex needs a learner that gives the mixer the joint action and the agents' "
                                 "max Q: learner=qplex_learner (got learner='q_learner')"),
        (("mixer=qmix",), "learner=qplex_learner needs QPLEX's duplex dueling mixer: mixer=qplex (got mixer='qmix')"),
    ],
)
def test_bad_input_is_refused_before_any_run(tmp_path: Path, overrides: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        train(tmp_path, *QPLEX, *overrides)
    assert message in str(e.value)
    assert not (tmp_path / "checkpoints").exists()


def test_the_module_is_a_torch_module_with_the_mixer_contract() -> None:
    assert issubclass(QplexMixer, nn.Module) and QplexMixer.joint and "state" in QplexMixer.requires


# -- slow: learning and resuming ----------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matrix_game_learns_the_optimal_joint_action(tmp_path: Path, seed: int) -> None:
    """The QPLEX paper's matrix game (QTRAN's payoff) with uniform exploration: the greedy joint
    action is (0, 0), payoff 8 (VDN and QMIX learn a suboptimal greedy action here)."""
    result = train(tmp_path, *MATRIX, f"seed={seed}", "t_max=1500", "test_interval=1500")
    assert result.stats["test_return_mean"] == 8.0
    (t,) = result.q_tables
    q_tot = torch.tensor(t["q_tot"])
    assert divmod(int(q_tot.argmax()), 3) == (0, 0)
    assert torch.tensor(t["agent_q"]).argmax(-1).tolist() == [0, 0]
    assert q_tot[0, 0].item() == pytest.approx(8.0, abs=1.5)  # Q_tot of the optimum near its payoff


RESUME = ["+algo=qplex", "+env=twostep", "runner=parallel", "runner.n_envs=4", "test_nepisodes=4",
          "t_max=1200", "test_interval=200", "log_interval=100", "learner.batch_size=8"]


@pytest.mark.slow
def test_resume_equals_an_uninterrupted_run_and_runs_are_deterministic(
    tmp_path: Path, store: MlflowClient, exp_name: str
) -> None:
    """tests/test_resume.py's check with qplex: a run interrupted by SIGINT and resumed logs exactly
    the metrics of an uninterrupted run and ends with the same weights; a second run is identical."""
    exp = f"logger.mlflow.experiment_name={exp_name}"
    full = _run(tmp_path / "full", *RESUME, exp, "run_name=full")
    again = _run(tmp_path / "again", *RESUME, exp, "run_name=again")
    killed = _run(tmp_path / "part", *RESUME, exp, "run_name=part", interrupt_at=500, signum=signal.SIGINT)
    assert killed.status == "KILLED" and 500 <= killed.t_env < 1200
    resumed = _run(tmp_path / "elsewhere", *RESUME, exp, "run_name=part", f"resume={tmp_path / 'part'}")
    assert resumed.status == "FINISHED" and resumed.t_env == full.t_env
    runs = {r.info.run_name: r for r in runs_of(store, exp_name)}
    m_full = _metrics(store, runs["full"].info.run_id)
    assert "hit_prob" in m_full and [s for s, _ in m_full["test_return_mean"]] == [0, 200, 400, 600, 800, 1000, 1200]
    assert _metrics(store, runs["part"].info.run_id) == m_full
    assert _metrics(store, runs["again"].info.run_id) == m_full
    ckpts = [torch.load(r.checkpoint, weights_only=True) for r in (full, resumed, again)]
    for k in ("agent", "mixer"):
        for name, t in ckpts[0]["learner"]["modules"][k].items():
            assert all(torch.equal(t, c["learner"]["modules"][k][name]) for c in ckpts[1:]), name
    assert full.q_tables == resumed.q_tables == again.q_tables
