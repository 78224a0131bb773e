"""The env adapters (PettingZoo, Gymnasium multi-agent) and the vector envs that step their copies.

Real envs (mpe2, SISL pursuit, LBF, RWARE, the matrix games as PettingZoo envs) and a tiny
ParallelEnv defined here (agents that leave, action masks, dict observations, infos, failures),
stepped in this process (SyncVecEnv) and in worker processes (SubprocVecEnv); then end-to-end
training runs read back from MLflow, and a CLI run interrupted with Ctrl-C and resumed.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from gymnasium import spaces
from mlflow.tracking import MlflowClient
from pettingzoo import ParallelEnv

from envs.adapter import make_copy
from envs.vector import EnvWorkerError, SubprocVecEnv, SyncVecEnv
from runner import registry
from runner.build import typed
from runner.config import ConfigError, validate
from tests.conftest import compose, runs_of, train

TINY = "tests.test_adapters.tiny_env"
"""The tiny env's factory, as a config names it (worker processes import it by this path)."""


# -- a tiny ParallelEnv ------------------------------------------------------------------------
class TinyEnv(ParallelEnv):
    """Two agents, 4 actions, observations ``[t + 1, agent index + 1, seed]`` (never zero).

    - agent_1 leaves after step ``leave_at``: ``leave="agents"`` removes it from ``agents`` (it is
      terminated, PettingZoo style: its last observation comes with that step, then nothing);
      ``leave="obs"`` keeps it in ``agents`` but stops sending its observation.
    - the episode ends at step ``end_at``: terminated, or truncated with ``truncate=True``.
    - action masks: agent_0 may not take action 2 (``infos[agent]["action_mask"]``; agent_1 has
      no mask), or with ``dict_obs=True`` both masks come in ``{"observation", "action_mask"}``.
    - rewards: agent_0 gets 1, agent_1 gets 3 per step; ``infos[agent]["score"]`` is
      seed + 2 * agent index.
    - ``fail_at``: the step with this number (counted over all episodes) raises. No state(), no
      declared time limit, no RNG.
    """

    metadata = {"name": "tiny_v0"}
    MASKS = {"agent_0": [1, 1, 0, 1], "agent_1": [0, 1, 1, 0]}
    REWARDS = {"agent_0": 1.0, "agent_1": 3.0}

    def __init__(self, leave_at: int | None = 1, end_at: int = 3, leave: str = "agents", truncate: bool = False,
                 fail_at: int | None = None, dict_obs: bool = False) -> None:
        self.possible_agents = ["agent_0", "agent_1"]
        self.agents: list[str] = []
        self.leave_at, self.end_at, self.leave, self.truncate = leave_at, end_at, leave, truncate
        self.fail_at, self.dict_obs = fail_at, dict_obs
        self.t, self.total, self.base = 0, 0, 0.0
        self.received: list[dict[str, int]] = []
        box = spaces.Box(-np.inf, np.inf, (3,), np.float32)
        self._obs_space = (spaces.Dict({"observation": box, "action_mask": spaces.Box(0, 1, (4,), np.int8)})
                           if dict_obs else box)

    def observation_space(self, agent: str) -> Any:
        return self._obs_space

    def action_space(self, agent: str) -> Any:
        return spaces.Discrete(4)

    def _observed(self) -> list[str]:
        gone = self.leave == "obs" and self.leave_at is not None and self.t >= self.leave_at
        return [a for a in self.agents if not (gone and a == "agent_1")]

    def _obs(self, agent: str) -> Any:
        o = np.array([self.t + 1, self.possible_agents.index(agent) + 1, self.base], np.float32)
        return {"observation": o, "action_mask": np.array(self.MASKS[agent], np.int8)} if self.dict_obs else o

    def _info(self, agent: str) -> dict[str, Any]:
        info: dict[str, Any] = {"score": self.base + 2 * self.possible_agents.index(agent)}
        if agent == "agent_0" and not self.dict_obs:
            info["action_mask"] = np.array(self.MASKS[agent], np.int8)
        return info

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        if seed is not None:
            self.base = float(seed)
        self.t, self.received = 0, []
        self.agents = list(self.possible_agents)
        return {a: self._obs(a) for a in self.agents}, {a: self._info(a) for a in self.agents}

    def step(self, actions: dict[str, int]) -> tuple[dict, dict, dict, dict, dict]:
        self.t += 1
        self.total += 1
        self.received.append(dict(actions))
        if self.fail_at is not None and self.total >= self.fail_at:
            raise RuntimeError(f"tiny env exploded at step {self.total}")
        acting = list(self.agents)
        assert set(actions) <= set(acting), f"actions for agents that are not there: {actions}"
        leaves = self.leave == "agents" and self.t == self.leave_at
        end = self.t >= self.end_at
        terms = {a: (leaves and a == "agent_1") or (end and not self.truncate) for a in acting}
        truncs = {a: end and self.truncate for a in acting}
        observed = set(self._observed())
        obs = {a: self._obs(a) for a in acting if a in observed}
        infos = {a: self._info(a) for a in acting if a in observed}
        rewards = {a: self.REWARDS[a] for a in acting}
        self.agents = [a for a in acting if not (terms[a] or truncs[a])]
        return obs, rewards, terms, truncs, infos


