"""Weighted QMIX (OW-QMIX, CW-QMIX; Rashid et al. 2020) on the QTRAN matrix game."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException
from mlflow.tracking import MlflowClient
from omegaconf.errors import ValidationError

from runner.build import build, seed_everything
from runner.errors import ConfigError
from runner.learners.wqmix import Weighting, wqmix_weights
from tests.conftest import compose, runs_of, train
from tests.fakes.stateless_env import NoStateEnv  # noqa: F401 (registers _stateless_test_env)

PAYOFF = [[8.0, -12.0, -12.0], [-12.0, 0.0, 0.0], [-12.0, 0.0, 0.0]]
MATRIX = ["+experiment=wqmix_matrix", "logger=[]"]
ALPHA = 0.1


# -- the weights, by hand ---------------------------------------------------------------------------
def test_weights_of_a_hand_computed_case() -> None:
    # four samples: td = Q_tot - y; the first and third are QMIX's greedy joint action; the central
    # value of the greedy joint action is 1.0 everywhere
    td = torch.tensor([-1.0, 2.0, 0.5, -0.2]).view(1, 4, 1)
    y = torch.tensor([3.0, -1.0, 0.5, 2.0]).view(1, 4, 1)
    greedy = torch.tensor([True, False, True, False]).view(1, 4, 1)
    central = torch.ones(1, 4, 1)
    ow = wqmix_weights(Weighting.ow, ALPHA, td, greedy, y, central).flatten().tolist()
    assert ow == pytest.approx([1.0, ALPHA, ALPHA, 1.0])  # 1 where Q_tot < y (td < 0)
    cw = wqmix_weights(Weighting.cw, ALPHA, td, greedy, y, central).flatten().tolist()
    assert cw == pytest.approx([1.0, ALPHA, 1.0, 1.0])  # greedy, greedy, y=2 > 1; y=-1 < 1 and not greedy: alpha
    # the weighted loss of these four: mean of w * td^2
    ow_loss = (torch.tensor(ow).view(1, 4, 1) * td**2).mean().item()
    assert ow_loss == pytest.approx((1 * 1.0 + ALPHA * 4.0 + ALPHA * 0.25 + 1 * 0.04) / 4)


def _learner(weighting: str, *overrides: str):
    cfg = compose(*MATRIX, f"learner.weighting={weighting}", "runner=parallel", "runner.n_envs=9", "learner.batch_size=9",
                  *overrides)
    seed_everything(0)
    return cfg, build(cfg, torch.device("cpu"))


def _all_joint_actions(c):
    """One batch of the 9 episodes of the matrix game, one per joint action (row-major)."""
    batch = c.runner.run(0).batch
    joint = torch.cartesian_prod(torch.arange(3), torch.arange(3))  # [9, 2]
    batch.data["actions"][:, 0] = joint.view(9, 2, *batch.data["actions"].shape[3:]).to(batch.data["actions"].dtype)
    batch.data["reward"][:, 0] = torch.tensor(PAYOFF).flatten().view_as(batch.data["reward"][:, 0])
    assert batch.data["terminated"][:, 0].all()  # one step: the TD targets are the payoffs
    return batch, joint


@pytest.mark.parametrize("weighting", ["ow", "cw"])
def test_loss_on_every_joint_action_matches_the_tables(weighting: str) -> None:
    """The learner's loss on the 9 joint actions against the value recomputed from its Q tables
    (another code path: the first-step Q-values of agents, mixer and Q-hat* over all joint actions)."""
    cfg, c = _learner(weighting)
    learner = c.learner
    for _ in range(30):  # away from the initial networks, so that the weights differ between entries
        learner.train(_all_joint_actions(c)[0], 0)
    for k in ("central_agent", "central_mixer"):  # the CW comparison uses Q-hat*'s target: sync it
        learner.targets[k].load_state_dict(learner.modules[k].state_dict())
    batch, joint = _all_joint_actions(c)
    p = c.env.q_points()[0]
    tables = learner.q_table(p.obs, p.state, p.avail_actions)
    q_tot, q_central = torch.tensor(tables["q_tot"]), torch.tensor(tables["q_central"])
    greedy = torch.tensor(tables["agent_q"]).argmax(-1)  # QMIX's greedy joint action
    r = torch.tensor(PAYOFF)
    td = q_tot - r
    if weighting == "ow":
        w = torch.where(td < 0, 1.0, ALPHA)
    else:
        is_greedy = torch.zeros(3, 3, dtype=torch.bool)
        is_greedy[greedy[0], greedy[1]] = True
        w = torch.where(is_greedy | (r > q_central[greedy[0], greedy[1]]), 1.0, ALPHA)
    assert (w == 1.0).any() and (w == ALPHA).any(), w  # a case with both weights
    expected_qmix = (w * td**2).mean()
    expected_central = ((q_central - r) ** 2).mean()
    with torch.no_grad():
        loss, stats = learner.loss(batch, 0)
    assert stats["qmix_loss"].item() == pytest.approx(expected_qmix.item(), rel=1e-4)
    assert stats["central_loss"].item() == pytest.approx(expected_central.item(), rel=1e-4)
    assert loss.item() == pytest.approx((expected_qmix + expected_central).item(), rel=1e-4)
    assert stats["w_mean"].item() == pytest.approx(w.mean().item(), rel=1e-5)
    assert joint.shape == (9, 2)


def test_alpha_one_is_plain_regression_on_the_central_targets() -> None:
    _, c = _learner("ow", "learner.w=1.0")
    batch, _ = _all_joint_actions(c)
    with torch.no_grad():
        _, stats = c.learner.loss(batch, 0)
    assert stats["w_mean"].item() == 1.0


@pytest.mark.parametrize(("weighting", "double_q"), [("ow", True), ("cw", True), ("cw", False)])
def test_one_train_step_lowers_the_loss_and_trains_every_network(weighting: str, double_q: bool) -> None:
    _, c = _learner(weighting, f"learner.double_q={str(double_q).lower()}")
    batch, _ = _all_joint_actions(c)
    learner = c.learner
    assert set(learner.modules) == {"agent", "mixer", "central_agent", "central_mixer"}
    assert set(learner.targets) == {"agent", "mixer", "central_agent", "central_mixer"}
    before = {k: [p.detach().clone() for p in m.parameters()] for k, m in learner.modules.items()}
    with torch.no_grad():
        loss0 = learner.loss(batch, 0)[0].item()
    stats = learner.train(batch, 0)
    assert stats["loss"] == pytest.approx(loss0, rel=1e-5)
    assert {"qmix_loss", "central_loss", "w_mean", "central_taken_mean", "q_tot_taken_mean"} <= set(stats)
    with torch.no_grad():
        loss1 = learner.loss(batch, 0)[0].item()
    assert loss1 < loss0
    for k, m in learner.modules.items():
        assert any(not torch.equal(a, b) for a, b in zip(before[k], m.parameters())), k


def test_central_agent_has_its_own_weights() -> None:
    _, c = _learner("ow")
    a = dict(c.learner.modules["agent"].named_parameters())
    b = dict(c.learner.modules["central_agent"].named_parameters())
    assert a.keys() == b.keys()
    assert all(not torch.equal(a[k], b[k]) for k in a)


# -- bad input --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("learner.w=0", "learner.w=0.0 is invalid: must be in (0.0, 1.0]"),
        ("learner.w=1.5", "learner.w=1.5 is invalid: must be in (0.0, 1.0]"),
        ("learner.central_loss=0", "learner.central_loss=0.0 is invalid: must be > 0"),
        ("learner.central_mixing_embed_dim=0", "learner.central_mixing_embed_dim=0 is invalid: must be >= 1"),
    ],
)
def test_wqmix_bad_input(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        train(tmp_path, *MATRIX, override)
    assert message in str(e.value)


def test_unknown_weighting_is_refused_by_hydra() -> None:
    with pytest.raises(ConfigCompositionException) as e:
        compose(*MATRIX, "learner.weighting=pessimistic")
    cause = e.value.__cause__
    assert isinstance(cause, ValidationError)
    assert "Invalid value 'pessimistic', expected one of [ow, cw]" in str(cause)


def test_wqmix_needs_a_joint_mixer(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"learner=wqmix_learner needs a mixer of the agents' Q-values into a joint Q_tot: mixer=qmix, mixer=vdn \(got mixer='none'\)"):
        train(tmp_path, "+algo=ow_qmix", "+env=twostep", "mixer=none", "logger=[]")


@pytest.mark.parametrize("algo", ["ow_qmix", "cw_qmix"])
def test_wqmix_needs_an_env_with_a_state(tmp_path: Path, store: MlflowClient, exp_name: str, algo: str) -> None:
    cfg = compose(f"+algo={algo}", "+env=twostep", "mixer=vdn", f"logger.mlflow.experiment_name={exp_name}")
    cfg.env = {"name": "_stateless_test_env", "t_max": 10, "test_interval": 5, "log_interval": 5}
    from runner.experiment import run

    with pytest.raises(ConfigError, match="learner=wqmix_learner needs an env with a global state"):
        run(cfg, hydra_dir=tmp_path)
    assert runs_of(store, exp_name) == []  # refused before any run exists


# -- learning ---------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("algo", ["ow_qmix", "cw_qmix"])
def test_wqmix_learns_the_optimal_joint_action_of_the_matrix_game(tmp_path: Path, algo: str, seed: int) -> None:
    result = train(tmp_path, *MATRIX, f"algo={algo}", "t_max=4000", f"seed={seed}")
    assert result.stats["test_return_mean"] == 8.0  # greedy (0, 0)
    (table,) = result.q_tables
    q_tot, q_central = torch.tensor(table["q_tot"]), torch.tensor(table["q_central"])
    assert q_tot.argmax().item() == 0  # QMIX's Q_tot is highest at (0, 0)
    assert q_tot[0, 0].item() == pytest.approx(8.0, abs=1.0)  # near the payoff (OW, optimistic, may overshoot)
    assert (q_central - torch.tensor(PAYOFF)).abs().max().item() < 1.5  # Q-hat* learns the payoff


# -- resume and determinism -------------------------------------------------------------------------
@pytest.mark.slow
def test_wqmix_resume_equals_an_uninterrupted_run_and_runs_are_deterministic(
    tmp_path: Path, store: MlflowClient, exp_name: str
) -> None:
    from tests.fakes.interrupt import metrics as _metrics
    from tests.fakes.interrupt import run_until as _run

    base = [*MATRIX[:1], "algo=cw_qmix", "t_max=600", "test_interval=200", "log_interval=100", "test_nepisodes=4",
            "logger=[mlflow]", f"logger.mlflow.experiment_name={exp_name}"]
    full = _run(tmp_path / "full", *base, "run_name=full")
    again = _run(tmp_path / "again", *base, "run_name=again")
    killed = _run(tmp_path / "part", *base, "run_name=part", interrupt_at=300)
    assert killed.status == "KILLED" and 300 <= killed.t_env < 600
    resumed = _run(tmp_path / "elsewhere", *base, "run_name=part", f"resume={tmp_path / 'part'}")
    assert resumed.status == "FINISHED" and resumed.t_env == full.t_env
    runs = {r.info.run_name: r for r in runs_of(store, exp_name)}
    m_full = _metrics(store, runs["full"].info.run_id)
    assert "central_loss" in m_full and "w_mean" in m_full
    assert _metrics(store, runs["again"].info.run_id) == m_full  # same seed, same run
    assert _metrics(store, runs["part"].info.run_id) == m_full  # interrupted + resumed = uninterrupted
    a, b = torch.load(full.checkpoint, weights_only=True), torch.load(resumed.checkpoint, weights_only=True)
    for part in ("modules", "targets"):
        assert set(a["learner"][part]) == {"agent", "mixer", "central_agent", "central_mixer"}
        for k, sd in a["learner"][part].items():
            for name, t in sd.items():
                assert torch.equal(t, b["learner"][part][k][name]), (part, k, name)
    assert full.q_tables == resumed.q_tables == again.q_tables
