"""QTRAN-base (Son et al. 2019): its three losses by hand, learning, bad input, the paper's matrix game, resume."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException
from mlflow.tracking import MlflowClient
from omegaconf.errors import ValidationError
from torch import nn

from runner.build import build, seed_everything
from runner.errors import ConfigError
from runner.learners.qtran import QTranLearner
from tests.conftest import compose, runs_of, train
from tests.fakes.interrupt import metrics as _metrics
from tests.fakes.interrupt import run_until as _run
from tests.fakes.stateless_env import NoStateEnv

QTRAN = ["+algo=qtran", "+env=matrix", "logger=[]"]


def _qtran(*overrides: str):
    cfg = compose(*QTRAN, *overrides)
    seed_everything(0)
    return cfg, build(cfg, torch.device("cpu"))


# -- the three losses against hand-computed values ------------------------------------------------
class _TableJoint(nn.Module):
    """Q_jt as a lookup table over the 2 agents' joint actions, and a constant V."""

    def __init__(self, table: list[list[float]], v: float) -> None:
        super().__init__()
        self.table, self.v_value = torch.tensor(table), v

    def q(self, states, features, onehot):
        a = onehot.argmax(-1)  # [..., 2]
        return self.table[a[..., 0], a[..., 1]].unsqueeze(-1)

    def v(self, states):
        return torch.full((*states.shape[:-1], 1), self.v_value)

    def forward(self, states, features, onehot):
        return self.q(states, features, onehot), self.v(states)


def _qs(step0: tuple[list[float], list[float]], step1: tuple[list[float], list[float]], b: int) -> torch.Tensor:
    """Agent Q-values [B, 2 steps, 2 agents, 3 actions], the same for every episode."""
    return torch.tensor([list(step0), list(step1)]).unsqueeze(0).expand(b, -1, -1, -1).clone()


def _hand_case(double_q: bool) -> float:
    """The loss of 3 one-step episodes (2 agents, 3 actions), with every network's outputs fixed:

    online Q_1 = [1, 0, -1], Q_2 = [2, 0.5, 0] at step 0 (greedy (0, 0), Q'_jt(greedy) = 3);
    Q_jt = [[5, -1, 0], [-2, 1, 0], [0, 0, 0]], V = 0.5; gamma = 0.5; nothing terminates, so the
    TD target bootstraps from the target Q_jt at the next step's greedy joint action: (1, 2) for
    the online agents (double_q, target Q_jt 3), (0, 1) for the target agents (target Q_jt 7).
    Episodes: (0, 0) with r = 8, (2, 2) with r = 0, and a third that is masked out.
    """
    cfg, c = _qtran("learner.gamma=0.5", "learner.standardise_rewards=false", f"learner.double_q={str(double_q).lower()}",
                    "runner=parallel", "runner.n_envs=3", "learner.batch_size=3")
    learner: QTranLearner = c.learner
    batch = c.runner.run(0).batch
    batch.data["actions"][:, 0] = torch.tensor([[0, 0], [2, 2], [2, 1]])
    batch.data["reward"][:, 0] = torch.tensor([8.0, 0.0, 123.0])
    batch.data["terminated"][:] = False
    batch.data["filled"][2] = False
    online_q = _qs(([1.0, 0.0, -1.0], [2.0, 0.5, 0.0]), ([0.0, 5.0, 0.0], [0.0, 0.0, 5.0]), 3)
    target_q = _qs(([9.0, 9.0, 9.0], [9.0, 9.0, 9.0]), ([5.0, 0.0, 0.0], [0.0, 5.0, 0.0]), 3)
    feats = torch.zeros(3, 2, 2, 1)
    learner.agent_values = lambda b, target=False: (target_q if target else online_q, feats)  # type: ignore[method-assign]
    learner.joint = _TableJoint([[5, -1, 0], [-2, 1, 0], [0, 0, 0]], 0.5)
    learner.targets["joint"] = _TableJoint([[100, 7, 100], [100, 100, 3], [100, 100, 100]], 0.0)
    loss, stats = learner.loss(batch, 0)
    # L_opt: (Q'_jt(greedy) - Q_jt(greedy) + V)^2 = (3 - 5 + 0.5)^2 for both real episodes
    assert stats["opt_loss"] == pytest.approx(2.25)
    # L_nopt: min(Q'_jt(u) - Q_jt(u) + V, 0)^2: (3 - 5 + 0.5)^2 = 2.25 and (-1 + 0 - 0 + 0.5)^2 = 0.25
    assert stats["nopt_loss"] == pytest.approx((2.25 + 0.25) / 2)
    assert stats["v_mean"] == pytest.approx(0.5)
    assert float(loss) == pytest.approx(stats["td_loss"] + 1.0 * 2.25 + 0.1 * 1.25)
    return stats["td_loss"]


