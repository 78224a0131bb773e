"""A tiny PettingZoo ParallelEnv with Box (continuous) action spaces that records what it is sent,
so that tests can check what the adapter does to continuous actions (clipping, shapes, padding).

Two agents; ``kind`` chooses their action spaces:

- ``bounded``: agent_0 ``Box(-1, 2, (2,))``, agent_1 ``Box(0, 1, (1, 3))`` (a 2-D shape: it is
  flattened to 3 dims and sent back in its own shape);
- ``unbounded``: agent_0 ``Box(-inf, inf, (2,))``, agent_1 ``Box(0, inf, (3,))`` (finite low,
  infinite high);
- ``mixed``: agent_0 ``Discrete(3)``, agent_1 ``Box(0, 1, (3,))`` (refused by the adapter).

Observations are ``[t, agent index, sum of the agent's last action]``; each agent's reward is the
sum of its action; the episode is truncated after ``max_cycles`` steps. Every step's action dict
is appended to ``received`` (copies, as sent). No state(), no RNG.

Worker processes import its factory by path: use it as ``tests.fakes.box_env.box_env`` only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

SPACES = {
    "bounded": {"agent_0": spaces.Box(-1.0, 2.0, (2,), np.float32), "agent_1": spaces.Box(0.0, 1.0, (1, 3), np.float32)},
    "unbounded": {"agent_0": spaces.Box(-np.inf, np.inf, (2,), np.float32),
                  "agent_1": spaces.Box(0.0, np.inf, (3,), np.float32)},
    "mixed": {"agent_0": spaces.Discrete(3), "agent_1": spaces.Box(0.0, 1.0, (3,), np.float32)},
}


class BoxEnv(ParallelEnv):
    metadata = {"name": "box_v0"}

    def __init__(self, kind: str = "bounded", max_cycles: int = 4) -> None:
        self._act = SPACES[kind]
        self.possible_agents = list(self._act)
        self.agents: list[str] = []
        self.max_cycles = max_cycles
        self.t = 0
        self.received: list[dict[str, Any]] = []
        self._last = dict.fromkeys(self.possible_agents, 0.0)

    def observation_space(self, agent: str) -> Any:
        return spaces.Box(-np.inf, np.inf, (3,), np.float32)

    def action_space(self, agent: str) -> Any:
        return self._act[agent]

    def _obs(self) -> dict[str, np.ndarray]:
        return {a: np.array([self.t, i, self._last[a]], np.float32) for i, a in enumerate(self.possible_agents)}

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        self.agents, self.t = list(self.possible_agents), 0
        self._last = dict.fromkeys(self.possible_agents, 0.0)
        return self._obs(), {a: {} for a in self.agents}

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        self.received.append({a: np.array(x, copy=True) for a, x in actions.items()})
        self.t += 1
        self._last = {a: float(np.sum(actions[a])) for a in self.agents}
        rewards = dict(self._last)
        done = self.t >= self.max_cycles
        terms = dict.fromkeys(self.agents, False)
        truncs = dict.fromkeys(self.agents, done)
        obs, infos = self._obs(), {a: {} for a in self.agents}
        if done:
            self.agents = []
        return obs, rewards, terms, truncs, infos


def box_env(**kwargs: Any) -> BoxEnv:
    """The factory an env config names (``env.factory._target_=tests.fakes.box_env.box_env``)."""
    return BoxEnv(**kwargs)