def tiny_env(**kwargs: Any) -> TinyEnv:
    return TinyEnv(**kwargs)


# -- helpers -----------------------------------------------------------------------------------
def _env_cfg(*overrides: str) -> tuple[Any, Any]:
    cfg = compose("+algo=qmix", *overrides)
    return registry.ENVS.get(cfg.env.name), typed(cfg.env, registry.ENVS)


def _sync(*overrides: str, n: int = 2, seed: int = 0) -> SyncVecEnv:
    env_cls, env_cfg = _env_cfg(*overrides)
    return SyncVecEnv(functools.partial(make_copy, env_cls, env_cfg, seed), n, torch.device("cpu"))


def _subproc(*overrides: str, n: int = 3, workers: int = 2, seed: int = 0) -> SubprocVecEnv:
    env_cls, env_cfg = _env_cfg(*overrides)
    return SubprocVecEnv(functools.partial(make_copy, env_cls, env_cfg, seed), n, torch.device("cpu"), workers,
                         preload=(env_cls.__module__,))


def _tiny(*factory: str, limit: int | None = 10, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Overrides for the tiny env through the pettingzoo adapter; factory: 'key: value' strings."""
    fac = ", ".join([f"_target_: {TINY}", *factory])
    return ("+env=pettingzoo", f"env.factory={{{fac}}}",
            *(() if limit is None else (f"env.episode_limit={limit}",)), *extra)


def _random_available(avail: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    b, n, a = avail.shape
    return torch.multinomial(avail.reshape(b * n, a).float(), 1, generator=gen).view(b, n)


def _fixed_actions(t: int, b: int, n: int, n_actions: int) -> torch.Tensor:
    """Deterministic joint actions that differ per step, copy and agent."""
    return (t + torch.arange(b).view(b, 1) * 2 + torch.arange(n).view(1, n)) % n_actions


def _episode(env: Any, actions_of: Any) -> tuple[list[torch.Tensor], list[Any]]:
    """Reset and step every copy until all have ended; actions_of(t, observation) -> [B, N].
    Returns the reset observation tensors and the step results."""
    ob = env.reset()
    first, results = [ob.obs, ob.state, ob.avail_actions], []
    done = torch.zeros(env.n_envs, dtype=torch.bool)
    for t in range(env.spec.episode_limit):
        res = env.step(actions_of(t, ob))
        results.append(res)
        ob = res.observation
        done |= res.terminated | res.truncated
        if done.all():
            break
    return first, results


def _flat(results: list[Any]) -> list[torch.Tensor]:
    out = []
    for r in results:
        out += [r.observation.obs, r.observation.state, r.observation.avail_actions, r.reward, r.terminated, r.truncated]
    return out


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def _exact(msg: str) -> str:
    return f"^{re.escape(msg)}$"


def _invalid(*errors: str) -> str:
    """validate()'s message for these errors, as a regex."""
    return _exact("invalid config:\n  " + "\n  ".join(errors))


def _end_step(results: list[Any], copy: int) -> int:
    """1-based step at which a copy's episode ended."""
    for t, r in enumerate(results, 1):
        if r.terminated[copy] or r.truncated[copy]:
            return t
    raise AssertionError(f"copy {copy} did not end in {len(results)} steps")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead but still has a pid: read its state
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def _our_shm_files() -> set[str]:
    shm = Path("/dev/shm")
    return {p.name for p in shm.glob(f"hymarl-{os.getpid()}-*")} if shm.is_dir() else set()


# -- 1. real envs: shapes, masks, state ---------------------------------------------------------
# preset: (n_agents, obs_dim, state_dim, n_actions, episode_limit, state is env.state())
PRESETS = {
    "pz_simple_spread": (3, 18, 54, 5, 25, True),
    "pz_simple_reference": (2, 21, 42, 50, 25, True),
    "pz_simple_speaker_listener": (2, 11 + 2, 3 + 11, 5, 25, True),
    "pz_pursuit": (8, 7 * 7 * 3, 16 * 16 * 3, 5, 500, True),
    "lbf": (2, 15, 30, 6, 50, False),
    "rware": (2, 71, 142, 5, 500, False),
}


@pytest.mark.parametrize("preset", list(PRESETS))
def test_random_rollouts_of_the_presets_follow_the_contract(preset: str) -> None:
    n_agents, obs_dim, state_dim, n_actions, limit, env_state = PRESETS[preset]
    env = _sync(f"+env={preset}", n=2)
    try:
        assert (env.spec.n_agents, env.spec.obs_dim, env.spec.state_dim, env.spec.n_actions,
                env.spec.episode_limit) == (n_agents, obs_dim, state_dim, n_actions, limit)
        assert len(env.spec.agent_ids) == n_agents
        gen = torch.Generator().manual_seed(0)
        ob = env.reset()
        for step in range(7):
            assert ob.obs.shape == (2, n_agents, obs_dim) and ob.obs.dtype == torch.float32
            assert ob.state.shape == (2, state_dim) and ob.state.dtype == torch.float32
            assert ob.avail_actions.shape == (2, n_agents, n_actions) and ob.avail_actions.dtype == torch.bool
            assert ob.avail_actions.any(-1).all(), f"an agent without available actions at step {step}"
            assert torch.isfinite(ob.obs).all() and torch.isfinite(ob.state).all()
            for i, copy in enumerate(env.envs):
                if env_state:
                    want = torch.from_numpy(np.asarray(copy.env.state(), np.float32).reshape(-1))
                else:  # the agents' observations, concatenated
                    want = ob.obs[i].reshape(-1)
                assert torch.equal(ob.state[i], want), f"copy {i}, step {step}"
            res = env.step(_random_available(ob.avail_actions, gen))
            assert res.reward.shape == (2,) and res.reward.dtype == torch.float32
            assert torch.isfinite(res.reward).all()
            assert res.terminated.dtype == torch.bool and res.truncated.dtype == torch.bool
            assert not (res.terminated | res.truncated).any()  # no preset ends within 7 random steps
            ob = res.observation
        assert not torch.equal(ob.obs[0], ob.obs[1]), "the two copies are seeded differently"
    finally:
        env.close()


# -- 2. heterogeneous agents -----------------------------------------------------------------
def test_speaker_listener_pads_observations_flags_kinds_and_masks_extra_actions() -> None:
    import mpe2.simple_speaker_listener_v4 as sl

    env = _sync("+env=pz_simple_speaker_listener", n=2, seed=5)
    try:
        assert env.spec.agent_ids == ("speaker_0", "listener_0") and env.spec.obs_dim == 11 + 2
        raws = [sl.parallel_env(max_cycles=25, continuous_actions=False) for _ in range(2)]
        raw_obs = [r.reset(seed=5 + i)[0] for i, r in enumerate(raws)]  # copy i is seeded with seed + i
        ob = env.reset()
        gen = torch.Generator().manual_seed(1)
        for _ in range(4):
            speaker, listener = ob.obs[:, 0], ob.obs[:, 1]
            for i in range(2):
                assert torch.equal(speaker[i, :3], torch.from_numpy(np.float32(raw_obs[i]["speaker_0"])))
                assert torch.equal(listener[i, :11], torch.from_numpy(np.float32(raw_obs[i]["listener_0"])))
            assert (speaker[:, 3:11] == 0).all(), "the speaker's padding is zero"
            assert speaker[:, 11:].tolist() == [[1.0, 0.0]] * 2 and listener[:, 11:].tolist() == [[0.0, 1.0]] * 2
            assert ob.avail_actions[:, 0].tolist() == [[True, True, True, False, False]] * 2
            assert ob.avail_actions[:, 1].all()
            acts = _random_available(ob.avail_actions, gen)
            assert (acts[:, 0] < 3).all()
            ob = env.step(acts).observation
            raw_obs = [r.step({"speaker_0": int(acts[i, 0]), "listener_0": int(acts[i, 1])})[0]
                       for i, r in enumerate(raws)]
    finally:
        env.close()


def test_obs_kind_flag_can_be_turned_off() -> None:
    env = _sync("+env=pz_simple_speaker_listener", "env.obs_kind_flag=false", n=1)
    try:
        assert env.spec.obs_dim == 11
        assert (env.reset().obs[0, 0, 3:] == 0).all()
    finally:
        env.close()


def test_obs_norm_scales_lbf_observations_by_their_bounds() -> None:
    raw, norm = _sync("+env=lbf", n=1), _sync("+env=lbf", "env.obs_norm=true", n=1)
    try:
        a, b = raw.reset(), norm.reset()
        # LBF's observation space is Box(low=-1, high=7 or 4 or 2 per feature): (x - low) / (high - low)
        space = norm.envs[0].env.observation_space("agent_0")
        low, high = torch.tensor(space.low), torch.tensor(space.high)
        assert torch.allclose(b.obs, (a.obs - low) / (high - low))
        assert b.obs.min() >= 0 and b.obs.max() <= 1 and a.obs.max() > 1
        assert torch.allclose(b.state, b.obs.reshape(1, -1))  # the concatenated state is scaled too
    finally:
        raw.close()
        norm.close()


# -- 3. termination vs truncation -------------------------------------------------------------
def test_simple_spread_ends_at_max_cycles_as_truncated() -> None:
    env = _sync("+env=pz_simple_spread", n=2)
    try:
        _, results = _episode(env, lambda t, ob: _fixed_actions(t, 2, 3, 5))
        assert len(results) == 25 == env.spec.episode_limit
        assert [bool(r.truncated.all()) for r in results] == [False] * 24 + [True]
        assert not any(bool(r.terminated.any()) for r in results)
    finally:
        env.close()


def test_the_envs_own_truncation_is_kept_below_episode_limit() -> None:
    # episode_limit 30 > max_cycles 25: simple_spread truncates itself at 25, whatever time_limit says
    env = _sync("+env=pz_simple_spread", "env.episode_limit=30", "env.time_limit=terminated", n=1)
    try:
        _, results = _episode(env, lambda t, ob: _fixed_actions(t, 1, 3, 5))
        assert len(results) == 25 and results[-1].truncated.all() and not results[-1].terminated.any()
    finally:
        env.close()


@pytest.mark.parametrize(("time_limit", "terminated"),
                         [(None, False), ("truncated", False), ("terminated", True), ("env", False)])
def test_lbf_time_limit_counts_as_time_limit_says(time_limit: str | None, terminated: bool) -> None:
    env = _sync("+env=lbf", *([f"env.time_limit={time_limit}"] if time_limit else []), n=2)
    try:
        _, results = _episode(env, lambda t, ob: torch.zeros(2, 2, dtype=torch.long))  # NONE: no food is taken
        assert len(results) == 50
        assert [_end_step(results, i) for i in range(2)] == [50, 50]
        assert results[-1].terminated.tolist() == [terminated] * 2
        assert results[-1].truncated.tolist() == [not terminated] * 2
    finally:
        env.close()


@pytest.mark.parametrize(("overrides", "length"), [
    (("+env=lbf", "env.episode_limit=60", "env.time_limit=terminated"), 50),  # LBF's own limit comes first
    (("+env=rware", "+env.kwargs.max_steps=20"), 20),  # RWARE declares the limit it is given
])
def test_a_gym_envs_own_time_limit_is_a_truncation(overrides: tuple[str, ...], length: int) -> None:
    env = _sync(*overrides, n=2)
    try:
        _, results = _episode(env, lambda t, ob: torch.zeros(2, 2, dtype=torch.long))
        assert [_end_step(results, i) for i in range(2)] == [length, length]
        assert results[-1].truncated.tolist() == [True, True] and results[-1].terminated.tolist() == [False, False]
    finally:
        env.close()


@pytest.mark.parametrize(("time_limit", "terminated"), [("truncated", False), ("terminated", True), ("env", False)])
def test_episode_limit_cuts_an_episode_short(time_limit: str, terminated: bool) -> None:
    env = _sync("+env=pz_simple_spread", "env.episode_limit=7", f"env.time_limit={time_limit}", n=2)
    try:
        assert env.spec.episode_limit == 7
        _, results = _episode(env, lambda t, ob: _fixed_actions(t, 2, 3, 5))
        assert len(results) == 7
        assert not any(bool((r.terminated | r.truncated).any()) for r in results[:-1])
        assert results[-1].terminated.tolist() == [terminated] * 2
        assert results[-1].truncated.tolist() == [not terminated] * 2
        # an ended copy repeats its last observation with reward 0 until the next reset
        last = results[-1].observation
        again = env.step(_fixed_actions(7, 2, 3, 5))
        assert torch.equal(again.observation.obs, last.obs) and torch.equal(again.observation.state, last.state)
        assert again.reward.tolist() == [0.0, 0.0]
        assert not (again.terminated | again.truncated).any()
    finally:
        env.close()


needs_pz_matrix = pytest.mark.skipif(importlib.util.find_spec("envs.pz_matrix") is None,
                                     reason="envs.pz_matrix is not there")


@needs_pz_matrix
@pytest.mark.parametrize(("reward", "scale"), [("mean", 1.0), ("sum", 2.0)])
def test_twostep_as_a_pettingzoo_env_terminates_with_its_returns(reward: str, scale: float) -> None:
    env = _sync("+env=pettingzoo", "env.factory={_target_: envs.pz_matrix.parallel_env, name: twostep}",
                "env.episode_limit=2", f"env.reward={reward}", n=3)
    try:
        assert (env.spec.n_agents, env.spec.n_actions, env.spec.episode_limit) == (2, 2, 2)
        # copy 0: agent_0 picks B, then (B, B) -> 8; copy 1: A -> 7 whatever follows; copy 2: B, then (A, B) -> 1
        script = [torch.tensor([[1, 0], [0, 1], [1, 0]]), torch.tensor([[1, 1], [0, 0], [0, 1]])]
        _, results = _episode(env, lambda t, ob: script[t])
        assert len(results) == 2
        assert (results[0].reward + results[1].reward).tolist() == [8.0 * scale, 7.0 * scale, 1.0 * scale]
        assert not (results[0].terminated | results[0].truncated).any()
        assert results[1].terminated.tolist() == [True] * 3, "the game ends by itself: no bootstrap"
        assert results[1].truncated.tolist() == [False] * 3
    finally:
        env.close()


@pytest.mark.parametrize(("time_limit", "terminated"), [(None, True), ("env", True), ("truncated", False)])
def test_an_env_that_terminates_itself_at_episode_limit(time_limit: str | None, terminated: bool) -> None:
    # time_limit=env (the pettingzoo default) keeps the env's termination; truncated overrides it
    extra = (f"env.time_limit={time_limit}",) if time_limit else ()
    env = _sync(*_tiny("leave_at: null", "end_at: 3", limit=3, extra=extra), n=1)
    try:
        _, results = _episode(env, lambda t, ob: torch.tensor([[0, 1]]))
        assert len(results) == 3
        assert results[-1].terminated.tolist() == [terminated] and results[-1].truncated.tolist() == [not terminated]
    finally:
        env.close()


@pytest.mark.parametrize("time_limit", ["truncated", "terminated"])
def test_an_env_that_truncates_itself_is_truncated(time_limit: str) -> None:
    env = _sync(*_tiny("leave_at: null", "end_at: 3", "truncate: true", limit=10,
                       extra=(f"env.time_limit={time_limit}",)), n=1)
    try:
        _, results = _episode(env, lambda t, ob: torch.tensor([[0, 1]]))
        assert len(results) == 3 and results[-1].truncated.all() and not results[-1].terminated.any()
    finally:
        env.close()


# -- 4. agents that leave, masks, dict observations ---------------------------------------------
@pytest.mark.parametrize("leave", ["agents", "obs"])
def test_an_agent_that_leaves_gets_zero_obs_and_only_the_dead_action(leave: str) -> None:
    env = _sync(*_tiny("leave_at: 1", "end_at: 3", f"leave: {leave}", extra=("env.dead_action=3",)), n=1, seed=7)
    raw = env.envs[0].env
    try:
        ob = env.reset()
        assert env.spec.obs_dim == 3 and env.spec.state_dim == 6 and env.spec.n_actions == 4
        assert ob.obs[0].tolist() == [[1.0, 1.0, 7.0], [1.0, 2.0, 7.0]]
        assert ob.avail_actions[0].tolist() == [[True, True, False, True], [True, True, True, True]]
        with pytest.raises(ValueError, match=_exact(
                f"env 'pettingzoo' ({TINY}): agent 'agent_0' was given unavailable action 2")):
            env.step(torch.tensor([[2, 0]]))
        assert raw.received == [], "the env did not see the refused action"

        res = env.step(torch.tensor([[1, 2]]))
        assert raw.received == [{"agent_0": 1, "agent_1": 2}]
        assert res.observation.obs[0].tolist() == [[2.0, 1.0, 7.0], [0.0, 0.0, 0.0]]
        assert res.observation.state[0].tolist() == [2.0, 1.0, 7.0, 0.0, 0.0, 0.0]
        assert res.observation.avail_actions[0].tolist() == [[True, True, False, True], [False, False, False, True]]
        assert not (res.terminated | res.truncated).any()

        res = env.step(torch.tensor([[3, 3]]))  # agent_1: the dead action
        assert res.observation.obs[0, 1].tolist() == [0.0, 0.0, 0.0]
        assert res.observation.avail_actions[0, 1].tolist() == [False, False, False, True]
        if leave == "agents":  # gone from env.agents: its action is not sent
            assert raw.received[-1] == {"agent_0": 3}
        else:  # still in env.agents, without an observation: it gets the dead action
            assert raw.received[-1] == {"agent_0": 3, "agent_1": 3}
        assert not (res.terminated | res.truncated).any()

        res = env.step(torch.tensor([[0, 3]]))
        assert res.terminated.tolist() == [True] and res.truncated.tolist() == [False], "all agents are gone"
        assert raw.agents == []
        assert res.observation.obs[0].tolist() == [[4.0, 1.0, 7.0], [0.0, 0.0, 0.0]]
    finally:
        env.close()


def test_action_masks_from_dict_observations() -> None:
    env = _sync(*_tiny("leave_at: null", "end_at: 2", "dict_obs: true"), n=2, seed=3)
    try:
        ob = env.reset()
        assert env.spec.obs_dim == 3 and env.spec.state_dim == 6, "the mask is not part of the observation"
        assert ob.obs[:, :, 2].tolist() == [[3.0, 3.0], [4.0, 4.0]]
        masks = [[True, True, False, True], [False, True, True, False]]
        assert ob.avail_actions.tolist() == [masks, masks]
        with pytest.raises(ValueError, match="agent 'agent_1' was given unavailable action 0"):
            env.step(torch.tensor([[0, 0], [0, 1]]))
        res = env.step(torch.tensor([[0, 1], [3, 2]]))
        assert res.observation.avail_actions.tolist() == [masks, masks]
        assert res.observation.obs[:, :, 0].tolist() == [[2.0, 2.0], [2.0, 2.0]]
    finally:
        env.close()


def test_an_agent_whose_mask_is_all_false_gets_the_dead_action() -> None:
    env = _sync(*_tiny("leave_at: null"), n=1)
    env.envs[0].env.MASKS = {**TinyEnv.MASKS, "agent_0": [0, 0, 0, 0]}
    try:
        assert env.reset().avail_actions[0, 0].tolist() == [True, False, False, False]
    finally:
        env.close()


# -- 5. rewards and infos ---------------------------------------------------------------------
@pytest.mark.parametrize(("reward", "expected"), [("sum", [4.0, 1.0, 1.0]), ("mean", [2.0, 1.0, 1.0])])
def test_reward_aggregation(reward: str, expected: list[float]) -> None:
    # both agents act in step 1 (1 + 3), then agent_0 alone
    env = _sync(*_tiny("leave_at: 1", "end_at: 3", extra=(f"env.reward={reward}",)), n=1)
    try:
        _, results = _episode(env, lambda t, ob: torch.tensor([[0, 0]]))
        assert [r.reward.item() for r in results] == expected
    finally:
        env.close()


def test_info_keys_become_per_copy_episode_stats() -> None:
    env = _sync(*_tiny("leave_at: null", "end_at: 2", extra=("env.info_keys=[score]",)), n=2, seed=10)
    try:
        assert env.episode_stats()["score"].tolist() == [0.0, 0.0]  # no episode has ended yet
        _, results = _episode(env, lambda t, ob: torch.tensor([[0, 1], [1, 2]]))
        stats = env.episode_stats()
        assert set(stats) == {"score"}
        # copy i is seeded with 10 + i; agent_k's score is seed + 2k; the stat is their mean
        assert stats["score"].tolist() == [11.0, 12.0] and stats["score"].dtype == torch.float32
        env.reset()
        assert env.episode_stats()["score"].tolist() == [0.0, 0.0], "a new episode has no stats yet"
    finally:
        env.close()
    plain = _sync(*_tiny("leave_at: null", "end_at: 2"), n=1)
    try:
        _episode(plain, lambda t, ob: torch.tensor([[0, 1]]))
        assert plain.episode_stats() == {}
    finally:
        plain.close()


# -- 6. worker processes ----------------------------------------------------------------------
def test_worker_processes_step_exactly_like_this_process() -> None:
    sync = _sync("+env=pz_simple_spread", n=3, seed=4)
    sub = _subproc("+env=pz_simple_spread", n=3, workers=2, seed=4)
    try:
        assert sub.spec == sync.spec and sub.slices == [[0, 1], [2]]
        episodes, rng = [], []
        for _ in range(2):  # two episodes: the copies keep their own RNG streams across resets
            rng.append(sub.get_rng_state())
            first_a, res_a = _episode(sync, lambda t, ob: _fixed_actions(t, 3, 3, 5))
            first_b, res_b = _episode(sub, lambda t, ob: _fixed_actions(t, 3, 3, 5))
            assert len(res_a) == len(res_b) == 25
            assert _same(first_a, first_b) and _same(_flat(res_a), _flat(res_b))
            obs = first_b[0]
            assert not torch.equal(obs[0], obs[1]) and not torch.equal(obs[1], obs[2]), "copy i has seed + i"
            episodes.append(first_b + _flat(res_b))
        assert sub.get_rng_state() == sync.get_rng_state()
        assert not _same(episodes[0], episodes[1])
        sub.set_rng_state(rng[1])  # back to the state before episode 2, through the workers
        first, res = _episode(sub, lambda t, ob: _fixed_actions(t, 3, 3, 5))
        assert _same(first + _flat(res), episodes[1])
    finally:
        sync.close()
        sub.close()


def test_tiny_env_in_a_worker_stats_rng_and_an_exception_with_its_traceback() -> None:
    # the worker imports this module by the factory's dotted path
    env = _subproc(*_tiny("leave_at: null", "end_at: 2", "fail_at: 3", extra=("env.info_keys=[score]",)),
                   n=2, workers=1, seed=10)
    procs = list(env.procs)
    try:
        _, results = _episode(env, lambda t, ob: torch.tensor([[0, 1], [1, 2]]))
        assert len(results) == 2 and results[-1].terminated.tolist() == [True, True]
        assert [r.reward.tolist() for r in results] == [[4.0, 4.0], [4.0, 4.0]]
        assert env.episode_stats()["score"].tolist() == [11.0, 12.0]
        assert env.get_rng_state() == [{"seeded": True, "np_random": None}] * 2
        env.reset()
        with pytest.raises(EnvWorkerError) as info:
            env.step(torch.tensor([[0, 0], [0, 0]]))
        msg = str(info.value)
        assert msg.startswith("env worker 0 (copies [0, 1]) raised RuntimeError: tiny env exploded at step 3\n")
        assert "--- worker traceback ---" in msg and "test_adapters.py" in msg
        assert 'raise RuntimeError(f"tiny env exploded at step {self.total}")' in msg
    finally:
        env.close()
    assert not any(_alive(p.pid) for p in procs)


def test_a_config_error_in_a_worker_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="mixes Discrete and Box action spaces"):
        _subproc("+env=pettingzoo", "env.factory={_target_: tests.fakes.box_env.box_env, kind: mixed}", n=2, workers=2)