def test_td_loss_bootstraps_from_the_target_q_jt_at_the_online_greedy_joint_action() -> None:
    # y = r + 0.5 * 3: (5 - 9.5)^2 = 20.25 and (0 - 1.5)^2 = 2.25
    assert _hand_case(double_q=True) == pytest.approx((20.25 + 2.25) / 2)


def test_td_loss_without_double_q_uses_the_target_agents_greedy_joint_action() -> None:
    # y = r + 0.5 * 7: (5 - 11.5)^2 = 42.25 and (0 - 3.5)^2 = 12.25
    assert _hand_case(double_q=False) == pytest.approx((42.25 + 12.25) / 2)


def test_nopt_loss_is_zero_where_the_condition_holds() -> None:
    """Q'_jt(u) - Q_jt(u) + V >= 0 costs nothing: only violations of the inequality are penalised."""
    cfg, c = _qtran("learner.standardise_rewards=false", "runner=parallel", "runner.n_envs=2", "learner.batch_size=2")
    learner: QTranLearner = c.learner
    batch = c.runner.run(0).batch
    batch.data["actions"][:, 0] = torch.tensor([[0, 0], [1, 1]])
    online = _qs(([1.0, 0.0, -1.0], [2.0, 0.5, 0.0]), ([0.0, 0.0, 0.0], [0.0, 0.0, 0.0]), 2)
    learner.agent_values = lambda b, target=False: (online, torch.zeros(2, 2, 2, 1))  # type: ignore[method-assign]
    learner.joint = _TableJoint([[2.5, 0, 0], [0, -10, 0], [0, 0, 0]], 0.5)  # 3 - 2.5 + 0.5 = 1 and 0.5 + 10 + 0.5
    learner.targets["joint"] = _TableJoint([[0] * 3] * 3, 0.0)
    _, stats = learner.loss(batch, 0)
    assert stats["nopt_loss"] == 0.0
    assert stats["opt_loss"] == pytest.approx(1.0)  # (3 - 2.5 + 0.5)^2


def test_only_l_td_trains_q_jt_and_only_l_opt_l_nopt_train_v() -> None:
    """Q_jt is detached in L_opt and L_nopt (the paper's and PyMARL's choice); V appears only there."""
    cfg, c = _qtran("runner=parallel", "runner.n_envs=8", "learner.batch_size=8", "learner.standardise_rewards=false")
    learner: QTranLearner = c.learner
    batch = c.runner.run(0).batch
    learner.cfg.opt_loss = learner.cfg.nopt_min_loss = 0.0
    loss, _ = learner.loss(batch, 0)  # L_td alone
    loss.backward()
    assert all(p.grad is None or not p.grad.any() for p in learner.joint.V.parameters())
    assert any(p.grad is not None and p.grad.any() for p in learner.joint.Q.parameters())
    learner.optimiser.zero_grad(set_to_none=True)
    learner.cfg.opt_loss, learner.cfg.nopt_min_loss = 1.0, 0.1
    loss_all, _ = learner.loss(batch, 0)
    learner.cfg.opt_loss = learner.cfg.nopt_min_loss = 0.0
    loss_td, _ = learner.loss(batch, 0)
    (loss_all - loss_td).backward()  # the gradients of opt_loss * L_opt + nopt_min_loss * L_nopt
    assert all(p.grad is None or not p.grad.any() for p in learner.joint.Q.parameters())
    assert any(p.grad is not None and p.grad.any() for p in learner.joint.V.parameters())


