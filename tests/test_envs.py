"""Matrix games: scripted joint policies give the payoffs of the papers, batched and per copy."""

from __future__ import annotations

import pytest
import torch

from envs.matrix import (
    ClimbingConfig,
    ClimbingGame,
    MatrixGame,
    MatrixGameConfig,
    PenaltyConfig,
    PenaltyGame,
    TwoStepConfig,
    TwoStepGame,
)


def _episode(env, joint_actions: list[list[list[int]]]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Play scripted joint actions [step][env][agent]; return total rewards and terminated flags."""
    env.reset()
    total = torch.zeros(env.n_envs)
    terms = []
    for step in joint_actions:
        res = env.step(torch.tensor(step))
        total += res.reward
        terms.append(res.terminated)
    return total, terms


def test_twostep_returns_of_scripted_policies() -> None:
    env = TwoStepGame(TwoStepConfig(name="twostep"), n_envs=4, seed=0, device="cpu")
    # copy 0: A then anything -> 7; copy 1: B then (B, B) -> 8; copy 2: B then (A, B) -> 1; copy 3: B then (A, A) -> 0
    total, terms = _episode(env, [[[0, 1], [1, 0], [1, 1], [1, 0]], [[1, 0], [1, 1], [0, 1], [0, 0]]])
    assert total.tolist() == [7.0, 8.0, 1.0, 0.0]
    assert not terms[0].any() and terms[1].all()


def test_twostep_observations_are_one_hot_states() -> None:
    env = TwoStepGame(TwoStepConfig(name="twostep"), n_envs=2, seed=0, device="cpu")
    ob = env.reset()
    assert ob.obs.shape == (2, 2, 3) and ob.state.shape == (2, 3) and ob.avail_actions.all()
    assert ob.state.tolist() == [[1, 0, 0], [1, 0, 0]]
    ob = env.step(torch.tensor([[0, 0], [1, 0]])).observation
    assert ob.state.tolist() == [[0, 1, 0], [0, 0, 1]]  # agent 1's action picks 2A / 2B
    assert torch.equal(ob.obs[:, 0], ob.state) and torch.equal(ob.obs[:, 1], ob.state)
    ob = env.step(torch.tensor([[0, 0], [0, 0]])).observation
    assert ob.state.abs().sum() == 0  # terminal


def test_finished_copies_pay_nothing_more() -> None:
    env = TwoStepGame(TwoStepConfig(name="twostep"), n_envs=1, seed=0, device="cpu")
    total, _ = _episode(env, [[[1, 0]], [[1, 1]], [[1, 1]]])
    assert total.tolist() == [8.0]


def test_climbing_game_payoffs() -> None:
    env = ClimbingGame(ClimbingConfig(name="climbing"), n_envs=9, seed=0, device="cpu")
    acts = [[[i, j] for i in range(3) for j in range(3)]]
    total, terms = _episode(env, acts)
    assert total.view(3, 3).tolist() == [[11, -30, 0], [-30, 7, 6], [0, 0, 5]]
    assert terms[0].all()


@pytest.mark.parametrize("k", [-100.0, -10.0, 0.0])
def test_penalty_game_payoffs(k: float) -> None:
    env = PenaltyGame(PenaltyConfig(name="penalty", k=k), n_envs=9, seed=0, device="cpu")
    total, _ = _episode(env, [[[i, j] for i in range(3) for j in range(3)]])
    assert total.view(3, 3).tolist() == [[10, 0, k], [0, 2, 0], [k, 0, 10]]


def test_matrix_game_with_three_agents() -> None:
    payoff = torch.arange(8.0).view(2, 2, 2).tolist()
    env = MatrixGame(MatrixGameConfig(name="matrix", payoff=payoff), n_envs=8, seed=0, device="cpu")
    assert (env.spec.n_agents, env.spec.n_actions, env.spec.episode_limit) == (3, 2, 1)
    joint = [[(i >> 2) & 1, (i >> 1) & 1, i & 1] for i in range(8)]
    total, _ = _episode(env, [joint])
    assert total.tolist() == [float(i) for i in range(8)]


def test_q_points_cover_every_state() -> None:
    env = TwoStepGame(TwoStepConfig(name="twostep"), n_envs=1, seed=0, device="cpu")
    assert [p.label for p in env.q_points()] == ["state 1", "state 2A", "state 2B"]