def test_a_killed_worker_is_reported_as_dead() -> None:
    env = _subproc("+env=pz_simple_spread", n=2, workers=2)
    procs = list(env.procs)
    try:
        env.reset()
        victim = procs[1]
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(timeout=10)
        with pytest.raises(EnvWorkerError, match=rf"env worker 1 \(pid {victim.pid}, copies \[1\]\) died \(exit code -9\)"):
            env.step(torch.zeros(2, 3, dtype=torch.long))
    finally:
        env.close()
    assert not any(_alive(p.pid) for p in procs)


def test_ctrl_c_does_not_kill_workers_and_close_leaves_nothing_behind() -> None:
    before = _our_shm_files()
    env = _subproc("+env=pz_simple_spread", n=3, workers=2)
    procs = list(env.procs)
    try:
        env.reset()
        assert _our_shm_files() == before, "the shared file is unlinked once every process has it mapped"
        for p in procs:
            os.kill(p.pid, signal.SIGINT)
        time.sleep(0.5)
        assert all(p.is_alive() for p in procs)
        res = env.step(torch.zeros(3, 3, dtype=torch.long))  # the workers still answer
        assert torch.isfinite(res.observation.obs).all() and res.observation.obs.abs().sum() > 0
    finally:
        env.close()
    assert not any(p.is_alive() for p in procs)
    assert not any(_alive(p.pid) for p in procs)
    assert _our_shm_files() == before
    env.close()  # closing twice is harmless