# -- learning on a fixed batch, shapes, Q tables ---------------------------------------------------
@pytest.mark.parametrize(
    ("agent", "arch"), [("mlp", "qtran_paper"), ("gru", "qtran_paper"), ("mlp", "coma_critic"), ("gru", "coma_critic")]
)
def test_one_train_step_lowers_the_loss_on_a_fixed_batch(agent: str, arch: str) -> None:
    cfg, c = _qtran(f"agent={agent}", f"learner.qtran_arch={arch}", "env.steps=2", "runner=parallel",
                    "runner.n_envs=32", "learner.batch_size=32", "learner.standardise_rewards=false")
    c.buffer.insert(c.runner.run(0).batch)
    batch = c.buffer.sample(32)
    before, _ = c.learner.loss(batch, 0)
    stats = c.learner.train(batch, 0)
    after, _ = c.learner.loss(batch, 0)
    assert {"loss", "td_loss", "opt_loss", "nopt_loss", "v_mean", "q_tot_taken_mean", "grad_norm"} <= set(stats)
    assert stats["loss"] == pytest.approx(before.item(), rel=1e-5)
    assert after.item() < before.item()
    assert set(c.learner.modules) == {"agent", "joint"} and set(c.learner.targets) == {"agent", "joint"}


def test_q_table_has_q_jt_and_the_transformed_q_jt() -> None:
    cfg, c = _qtran()
    (p,) = c.env.q_points()
    t = c.learner.q_table(p.obs, p.state, p.avail_actions)
    agent_q = torch.tensor(t["agent_q"])
    q_jt, q_tr = torch.tensor(t["q_jt"]), torch.tensor(t["q_jt_transformed"])
    assert agent_q.shape == (2, 3) and q_jt.shape == (3, 3) and q_tr.shape == (3, 3)
    assert torch.allclose(q_tr, agent_q[0].unsqueeze(1) + agent_q[1].unsqueeze(0))  # Q'_jt = Q_1 + Q_2
    onehot = torch.eye(3)[torch.tensor([[2, 1]])]  # Q_jt at (2, 1), computed directly
    _, h = c.learner._with_features(c.controller.agent, lambda: c.controller.q_values(p.obs.unsqueeze(0)))
    with torch.no_grad():
        direct = c.learner.joint.q(p.state.unsqueeze(0), h, onehot)
    assert q_jt[2, 1].item() == pytest.approx(direct.item(), abs=1e-6)


