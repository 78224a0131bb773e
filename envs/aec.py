"""PettingZoo AEC envs behind the ParallelEnv API that the adapter speaks (``env.aec``).

Two ways to drive an AEC env, chosen in config:

- ``joint``: one env step is one joint decision. Every live agent acts once, in the env's own
  order (``agent_selection``), with the actions the controller chose together from the
  observations before the cycle; the rewards of all the steps of the cycle are summed per agent.
  Right for envs where every agent acts once per round, like RouteRL's day.
- ``turn``: one env step is one agent's turn. Only ``agent_selection`` has available actions;
  the other agents see an all-false action mask (the adapter then offers them only
  ``dead_action``, which is never sent). Right for turn-based games.

Agents that terminate or truncate are removed with ``step(None)``, as PettingZoo requires.
No env package is imported here (it runs in env worker processes).
"""

from __future__ import annotations

from typing import Any

import numpy as np

AEC_MODES = ("joint", "turn")


def is_aec(env: Any) -> bool:
    """An AEC env: it has last() and observe() (a ParallelEnv has neither; agent_selection cannot
    be read before the first reset)."""
    return callable(getattr(env, "last", None)) and callable(getattr(env, "observe", None))


class AECAsParallel:
    """The ParallelEnv API over an AEC env, in ``joint`` or ``turn`` mode."""

    def __init__(self, env: Any, mode: str) -> None:
        if mode not in AEC_MODES:
            raise ValueError(f"AEC mode {mode!r} is invalid: must be one of {', '.join(AEC_MODES)}")
        self.aec, self.mode = env, mode
        self.possible_agents = list(env.possible_agents)
        self.metadata = getattr(env, "metadata", {})

    # -- spaces and attributes the adapter reads ------------------------------------------------------
    def observation_space(self, agent: str) -> Any:
        return self.aec.observation_space(agent)

    def action_space(self, agent: str) -> Any:
        return self.aec.action_space(agent)

    @property
    def agents(self) -> list[str]:
        return list(self.aec.agents)

    @property
    def state_space(self) -> Any:
        return self.aec.state_space

    def state(self) -> Any:
        return self.aec.state()

    @property
    def unwrapped(self) -> Any:
        return getattr(self.aec, "unwrapped", self.aec)

    def close(self) -> None:
        self.aec.close()

    # -- episode --------------------------------------------------------------------------------------
    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        self.aec.reset(seed=seed, options=options)
        self._drop_done({}, {})
        return self._observe({})

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        env = self.aec
        rewards = dict.fromkeys(env.agents, 0.0)
        done: dict[str, tuple[bool, bool, Any, dict]] = {}  # agents removed this step: flags, last obs and info
        if self.mode == "turn":
            if env.agents:
                self._step(actions.get(env.agent_selection), rewards)
        else:
            acted: set[str] = set()
            while env.agents and env.agent_selection not in acted:
                agent = env.agent_selection
                acted.add(agent)
                self._step(actions.get(agent), rewards)
                self._drop_done(rewards, done)
        self._drop_done(rewards, done)
        terms = {a: bool(env.terminations.get(a, False)) for a in env.agents}
        truncs = {a: bool(env.truncations.get(a, False)) for a in env.agents}
        for a, (term, trunc, _, _) in done.items():
            terms[a], truncs[a] = term, trunc
        obs, infos = self._observe(done)
        return obs, rewards, terms, truncs, infos

    def _step(self, action: Any, rewards: dict[str, float]) -> None:
        self.aec.step(action)
        for a, r in self.aec.rewards.items():
            rewards[a] = rewards.get(a, 0.0) + float(r)

    def _drop_done(self, rewards: dict[str, float], done: dict[str, tuple[bool, bool, Any, dict]]) -> None:
        """Remove agents that are done (PettingZoo wants step(None) for them, one at a time),
        keeping their flags, last observation and info."""
        env = self.aec
        while env.agents:
            a = env.agent_selection
            term, trunc = bool(env.terminations.get(a)), bool(env.truncations.get(a))
            if not (term or trunc):
                break
            done[a] = (term, trunc, env.observe(a), dict(env.infos.get(a, {})))
            self._step(None, rewards)

    def _observe(self, done: dict[str, tuple[bool, bool, Any, dict]]) -> tuple[dict, dict]:
        env = self.aec
        obs = {a: d[2] for a, d in done.items()}
        infos = {a: d[3] for a, d in done.items()}
        obs.update({a: env.observe(a) for a in env.agents})
        infos.update({a: dict(env.infos.get(a, {})) for a in env.agents})
        if self.mode == "turn":
            active = env.agent_selection if env.agents else None
            for a in env.agents:
                if a == active:
                    continue
                o = obs[a]
                if isinstance(o, dict) and "action_mask" in o:  # masks in observations: zero the copy
                    obs[a] = {**o, "action_mask": np.zeros_like(np.asarray(o["action_mask"]))}
                elif hasattr(self.action_space(a), "n"):  # a Box has no mask: only the active agent's action is sent
                    infos[a]["action_mask"] = np.zeros(int(self.action_space(a).n), dtype=np.int8)
        return obs, infos
