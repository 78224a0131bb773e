"""PettingZoo AEC envs through the adapter: joint mode equals the ParallelEnv of the same game,
turn mode offers actions to the agent whose turn it is only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from runner.config import ConfigError, validate
from tests.conftest import compose
from tests.test_adapters import _sync

SPREAD_AEC = ("+env=pz_simple_spread", "env.factory._target_=mpe2.simple_spread_v3.env", "env.aec=joint")
TICTACTOE = ("+env=pettingzoo", "env.factory={_target_: pettingzoo.classic.tictactoe_v3.env}", "env.aec=turn",
             "env.label=tictactoe")


def test_joint_mode_on_an_aec_env_equals_its_parallel_env() -> None:
    """mpe2's simple_spread steps the world after the last agent of a cycle: one joint step of the
    AEC env must give exactly the parallel env's observations, rewards, state and flags."""
    aec = _sync(*SPREAD_AEC, n=2, seed=5)
    par = _sync("+env=pz_simple_spread", n=2, seed=5)
    try:
        a, p = aec.reset(), par.reset()
        gen = torch.Generator().manual_seed(1)
        for t in range(25):
            assert torch.equal(a.obs, p.obs) and torch.equal(a.state, p.state) and torch.equal(a.avail_actions, p.avail_actions), t
            acts = torch.randint(0, 5, (2, 3), generator=gen)
            ra, rp = aec.step(acts), par.step(acts)
            assert torch.allclose(ra.reward, rp.reward), t
            assert torch.equal(ra.terminated, rp.terminated) and torch.equal(ra.truncated, rp.truncated), t
            a, p = ra.observation, rp.observation
        assert bool(ra.truncated.all())  # max_cycles 25: truncated, as the parallel env says
    finally:
        aec.close()
        par.close()


def test_turn_mode_lets_only_the_active_agent_act() -> None:
    env = _sync(*TICTACTOE, "env.episode_limit=9", n=1, seed=0)
    try:
        assert env.spec.agent_ids == ("player_1", "player_2") and env.spec.n_actions == 9
        ob = env.reset()
        rng = np.random.default_rng(0)
        turns, total = [], 0.0
        for _ in range(9):
            avail = ob.avail_actions[0]
            movers = [i for i in range(2) if bool(avail[i, 1:].any())]
            assert len(movers) == 1  # one player's turn; the other may only pass (dead_action 0)
            mover = movers[0]
            other = 1 - mover
            assert avail[other].tolist() == [True] + [False] * 8
            turns.append(mover)
            choice = int(rng.choice(np.flatnonzero(avail[mover].numpy())))
            acts = torch.zeros(1, 2, dtype=torch.long)
            acts[0, mover] = choice
            res = env.step(acts)
            total += float(res.reward[0])
            ob = res.observation
            if bool(res.terminated[0] | res.truncated[0]):
                break
        assert turns[:2] == [0, 1] and all(turns[i] != turns[i + 1] for i in range(len(turns) - 1))  # they alternate
        assert bool(res.terminated[0]) and total == 0.0  # a zero-sum game: the team reward (sum) is 0
    finally:
        env.close()


def test_invalid_aec_mode_is_refused() -> None:
    with pytest.raises(ConfigError, match="env.aec=both is invalid: must be one of joint, turn"):
        validate(compose("+algo=qmix", *SPREAD_AEC[:2], "env.aec=both"))


@pytest.mark.slow
def test_qmix_trains_on_an_aec_env_in_joint_mode(tmp_path) -> None:
    from tests.conftest import train

    res = train(tmp_path / "run", "+algo=qmix", *SPREAD_AEC, "logger=[console]", "t_max=500", "test_interval=250",
                "log_interval=250", "test_nepisodes=2", "learner.batch_size=4")
    assert res.status == "FINISHED" and res.t_env == 500 and np.isfinite(res.stats["test_return_mean"])
