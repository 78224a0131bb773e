"""The hymarl matrix games as PettingZoo ``ParallelEnv`` s, for use in other MARL frameworks.

hymarl's matrix games (``twostep``, ``matrix``, ``climbing``, ``penalty``, ``mstep``) are batched
torch envs (:class:`envs.base.VecEnv`). This module wraps one copy of any of them (``n_envs=1``,
on the CPU) in the PettingZoo parallel API::

    from envs.pz_matrix import parallel_env

    env = parallel_env("mstep", m=4)      # keyword arguments are the fields of the game's config
    observations, infos = env.reset(seed=0)
    while env.agents:
        actions = {agent: env.action_space(agent).sample(infos[agent]["action_mask"]) for agent in env.agents}
        observations, rewards, terminations, truncations, infos = env.step(actions)

Other examples: ``parallel_env("matrix", payoff=[[1, 0], [0, 1]])``, ``parallel_env("penalty", k=-10)``.

What the wrapper gives:

- ``possible_agents`` are the game's agent ids (``agent_0``, ``agent_1``, ...). All agents live and
  end together; when the episode ends, ``agents`` becomes empty.
- Observations are float32 numpy arrays of shape ``(obs_dim,)``; ``state()`` is the global state
  (float32, ``(state_dim,)``). All the matrix games encode both as one-hot vectors or constants, so
  ``observation_space`` and ``state_space`` are ``Box(0, 1)``.
- Every agent gets the team reward (a python float). Action masks (all ones in these games) are in
  ``infos[agent]["action_mask"]`` (``np.int8``). An episode is truncated after ``episode_limit`` steps,
  as hymarl's runner does (none of the matrix games gets that far without terminating).
- The games are deterministic: the same actions give the same episode whatever the seed.
  ``reset(seed=...)`` seeds the action spaces (``action_space(agent).sample()``), as PettingZoo envs do,
  so an episode of sampled actions is the same for equal seeds and differs between seeds.

PettingZoo is an optional dependency, and hymarl's env registry imports every module of ``envs/`` at
start-up. So this module does not import pettingzoo or gymnasium at import time: the class
``MatrixParallelEnv`` (a real subclass of ``pettingzoo.ParallelEnv``) is created on first use, when
``parallel_env`` is called or ``envs.pz_matrix.MatrixParallelEnv`` is accessed. Without PettingZoo
installed, both raise an ImportError that says ``pip install pettingzoo``. The module registers
nothing in the registry: hymarl's runner keeps using the batched envs directly.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from omegaconf import MISSING

from envs.base import EnvConfig, Observation, VecEnv
from runner.registry import ENVS

if TYPE_CHECKING:
    from pettingzoo import ParallelEnv

# MatrixParallelEnv is left out of __all__: it is created on access (see __getattr__ at the end).
__all__ = ["MATRIX_GAME_MODULES", "make_config", "matrix_game_names", "parallel_env"]

MATRIX_GAME_MODULES = ("envs.matrix", "envs.mstep")
"""Modules whose registered envs are the matrix games this module wraps."""

INSTALL_HINT = "pip install pettingzoo (or the env extras: pip install -e '.[envs]')"

OBS_LOW, OBS_HIGH = 0.0, 1.0
"""Bounds of every observation and state entry of the matrix games (one-hot vectors and constants)."""


def matrix_game_names() -> list[str]:
    """Registry names of the matrix games, sorted."""
    return [name for name, cls, _ in ENVS.items() if cls.__module__ in MATRIX_GAME_MODULES]


def make_config(name: str, **kwargs: Any) -> EnvConfig:
    """The config dataclass of matrix game ``name`` with ``kwargs`` set; ValueError if it is invalid."""
    names = matrix_game_names()
    if name not in names:
        raise ValueError(f"unknown matrix game '{name}'. Available matrix games: {', '.join(names)}")
    cfg_cls = ENVS.config_class(name)
    assert cfg_cls is not None  # every matrix game registers its config dataclass
    base_fields = {f.name for f in dataclasses.fields(EnvConfig)}
    options = [f.name for f in dataclasses.fields(cfg_cls) if f.name not in base_fields]
    unknown = sorted(set(kwargs) - set(options))
    if unknown:
        raise ValueError(
            f"unknown option(s) for matrix game '{name}': {', '.join(unknown)}. "
            f"Valid options: {', '.join(options) or '(none)'}"
        )
    cfg = cfg_cls(name=name, **kwargs)
    required = [opt for opt in options if isinstance(getattr(cfg, opt), str) and getattr(cfg, opt) == MISSING]
    if required:
        raise ValueError(f"matrix game '{name}' needs option(s): {', '.join(required)}")
    errors = ENVS.get(name).check_config(cfg)
    if errors:
        raise ValueError(f"matrix game '{name}': {'; '.join(errors)}")
    return cfg


def parallel_env(name: str = "twostep", **kwargs: Any) -> ParallelEnv:
    """A :class:`MatrixParallelEnv` playing matrix game ``name``; ``kwargs`` are fields of its config.

    Raises ImportError (with the install command) without PettingZoo, ValueError for an unknown
    game, an unknown option or an invalid value.
    """
    env_cls = _parallel_env_class()
    cfg = make_config(name, **kwargs)
    vec_env = ENVS.get(name)(cfg, n_envs=1, seed=0, device=torch.device("cpu"))
    return env_cls(vec_env, game=name)


class _MatrixParallelEnvImpl:
    """The body of :class:`MatrixParallelEnv`; ``_parallel_env_class`` adds the PettingZoo base class."""

    metadata: dict[str, Any] = {"name": "hymarl_matrix_v0", "render_modes": []}

    def __init__(self, env: VecEnv, game: str = "") -> None:
        from gymnasium import spaces

        if env.n_envs != 1:
            raise ValueError(f"MatrixParallelEnv wraps one copy of a game, got n_envs={env.n_envs}")
        self.env, self.game, self.spec = env, game, env.spec
        self.possible_agents: list[str] = list(env.spec.agent_ids)
        self.agents: list[str] = []
        self.render_mode = None
        self.state_space = spaces.Box(OBS_LOW, OBS_HIGH, shape=(env.spec.state_dim,), dtype=np.float32)
        # PettingZoo requires the same space object on every call; some frameworks read these dicts
        self.observation_spaces = {
            a: spaces.Box(OBS_LOW, OBS_HIGH, shape=(env.spec.obs_dim,), dtype=np.float32) for a in self.possible_agents
        }
        self.action_spaces = {a: spaces.Discrete(env.spec.n_actions) for a in self.possible_agents}
        self._ob: Observation | None = None
        self._t = 0

    def observation_space(self, agent: str) -> Any:
        self._check_agent(agent)
        return self.observation_spaces[agent]

    def action_space(self, agent: str) -> Any:
        self._check_agent(agent)
        return self.action_spaces[agent]

    def _check_agent(self, agent: str) -> None:
        if agent not in self.possible_agents:
            raise KeyError(f"unknown agent {agent!r}; the agents are {self.possible_agents}")

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        """Start an episode. The games are deterministic; ``seed`` seeds the action spaces (agent ``i``'s
        with ``seed + i``), so that sampled actions repeat. ``options`` is unused."""
        if seed is not None:
            for i, agent in enumerate(self.possible_agents):
                self.action_spaces[agent].seed(seed + i)
        self._ob = self.env.reset()
        self._t = 0
        self.agents = list(self.possible_agents)
        return self._observations(), self._infos()

    def step(
        self, actions: dict[str, Any]
    ) -> tuple[
        dict[str, np.ndarray], dict[str, float], dict[str, bool], dict[str, bool], dict[str, dict[str, Any]]
    ]:
        """Apply one action per live agent. After the episode ended, ``step({})`` returns empty dicts."""
        extra = [a for a in actions if a not in self.agents]
        if extra:
            raise ValueError(
                f"actions for agents that are not live: {extra} (live: {self.agents}; "
                "after an episode ends, call reset())"
            )
        if not self.agents:
            return {}, {}, {}, {}, {}
        missing = [a for a in self.agents if a not in actions]
        if missing:
            raise ValueError(f"no action for live agents {missing}")
        assert self._ob is not None
        avail = self._ob.avail_actions[0]
        joint = []
        for i, agent in enumerate(self.possible_agents):
            action = actions[agent]
            if not self.action_space(agent).contains(action):
                raise ValueError(f"action {action!r} of {agent} is not in {self.action_space(agent)}")
            if not bool(avail[i, int(action)]):
                raise ValueError(
                    f"action {int(action)} of {agent} is not available (see infos[agent]['action_mask'])"
                )
            joint.append(int(action))
        res = self.env.step(torch.tensor([joint], dtype=torch.int64, device=self.env.device))
        self._ob = res.observation
        self._t += 1
        terminated = bool(res.terminated[0])
        truncated = not terminated and (bool(res.truncated[0]) or self._t >= self.spec.episode_limit)
        reward = float(res.reward[0])
        agents = self.agents
        if terminated or truncated:
            self.agents = []
        return (
            self._observations(),
            dict.fromkeys(agents, reward),
            dict.fromkeys(agents, terminated),
            dict.fromkeys(agents, truncated),
            self._infos(),
        )

    def state(self) -> np.ndarray:
        """The global state of the current step, float32 of shape ``(state_dim,)``."""
        if self._ob is None:
            raise RuntimeError("call reset() before state()")
        return self._ob.state[0].detach().cpu().numpy().astype(np.float32)

    def _observations(self) -> dict[str, np.ndarray]:
        assert self._ob is not None
        obs = self._ob.obs[0].detach().cpu().numpy().astype(np.float32)  # a copy: callers may write to it
        return {agent: obs[i] for i, agent in enumerate(self.possible_agents)}

    def _infos(self) -> dict[str, dict[str, Any]]:
        assert self._ob is not None
        masks = self._ob.avail_actions[0].detach().cpu().numpy().astype(np.int8)
        return {agent: {"action_mask": masks[i]} for i, agent in enumerate(self.possible_agents)}

    def render(self) -> None:
        """Matrix games have nothing to render."""
        return None

    def close(self) -> None:
        self.env.close()


@functools.cache
def _parallel_env_class() -> type:
    """``MatrixParallelEnv``: the implementation above with ``pettingzoo.ParallelEnv`` as base class."""
    try:
        import gymnasium  # noqa: F401
        from pettingzoo import ParallelEnv
    except ImportError as err:
        raise ImportError(f"the PettingZoo matrix games need PettingZoo: {INSTALL_HINT} ({err})") from err
    return type(
        "MatrixParallelEnv",
        (_MatrixParallelEnvImpl, ParallelEnv),
        {
            "__module__": __name__,
            "__qualname__": "MatrixParallelEnv",
            "__doc__": "One copy of a hymarl matrix game (a :class:`envs.base.VecEnv` with n_envs=1) as a\n"
            "PettingZoo ParallelEnv. Build it with :func:`parallel_env`, or ``MatrixParallelEnv(vec_env)``.",
        },
    )


def __getattr__(name: str) -> Any:
    # `from envs.pz_matrix import MatrixParallelEnv` creates the class on first access (PEP 562)
    if name == "MatrixParallelEnv":
        return _parallel_env_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