# -- 7. RNG state (checkpoints) ------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["pz_simple_spread", "pz_simple_reference", "pz_pursuit", "lbf", "rware"])
def test_rng_state_reproduces_the_next_episode(preset: str) -> None:
    overrides = (f"+env={preset}", *(["env.episode_limit=5"] if preset != "pz_simple_spread" else []))
    n_agents, n_actions = PRESETS[preset][0], PRESETS[preset][3]

    def acts(t: int, ob: Any) -> torch.Tensor:
        return _fixed_actions(t, 2, n_agents, n_actions)

    env = _sync(*overrides, n=2)
    try:
        ep1 = _episode(env, acts)
        saved = env.get_rng_state()
        assert all(s["np_random"] is not None for s in saved), "the env's RNG stream is saved"
        ep2 = _episode(env, acts)
    finally:
        env.close()
    assert not torch.equal(ep1[0][0], ep2[0][0]), "episode 2 starts elsewhere than episode 1"

    fresh = _sync(*overrides, n=2)
    try:
        fresh.set_rng_state(saved)
        again = _episode(fresh, acts)
    finally:
        fresh.close()
    assert _same(again[0], ep2[0]) and _same(_flat(again[1]), _flat(ep2[1]))

    unrestored = _sync(*overrides, n=2)
    try:
        assert _same(_episode(unrestored, acts)[0], ep1[0]), "without the state, a fresh env replays episode 1"
    finally:
        unrestored.close()


