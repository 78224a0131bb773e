"""The matrix games as PettingZoo ParallelEnvs: the PettingZoo API tests, known returns, errors."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from envs.base import EnvSpec, Observation, StepResult, VecEnv
from envs.matrix import TwoStepConfig, TwoStepGame
from envs.pz_matrix import make_config, matrix_game_names, parallel_env
from runner.registry import ENVS

ROOT = Path(__file__).resolve().parent.parent

needs_pettingzoo = pytest.mark.skipif(
    importlib.util.find_spec("pettingzoo") is None,
    reason="PettingZoo is not installed (pip install pettingzoo)",
)

THREE_AGENT_PAYOFF = torch.arange(8.0).view(2, 2, 2).tolist()
GAMES = {
    "twostep": ("twostep", {}),
    "climbing": ("climbing", {}),
    "penalty": ("penalty", {"k": -10.0}),
    "matrix3": ("matrix", {"payoff": THREE_AGENT_PAYOFF}),
    "mstep4": ("mstep", {"m": 4}),
}


def _env(game: str):
    name, kwargs = GAMES[game]
    return parallel_env(name, **kwargs)


def _exact(msg: str) -> str:
    return f"^{re.escape(msg)}$"


def _play(env, joint_actions: list[tuple[int, ...]]) -> tuple[float, int, list]:
    """Play scripted joint actions until the episode ends; return (return, steps, step results)."""
    env.reset(seed=0)
    total, results = 0.0, []
    for joint in joint_actions:
        if not env.agents:
            break
        res = env.step({agent: joint[i] for i, agent in enumerate(env.possible_agents)})
        rewards = res[1]
        assert len(set(rewards.values())) == 1, "every agent gets the team reward"
        total += rewards[env.possible_agents[0]]
        results.append(res)
    return total, len(results), results


def _all_episodes(env) -> list[list[tuple[int, ...]]]:
    """Every joint-action sequence of the game, to its end (replayed from reset)."""
    n, a = len(env.possible_agents), env.action_space(env.possible_agents[0]).n
    joints = [tuple(int(x) for x in np.unravel_index(i, (a,) * n)) for i in range(a**n)]
    done, frontier = [], [[]]
    while frontier:
        seq = frontier.pop()
        assert len(seq) <= env.spec.episode_limit, "the episode did not end"
        _, steps, _ = _play(env, seq)
        assert steps == len(seq)
        if seq and not env.agents:
            done.append(seq)
        else:
            frontier.extend(seq + [j] for j in joints)
    return done


@needs_pettingzoo
@pytest.mark.parametrize("game", list(GAMES))
def test_parallel_api_test_passes(game: str) -> None:
    from pettingzoo.test import parallel_api_test

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the API test reports most problems as warnings only
        parallel_api_test(_env(game), num_cycles=50)


@needs_pettingzoo
@pytest.mark.parametrize("game", list(GAMES))
def test_aec_api_test_and_state_test_pass_on_the_converted_env(game: str) -> None:
    """The AEC API test also checks every observation against its space; state_test the state."""
    from pettingzoo.test import api_test, state_test
    from pettingzoo.utils.conversions import parallel_to_aec

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # style hints that follow from the games' encodings: one-step games observe a constant 1,
        # the two-step game's terminal observation is all zeros
        for hint in ("Observation is a single number", "State is a single number",
                     "Observation numpy array is all zeros", "State numpy array is all zeros"):
            warnings.filterwarnings("ignore", message=hint)
        api_test(parallel_to_aec(_env(game)), num_cycles=50)
        state_test(parallel_to_aec(_env(game)), _env(game))


@needs_pettingzoo
@pytest.mark.parametrize(
    ("name", "kwargs", "joint_actions", "expected_return", "expected_steps"),
    [
        ("twostep", {}, [(1, 0), (1, 1)], 8.0, 2),  # B -> state 2B, then (B, B)
        ("twostep", {}, [(0, 1), (1, 0)], 7.0, 2),  # A -> state 2A pays 7 whatever the agents do
        ("twostep", {}, [(1, 1), (0, 1)], 1.0, 2),
        ("mstep", {"m": 10}, [(0, 0)] * 9 + [(1, 1)], 13.0, 10),  # left branch, (1, 1) last pays 4
        ("mstep", {"m": 10}, [(0, 0)] * 10, 10.0, 10),  # left branch, (0, 0) on the last step pays 1
        ("mstep", {"m": 10}, [(1, 1)] * 10, 10.0, 10),  # right branch
        ("mstep", {"m": 10}, [(0, 1)] * 10, 0.0, 1),  # miscoordination ends the episode at once
        ("mstep", {"m": 10}, [(0, 0)] * 3 + [(1, 0)] * 7, 3.0, 4),  # left branch left early
        ("climbing", {}, [(0, 0)], 11.0, 1),
        ("climbing", {}, [(0, 1)], -30.0, 1),
        ("penalty", {"k": -10}, [(0, 2)], -10.0, 1),
        ("penalty", {}, [(2, 2)], 10.0, 1),
        ("matrix", {"payoff": THREE_AGENT_PAYOFF}, [(1, 0, 1)], 5.0, 1),
        ("matrix", {"payoff": [[1, 0], [0, 1]]}, [(0, 1)], 0.0, 1),
    ],
)
def test_scripted_policies_get_the_known_returns(
    name: str, kwargs: dict, joint_actions: list, expected_return: float, expected_steps: int
) -> None:
    env = parallel_env(name, **kwargs)
    total, steps, results = _play(env, joint_actions)
    assert (total, steps) == (expected_return, expected_steps)
    assert env.agents == []
    *_, (obs, rewards, terminations, truncations, infos) = results
    assert all(terminations.values()) and not any(truncations.values())
    for res in results[:-1]:
        assert not any(res[2].values()) and not any(res[3].values())
    assert all(type(r) is float for r in rewards.values())


@needs_pettingzoo
@pytest.mark.parametrize("game", list(GAMES))
def test_agents_are_live_until_the_last_step_then_empty(game: str) -> None:
    env = _env(game)
    assert env.agents == []  # before the first reset
    _, infos = env.reset()
    assert env.agents == env.possible_agents == [f"agent_{i}" for i in range(env.spec.n_agents)]
    steps = 0
    while env.agents and steps <= env.spec.episode_limit:  # bounded: a bug must not hang the test
        live = list(env.agents)
        obs, rewards, terms, truncs, infos = env.step({agent: 0 for agent in env.agents})
        steps += 1
        for d in (obs, rewards, terms, truncs, infos):
            assert list(d) == live  # the agents that acted this step, also on the last step
    assert env.agents == [] and steps <= env.spec.episode_limit
    assert env.step({}) == ({}, {}, {}, {}, {})
    with pytest.raises(ValueError, match="not live"):
        env.step({env.possible_agents[0]: 0})
    env.reset()
    assert env.agents == env.possible_agents


@needs_pettingzoo
@pytest.mark.parametrize("game", list(GAMES))
def test_every_reachable_observation_and_state_is_in_its_space(game: str) -> None:
    env = _env(game)
    obs_space, state_space = env.observation_space("agent_0"), env.state_space
    assert obs_space.shape == (env.spec.obs_dim,) and state_space.shape == (env.spec.state_dim,)
    episodes = _all_episodes(env)
    assert len(episodes) >= env.action_space("agent_0").n ** len(env.possible_agents)
    checked = 0
    for seq in episodes:
        obs, infos = env.reset()
        for joint in seq:
            assert state_space.contains(env.state())
            for agent in env.possible_agents:
                assert obs[agent].dtype == np.float32 and obs_space.contains(obs[agent])
                assert infos[agent]["action_mask"].dtype == np.int8
                assert infos[agent]["action_mask"].tolist() == [1] * env.spec.n_actions
                checked += 1
            obs, _, _, _, infos = env.step({agent: joint[i] for i, agent in enumerate(env.possible_agents)})
        assert state_space.contains(env.state())
        assert all(obs_space.contains(o) for o in obs.values())
    assert checked > 0


@needs_pettingzoo
@pytest.mark.parametrize(("name", "kwargs", "joint"), [("twostep", {}, (1, 1)), ("mstep", {"m": 4}, (0, 0))])
def test_state_and_observations_match_the_batched_env(
    name: str, kwargs: dict, joint: tuple[int, int]
) -> None:
    env = parallel_env(name, **kwargs)
    batched = ENVS.get(name)(make_config(name, **kwargs), n_envs=1, seed=0, device="cpu")
    obs, _ = env.reset()
    ob = batched.reset()
    steps = 0
    while True:
        np.testing.assert_array_equal(env.state(), ob.state[0].numpy())
        for i, agent in enumerate(env.possible_agents):
            np.testing.assert_array_equal(obs[agent], ob.obs[0, i].numpy())
        if not env.agents:
            break
        assert steps < env.spec.episode_limit, "the episode did not end"
        obs, rewards, *_ = env.step(dict(zip(env.possible_agents, joint)))
        res = batched.step(torch.tensor([joint]))
        ob = res.observation
        assert rewards["agent_0"] == float(res.reward[0])
        steps += 1
    assert steps == env.spec.episode_limit


@needs_pettingzoo
def test_returned_arrays_are_copies() -> None:
    env = parallel_env("matrix", payoff=[[1, 0], [0, 1]])  # the batched game reuses its tensors
    obs, infos = env.reset()
    obs["agent_0"][:] = 5.0
    infos["agent_1"]["action_mask"][:] = 0
    env.state()[:] = 7.0
    obs, _, _, _, infos = env.step({"agent_0": 0, "agent_1": 0})
    assert obs["agent_0"].tolist() == [1.0] and infos["agent_1"]["action_mask"].tolist() == [1, 1]
    assert env.state().tolist() == [1.0]


@needs_pettingzoo
def test_spaces_are_cached_and_typed() -> None:
    from gymnasium import spaces

    env = parallel_env("climbing")
    for agent in env.possible_agents:
        assert env.observation_space(agent) is env.observation_space(agent) is env.observation_spaces[agent]
        assert env.action_space(agent) is env.action_space(agent) is env.action_spaces[agent]
        assert isinstance(env.action_space(agent), spaces.Discrete) and env.action_space(agent).n == 3
        box = env.observation_space(agent)
        assert isinstance(box, spaces.Box) and box.dtype == np.float32 and box.shape == (1,)
    assert env.observation_space("agent_0") is not parallel_env("climbing").observation_space("agent_0")
    with pytest.raises(KeyError, match="unknown agent 'agent_2'"):
        env.observation_space("agent_2")


@needs_pettingzoo
def test_reset_with_a_seed_is_deterministic() -> None:
    """Equal seeds give equal episodes of sampled actions, different seeds different ones: it fails
    if ``reset(seed)`` is ignored. The game itself is deterministic: the same actions, the same episode."""
    from gymnasium.utils.env_checker import data_equivalence

    def trajectory(env, seed: int | None) -> list:
        out = [env.reset(seed=seed)]
        while env.agents and len(out) <= env.spec.episode_limit:
            actions = {agent: env.action_space(agent).sample() for agent in env.agents}
            out.append((actions, env.step(actions)))
        return out

    def replay(env, actions: list[dict]) -> list:
        out = [env.reset()]
        for a in actions:
            out.append((a, env.step(a)))
        return out

    def samples(env, seed: int) -> list[list[int]]:
        env.reset(seed=seed)
        return [[int(env.action_space(a).sample()) for a in env.possible_agents] for _ in range(20)]

    env = parallel_env("mstep", m=4)
    first = trajectory(env, 1)
    assert data_equivalence(first, trajectory(env, 1))  # the same env, reset with the same seed
    assert data_equivalence(first, trajectory(parallel_env("mstep", m=4), 1))  # a fresh env
    assert data_equivalence(first, replay(parallel_env("mstep", m=4), [a for a, _ in first[1:]]))
    assert samples(env, 1) == samples(env, 1) == samples(parallel_env("mstep", m=4), 1)
    assert samples(env, 1) != samples(env, 2)  # a seed that were ignored would give the same draws


@needs_pettingzoo
def test_invalid_actions_are_rejected() -> None:
    env = parallel_env("twostep")
    env.reset()
    with pytest.raises(ValueError, match=_exact("no action for live agents ['agent_1']")):
        env.step({"agent_0": 0})
    with pytest.raises(ValueError, match="action 2 of agent_1 is not in Discrete"):
        env.step({"agent_0": 0, "agent_1": 2})
    with pytest.raises(ValueError, match="not live"):
        env.step({"agent_0": 0, "agent_1": 0, "agent_7": 0})
    assert env.step({"agent_0": np.int64(1), "agent_1": np.int64(0)})[1]["agent_0"] == 0.0
    assert env.step({"agent_0": 1, "agent_1": 1})[1]["agent_0"] == 8.0  # the rejected steps changed nothing


class _EndlessGame(VecEnv):
    """Never terminates (the wrapper must truncate at episode_limit); observation 1, state 0.5."""

    def __init__(self) -> None:
        self.n_envs, self.device = 1, torch.device("cpu")
        self.spec = EnvSpec(n_agents=2, n_actions=2, obs_dim=1, state_dim=1, episode_limit=3,
                            agent_ids=("agent_0", "agent_1"))

    def _ob(self) -> Observation:
        avail = torch.ones(1, 2, 2, dtype=torch.bool)
        return Observation(torch.ones(1, 2, 1), torch.full((1, 1), 0.5), avail)

    def reset(self) -> Observation:
        return self._ob()

    def step(self, actions: torch.Tensor) -> StepResult:
        no = torch.zeros(1, dtype=torch.bool)
        return StepResult(self._ob(), torch.ones(1), no, no)


@needs_pettingzoo
def test_episode_is_truncated_at_the_episode_limit() -> None:
    from envs.pz_matrix import MatrixParallelEnv

    env = MatrixParallelEnv(_EndlessGame())
    env.reset()
    flags = []
    while env.agents and len(flags) < 5:
        _, _, terms, truncs, _ = env.step({"agent_0": 0, "agent_1": 1})
        flags.append((any(terms.values()), all(truncs.values())))
    assert flags == [(False, False), (False, False), (False, True)]
    assert env.state().tolist() == [0.5]  # the state, not an observation


@needs_pettingzoo
def test_wrapper_takes_one_copy_and_is_a_parallel_env() -> None:
    from pettingzoo import ParallelEnv

    from envs.pz_matrix import MatrixParallelEnv

    assert isinstance(parallel_env(), MatrixParallelEnv) and issubclass(MatrixParallelEnv, ParallelEnv)
    assert parallel_env().metadata["name"] == "hymarl_matrix_v0" and parallel_env().render() is None
    with pytest.raises(ValueError, match=_exact("MatrixParallelEnv wraps one copy of a game, got n_envs=2")):
        MatrixParallelEnv(TwoStepGame(TwoStepConfig(name="twostep"), n_envs=2, seed=0, device="cpu"))
    with pytest.raises(RuntimeError, match="call reset"):
        parallel_env().state()


def test_matrix_game_names_are_the_registered_matrix_games() -> None:
    assert matrix_game_names() == ["climbing", "matrix", "mstep", "penalty", "twostep"]


@needs_pettingzoo
def test_factory_applies_the_options() -> None:
    env = parallel_env("mstep", m=4)
    assert env.spec.episode_limit == 4 and env.observation_space("agent_0").shape == (4 + 1 + 2,)
    assert _play(env, [(0, 0)] * 3 + [(1, 1)])[:2] == (7.0, 4)
    env = parallel_env("twostep", payoff_2a=3.0)
    assert _play(env, [(0, 0), (0, 0)])[0] == 3.0
    assert len(parallel_env("matrix", payoff=THREE_AGENT_PAYOFF).possible_agents) == 3


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("nope", {}, "unknown matrix game 'nope'. "
                     "Available matrix games: climbing, matrix, mstep, penalty, twostep"),
        ("mstep", {"n": 4}, "unknown option(s) for matrix game 'mstep': n. Valid options: m"),
        ("mstep", {"t_max": 5}, "unknown option(s) for matrix game 'mstep': t_max. Valid options: m"),
        ("twostep", {"z": 1, "a": 2}, "unknown option(s) for matrix game 'twostep': a, z. "
                                      "Valid options: payoff_2a, payoff_2b, bystanders"),
        ("climbing", {"k": -1}, "unknown option(s) for matrix game 'climbing': k. Valid options: steps"),
        ("matrix", {}, "matrix game 'matrix' needs option(s): payoff"),
        ("penalty", {"k": 5}, "matrix game 'penalty': env.k=5 is invalid: the penalty must be <= 0"),
        ("mstep", {"m": 1}, "matrix game 'mstep': env.m=1 is invalid: must be >= 2"),
    ],
)
def test_config_errors_have_clear_messages(name: str, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=_exact(message)):
        make_config(name, **kwargs)
    if importlib.util.find_spec("pettingzoo") is not None:
        with pytest.raises(ValueError, match=_exact(message)):
            parallel_env(name, **kwargs)


_WITHOUT_PETTINGZOO = """
import json, sys
import envs.pz_matrix as pz
out = {"pz_loaded": sorted(m for m in sys.modules if m.split(".")[0] in ("pettingzoo", "gymnasium"))}
from runner.registry import ENVS
out["names"] = ENVS.names()
out["imported_by_registry"] = "envs.pz_matrix" in sys.modules
out["registered_here"] = [name for name, cls, _ in ENVS.items() if cls.__module__ == "envs.pz_matrix"]
sys.modules["pettingzoo"] = None  # as if it were not installed
for what, fn in [("factory", lambda: pz.parallel_env("twostep")), ("class", lambda: pz.MatrixParallelEnv)]:
    try:
        fn()
        out[what] = "no error"
    except ImportError as err:
        out[what] = str(err)
print(json.dumps(out))
"""


def test_module_imports_without_pettingzoo_and_registers_nothing() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _WITHOUT_PETTINGZOO], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["pz_loaded"] == []  # importing the module (as the registry does) loads neither
    assert set(matrix_game_names()) <= set(out["names"]) and out["registered_here"] == []
    for what in ("factory", "class"):
        assert "pip install pettingzoo" in out[what], out