# -- bad input -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("learner.opt_loss=-1", "learner.opt_loss=-1.0 is invalid: must be a finite number >= 0"),
        ("learner.nopt_min_loss=-0.1", "learner.nopt_min_loss=-0.1 is invalid: must be a finite number >= 0"),
        ("learner.nopt_min_loss=inf", "learner.nopt_min_loss=inf is invalid: must be a finite number >= 0"),
        ("learner.mixing_embed_dim=0", "learner.mixing_embed_dim=0 is invalid: must be >= 1"),
        ("learner.gamma=0", "learner.gamma=0.0 is invalid"),
        ("mixer=qmix", "learner=qtran_learner needs no mixer (it learns its own joint value networks): mixer=none (got mixer='qmix')"),
    ],
)
def test_qtran_bad_input(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        train(tmp_path, *QTRAN, override)
    assert message in str(e.value)


@pytest.mark.parametrize(
    ("override", "valid"),
    [("learner.qtran_arch=qtran_alt", "[qtran_paper, coma_critic]"), ("learner.network_size=huge", "[small, big]")],
)
def test_qtran_enum_options_are_checked_by_hydra(override: str, valid: str) -> None:
    key, value = override.split("=")
    with pytest.raises(ConfigCompositionException) as e:
        compose(*QTRAN, override)
    assert isinstance(e.value.__cause__, ValidationError)
    assert f"Invalid value '{value}', expected one of {valid}" in str(e.value.__cause__)


def test_qtran_needs_an_env_with_a_state(tmp_path: Path, store, exp_name: str) -> None:
    cfg = compose("+algo=qtran", "+env=matrix", f"logger.mlflow.experiment_name={exp_name}")
    cfg.env = {"name": "_stateless_test_env", "t_max": 10, "test_interval": 5, "log_interval": 5}
    from runner.experiment import run

    NoStateEnv.closed = 0
    with pytest.raises(ConfigError, match="learner=qtran_learner needs an env with a global state"):
        run(cfg, hydra_dir=tmp_path)
    assert NoStateEnv.closed == 1
    assert runs_of(store, exp_name) == []


# -- the paper's matrix game -----------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_qtran_learns_the_optimal_joint_action_of_the_paper_matrix_game(tmp_path: Path, seed: int) -> None:
    """Table 1 of the paper: greedy (0, 0) pays 8, where VDN and QMIX settle on a 0 joint action.
    3,000 of the preset's 10,000 episodes (the greedy policy is optimal from ~2,000 on, seeds 0-4)."""
    result = train(tmp_path, "+experiment=qtran_matrix", "t_max=3000", f"seed={seed}", "logger=[]")
    assert result.stats["test_return_mean"] == 8.0
    (t,) = result.q_tables
    q_jt, agent_q = torch.tensor(t["q_jt"]), torch.tensor(t["agent_q"])
    assert agent_q.argmax(-1).tolist() == [0, 0]  # the agents' greedy actions
    assert q_jt.flatten().argmax().item() == 0  # Q_jt's argmax is the same joint action
    assert q_jt[0, 0].item() == pytest.approx(8.0, abs=0.5)  # Q_jt has learned the payoff there


# -- resume and determinism ------------------------------------------------------------------------
BASE = ["+algo=qtran", "+env=twostep", "agent=gru", "runner=parallel", "runner.n_envs=4", "test_nepisodes=4",
        "t_max=1200", "test_interval=200", "log_interval=100", "learner.batch_size=8"]


@pytest.mark.slow
def test_qtran_resume_equals_an_uninterrupted_run_and_runs_are_deterministic(
    tmp_path: Path, store: MlflowClient, exp_name: str
) -> None:
    exp = f"logger.mlflow.experiment_name={exp_name}"
    full = _run(tmp_path / "full", *BASE, exp, "run_name=full")
    _run(tmp_path / "again", *BASE, exp, "run_name=again")
    killed = _run(tmp_path / "part", *BASE, exp, "run_name=part", interrupt_at=500, signum=signal.SIGINT)
    assert killed.status == "KILLED" and 500 <= killed.t_env < 1200
    resumed = _run(tmp_path / "elsewhere", *BASE, exp, "run_name=part", f"resume={tmp_path / 'part'}")
    assert resumed.status == "FINISHED" and resumed.t_env == full.t_env
    runs = {r.info.run_name: r for r in runs_of(store, exp_name)}
    m_full = _metrics(store, runs["full"].info.run_id)
    assert {"td_loss", "opt_loss", "nopt_loss", "v_mean"} <= set(m_full)
    assert _metrics(store, runs["again"].info.run_id) == m_full  # the same seed, the same run
    assert _metrics(store, runs["part"].info.run_id) == m_full  # interrupted and resumed: every step once, same values
    a, b = torch.load(full.checkpoint, weights_only=True), torch.load(resumed.checkpoint, weights_only=True)
    for k in ("agent", "joint"):
        for part in ("modules", "targets"):
            for name, t in a["learner"][part][k].items():
                assert torch.equal(t, b["learner"][part][k][name]), (part, k, name)
    assert a["learner"]["n_updates"] == b["learner"]["n_updates"]