def test_an_rng_state_saved_before_the_first_reset_changes_nothing() -> None:
    def acts(t: int, ob: Any) -> torch.Tensor:
        return _fixed_actions(t, 2, 3, 5)

    a, b = _sync("+env=pz_simple_spread", n=2), _sync("+env=pz_simple_spread", n=2)
    try:
        saved = a.get_rng_state()
        assert [s["seeded"] for s in saved] == [False, False]
        b.set_rng_state(saved)
        for episode in range(3):
            ea, eb = _episode(a, acts), _episode(b, acts)
            assert _same(ea[0], eb[0]) and _same(_flat(ea[1]), _flat(eb[1])), f"episode {episode}"
    finally:
        a.close()
        b.close()


# -- 8. bad input ---------------------------------------------------------------------------------
def test_continuous_actions_stop_a_run_before_it_is_created(tmp_path: Path, store: MlflowClient,
                                                            exp_name: str) -> None:
    with pytest.raises(ConfigError, match="controller=basic needs discrete actions: env 'pz_simple_spread' has continuous"):
        train(tmp_path, "+algo=qmix", "+env=pz_simple_spread", "env.factory.continuous_actions=true",
              "runner=parallel", "runner.n_envs=2", "runner.n_workers=1", f"logger.mlflow.experiment_name={exp_name}")
    assert runs_of(store, exp_name) == []


