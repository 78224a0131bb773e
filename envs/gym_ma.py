"""Gymnasium multi-agent envs (LBF, RWARE and envs like them) through one adapter.

These envs use Gymnasium's single-env API with tuple spaces: ``reset() -> (obs tuple, info)``,
``step(actions tuple) -> (obs tuple, rewards list, done, truncated, info)``. :class:`GymParallel`
presents them as a PettingZoo ParallelEnv (agents ``agent_0 .. agent_{n-1}``), and
:class:`envs.adapter.StandardEnv` does the rest. Action masks are read from
``info["action_mask"]`` when the env reports one (per agent); the global state is the
concatenated observations. LBF and RWARE report their time limit as *done*: a done at the time
limit the env declares is passed on as a truncation, and ``env.time_limit`` says how an episode
that reaches ``episode_limit`` counts (truncated by default).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from omegaconf import MISSING

from envs.adapter import AdapterConfig, AdapterEnv, check_adapter_config, declared_episode_limit
from envs.pz import INSTALL_HINT, plain
from runner.errors import ConfigError
from runner.registry import ENVS


@dataclass
class GymnasiumConfig(AdapterConfig):
    key: str = MISSING
    """Gymnasium env id, ``module:EnvId`` to import the module that registers it first
    (e.g. ``lbforaging:Foraging-8x8-2p-3f-v3``, ``rware:rware-tiny-2ag-v2``)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments of gymnasium.make."""


class GymParallel:
    """A Gymnasium tuple-space multi-agent env seen through PettingZoo's ParallelEnv API."""

    metadata: dict[str, Any] = {"name": "gymnasium_multiagent"}

    def __init__(self, env: Any) -> None:
        self.env = env
        n = len(env.action_space)
        self.possible_agents = [f"agent_{i}" for i in range(n)]
        self.agents: list[str] = []
        self._time_limit = declared_episode_limit(env)
        self._t = 0

    @property
    def unwrapped(self) -> Any:
        """The Gymnasium env itself (its ``np_random`` is the RNG stream saved in checkpoints)."""
        return self.env.unwrapped

    def observation_space(self, agent: str) -> Any:
        return self.env.observation_space[self.possible_agents.index(agent)]

    def action_space(self, agent: str) -> Any:
        return self.env.action_space[self.possible_agents.index(agent)]

    def _infos(self, info: dict[str, Any]) -> dict[str, dict[str, Any]]:
        masks = info.get("action_mask")
        if masks is None:  # every agent sees the env's info (one dict, not copied)
            return dict.fromkeys(self.possible_agents, info)
        rest = {k: v for k, v in info.items() if k != "action_mask"}
        return {a: {**rest, "action_mask": masks[i]} for i, a in enumerate(self.possible_agents)}

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        obs, info = self.env.reset(seed=seed, options=options)
        self.agents = list(self.possible_agents)
        self._t = 0
        return dict(zip(self.possible_agents, obs)), self._infos(info)

    def step(self, actions: dict[str, int]) -> tuple[dict, dict, dict, dict, dict]:
        agents = self.possible_agents
        obs, rewards, done, truncated, info = self.env.step(tuple([actions.get(a, 0) for a in agents]))
        if isinstance(rewards, (list, tuple, np.ndarray)):
            rew = {a: float(r) for a, r in zip(agents, rewards)}
        else:  # one team reward: every agent gets it (use env.reward=mean)
            rew = dict.fromkeys(agents, float(rewards))
        dones = _per_agent(done, agents)
        truncs = _per_agent(truncated, agents)
        self._t += 1
        if self._time_limit is not None and self._t >= self._time_limit and all(dones.values()) \
                and not any(truncs.values()):  # the env's own time limit, reported as done
            dones, truncs = dict.fromkeys(agents, False), dict.fromkeys(agents, True)
        if all(dones.values()) or any(truncs.values()):
            self.agents = []
        return dict(zip(agents, obs)), rew, dones, truncs, self._infos(info)

    def close(self) -> None:
        self.env.close()


def _per_agent(flag: Any, agents: list[str]) -> dict[str, bool]:
    """A done/truncated flag (one bool, or one per agent) as a per-agent dict."""
    if isinstance(flag, (list, tuple, np.ndarray)):
        return {a: bool(f) for a, f in zip(agents, flag)}
    return dict.fromkeys(agents, bool(flag))


def _split_key(key: str) -> tuple[str | None, str]:
    module, _, env_id = key.rpartition(":")
    return (module or None), env_id


@ENVS.register("gymnasium", config=GymnasiumConfig)
class GymnasiumEnv(AdapterEnv):
    """A Gymnasium multi-agent env made by ``gymnasium.make(env.key, **env.kwargs)``."""

    @classmethod
    def make_parallel(cls, cfg: Any) -> Any:
        import gymnasium

        module, env_id = _split_key(cfg.key)
        if module:
            importlib.import_module(module)
        env = gymnasium.make(env_id, disable_env_checker=True, **plain(cfg.kwargs))
        spaces = getattr(env.action_space, "spaces", None)
        if not isinstance(spaces, tuple):
            raise ConfigError(
                f"env.key={cfg.key} is not a multi-agent env: its action space {env.action_space} is not "
                "a Tuple of per-agent spaces"
            )
        return GymParallel(env)

    @classmethod
    def label(cls, cfg: Any) -> str:
        return f"env '{cfg.label}' ({cfg.key})"

    @classmethod
    def check_config(cls, cfg: Any) -> list[str]:
        errs = check_adapter_config(cfg)
        try:
            import gymnasium
        except ImportError:
            return [*errs, f"env '{cfg.label}' needs gymnasium: {INSTALL_HINT}"]
        module, env_id = _split_key(cfg.key)
        if module:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                return [*errs, f"env.key={cfg.key} cannot be imported ({exc}): {INSTALL_HINT}"]
        if env_id not in gymnasium.registry:
            close = sorted(k for k in gymnasium.registry if env_id.split("-")[0].lower() in k.lower())[:8]
            hint = f" Similar ids: {', '.join(close)}" if close else ""
            errs.append(f"env.key={cfg.key} is invalid: Gymnasium has no env '{env_id}'.{hint}")
        return errs