@pytest.mark.parametrize(("overrides", "error"), [
    (("+env=lbf", "env.key=lbforaging:Nope-v0"), "env.key=lbforaging:Nope-v0 is invalid: Gymnasium has no env 'Nope-v0'."),
    (("+env=pettingzoo", "env.factory={_target_: nosuchpkg.envs.make}"),
     "env.factory._target_=nosuchpkg.envs.make cannot be imported (No module named 'nosuchpkg'): "
     "install the env extras: pip install -e '.[envs]'"),
    (("+env=pz_simple_spread", "env.factory._target_=mpe2.simple_spread_v3.no_such_fn"),
     "env.factory._target_=mpe2.simple_spread_v3.no_such_fn cannot be imported "
     "(module 'mpe2.simple_spread_v3' has no attribute 'no_such_fn')"),
    (("+env=pz_simple_spread", "env.reward=max"), "env.reward=max is invalid: must be one of sum, mean"),
    (("+env=lbf", "env.state=global"), "env.state=global is invalid: must be one of auto, env, concat"),
    (("+env=pz_simple_spread", "env.time_limit=never"),
     "env.time_limit=never is invalid: must be one of truncated, terminated, env"),
    (("+env=pz_simple_spread", "runner=parallel", "runner.n_workers=-1"),
     "runner.n_workers=-1 is invalid: must be >= 0 (0 = in this process)"),
])
def test_bad_env_configs_are_refused_by_validate(overrides: tuple[str, ...], error: str) -> None:
    with pytest.raises(ConfigError, match=_invalid(error)):
        validate(compose("+algo=qmix", *overrides))


def test_an_unknown_gym_key_lists_similar_ids() -> None:
    with pytest.raises(ConfigError) as info:
        validate(compose("+algo=qmix", "+env=lbf", "env.key=lbforaging:Foraging-9x9-nope-v3"))
    head = "invalid config:\n  env.key=lbforaging:Foraging-9x9-nope-v3 is invalid: Gymnasium has no env " \
           "'Foraging-9x9-nope-v3'. Similar ids: "
    msg = str(info.value)
    assert msg.startswith(head)
    similar = msg[len(head):].split(", ")
    assert 1 <= len(similar) <= 8 and all("Foraging" in s for s in similar), similar


@pytest.mark.parametrize(("overrides", "error"), [
    (("+env=lbf", "env.state=env"),
     "env.state=env is invalid: env 'lbf' (lbforaging:Foraging-8x8-2p-3f-v3) has no state() (use state=auto or concat)"),
    (_tiny(limit=None), f"env.episode_limit is required for env 'pettingzoo' ({TINY}): the env does not declare a "
                        "time limit (set env.episode_limit=<max steps per episode>)"),
    (_tiny(extra=("env.dead_action=4",)),
     f"env.dead_action=4 is invalid: env 'pettingzoo' ({TINY}) has agents with only 4 actions"),
])
def test_bad_env_configs_are_refused_when_the_env_is_built(overrides: tuple[str, ...], error: str) -> None:
    cfg = compose("+algo=qmix", *overrides)
    validate(cfg)  # these need the env itself
    env_cls, env_cfg = _env_cfg(*overrides)
    with pytest.raises(ConfigError, match=_exact(error)):
        env_cls.make_single(env_cfg, 0)


def test_the_state_of_an_env_without_state_is_the_concatenated_observations() -> None:
    env = _sync(*_tiny("leave_at: null"), "env.state=concat", n=1)
    try:
        ob = env.reset()
        assert ob.state[0].tolist() == ob.obs[0].reshape(-1).tolist() == [1.0, 1.0, 0.0, 1.0, 2.0, 0.0]
    finally:
        env.close()
    concat = _sync("+env=pz_simple_spread", "env.state=concat", n=1)
    try:
        assert concat.spec.state_dim == 3 * 18
        ob = concat.reset()
        assert torch.equal(ob.state[0], ob.obs[0].reshape(-1))
    finally:
        concat.close()


# -- 9. end to end ----------------------------------------------------------------------------
E2E = ["+algo=qmix", "runner=parallel", "runner.n_envs=2", "t_max=2000", "test_interval=1000", "log_interval=500",
       "test_nepisodes=4", "buffer.buffer_size=64", "learner.batch_size=8"]


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["pz_simple_spread", "lbf"])
def test_qmix_trains_on_an_adapted_env_with_worker_processes(tmp_path: Path, store: MlflowClient, exp_name: str,
                                                             preset: str) -> None:
    train(tmp_path / "run", *E2E, f"+env={preset}", f"logger.mlflow.experiment_name={exp_name}")
    (run,) = runs_of(store, exp_name)
    assert run.info.status == "FINISHED" and run.info.run_name == f"qmix-{preset}-s0"
    assert run.data.tags["env"] == preset and run.data.tags["algo"] == "qmix"
    steps = [m.step for m in store.get_metric_history(run.info.run_id, "test_return_mean")]
    assert len(steps) >= 3 and steps[0] == 0 and steps[-1] >= 2000, steps
    assert run.data.params["runner.n_envs"] == "2"
    assert {"return_mean", "loss", "test_ep_length_mean"} <= set(run.data.metrics)


def _session_processes(sid: int) -> list[int]:
    """Pids of the live processes of a session (the CLI, its forkserver and its env workers)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # fields after the name: state, ppid, pgrp, session
            pids.append(int(stat.parent.name))
    return pids


@pytest.mark.slow
def test_ctrl_c_on_the_cli_with_worker_processes_then_resume(tmp_path: Path, store_uri: str, store: MlflowClient,
                                                             exp_name: str) -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": store_uri}
    args = ["+algo=qmix", "+env=pz_simple_spread", "runner=parallel", "runner.n_envs=2", "runner.n_workers=2",
            "t_max=200000", "test_interval=1000", "log_interval=500", "test_nepisodes=4", "buffer.buffer_size=64",
            "learner.batch_size=8", "progress=false", f"logger.mlflow.experiment_name={exp_name}",
            f"hydra.run.dir={tmp_path / 'run'}"]
    # a session of its own: Ctrl-C in a terminal reaches the whole process group, workers included
    proc = subprocess.Popen([sys.executable, "-m", "runner", *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            if any(r.data.metrics.get("loss") is not None for r in runs_of(store, exp_name)):
                break
            time.sleep(0.5)
        assert proc.poll() is None, proc.communicate()[0]
        workers = [p for p in _session_processes(proc.pid) if p != proc.pid]
        assert len(workers) >= 2, "the env workers (and their forkserver) run in the CLI's session"
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, out
    assert "stop requested: saving a checkpoint" in out
    deadline = time.monotonic() + 15
    while _session_processes(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _session_processes(proc.pid) == [], "no env worker outlives the CLI"
    (run_,) = runs_of(store, exp_name)
    assert run_.info.status == "KILLED"
    ckpts = list((tmp_path / "run" / "checkpoints").glob("step_*.pt"))
    assert len(ckpts) == 1
    stopped_at = int(ckpts[0].stem.split("_")[1])
    assert stopped_at > 0

    res = subprocess.run([sys.executable, "-m", "runner", f"resume={tmp_path / 'run'}", f"t_max={stopped_at + 500}",
                          f"hydra.run.dir={tmp_path / 'run2'}"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    (run_,) = runs_of(store, exp_name)
    assert run_.info.status == "FINISHED" and run_.data.tags["env"] == "pz_simple_spread"
    steps = [m.step for m in store.get_metric_history(run_.info.run_id, "test_return_mean")]
    assert len(steps) == len(set(steps)) and steps[-1] >= stopped_at + 500
