"""The env contract every hymarl environment follows.

An env is a *vector* of ``n_envs`` copies stepped in lock-step: every tensor has a leading batch
dimension B. Matrix games implement it natively with tensor ops; Python envs are wrapped in worker
processes. All copies reset together; a copy whose episode has ended keeps returning its final
observation and zero reward until the next reset (the runner masks it out).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from omegaconf import MISSING

from runner.contracts import BOUNDED, CONTINUOUS, DISCRETE, STATE

if TYPE_CHECKING:  # torch stays out of env worker processes, which import this module
    import torch


@dataclass
class EnvConfig:
    """Fields every env config has. Subclass it for an env's own options."""

    name: str = MISSING
    """Registry key of the env (== the yaml file name for the built-in envs)."""
    label: str = "${.name}"
    """The env's name in run names, tags and plots (presets of one adapter set their own)."""
    t_max: int = 50_000
    """Recommended training budget in env steps (the default of the top-level t_max)."""
    test_interval: int = 2_000
    """Recommended env steps between test phases (default of the top-level test_interval)."""
    log_interval: int = 2_000
    """Recommended env steps between training-stat logs (default of the top-level log_interval)."""


@dataclass(frozen=True)
class EnvSpec:
    """Immutable description of an env, handed to every component that needs shapes."""

    n_agents: int
    n_actions: int
    obs_dim: int
    state_dim: int
    episode_limit: int
    agent_ids: tuple[str, ...]
    agent_obs_dims: tuple[int, ...] = ()
    """Each agent's own observation size (heterogeneous agents: obs is zero-padded to obs_dim,
    agent i's observation is obs[..., i, :agent_obs_dims[i]]). Empty: every agent has obs_dim."""
    agent_n_actions: tuple[int, ...] = ()
    """Each agent's own number of actions (the rest of n_actions is never available). Empty: n_actions.
    With continuous actions: each agent's own action dimension."""
    continuous: bool = False
    """Actions are real vectors (a Gymnasium ``Box``): ``n_actions`` is the largest action dimension,
    an action is float32 [n_actions] (agent i's real dims are the first ``n_actions_of(i)``, marked
    True in ``avail_actions``; the rest are padding and never sent). False: one of n_actions choices."""
    action_low: tuple[tuple[float, ...], ...] = ()
    """Continuous actions: each agent's lower bound per action dim (padded dims: -1). -inf: unbounded."""
    action_high: tuple[tuple[float, ...], ...] = ()
    """Continuous actions: each agent's upper bound per action dim (padded dims: 1). inf: unbounded."""

    def obs_dim_of(self, i: int) -> int:
        return self.agent_obs_dims[i] if self.agent_obs_dims else self.obs_dim

    def n_actions_of(self, i: int) -> int:
        return self.agent_n_actions[i] if self.agent_n_actions else self.n_actions

    @property
    def bounded(self) -> bool:
        """Continuous actions whose every bound is finite (deterministic actors scale into them)."""
        return self.continuous and all(math.isfinite(x) for row in (*self.action_low, *self.action_high) for x in row)

    def provides(self) -> frozenset[str]:
        """The env capabilities (runner.contracts) that this instance provides: what its spec tells."""
        caps = {CONTINUOUS.name if self.continuous else DISCRETE.name}
        if self.state_dim >= 1:
            caps.add(STATE.name)
        if self.bounded:
            caps.add(BOUNDED.name)
        return frozenset(caps)


class Observation(NamedTuple):
    obs: torch.Tensor  # [B, N, obs_dim] float32
    state: torch.Tensor  # [B, state_dim] float32
    avail_actions: torch.Tensor  # [B, N, n_actions] bool


class StepResult(NamedTuple):
    observation: Observation
    reward: torch.Tensor  # [B] float32, team reward
    terminated: torch.Tensor  # [B] bool: the episode ended (no bootstrap)
    truncated: torch.Tensor  # [B] bool: cut by a time limit (bootstrap from the next state)


class QPoint(NamedTuple):
    """A state at which to print the learned Q table (matrix games)."""

    label: str
    obs: torch.Tensor  # [N, obs_dim]
    state: torch.Tensor  # [state_dim]
    avail_actions: torch.Tensor  # [N, n_actions]


class VecEnv(ABC):
    """B copies of an env, stepped together. Subclasses set ``self.spec`` in __init__.

    A registered VecEnv class is natively batched (the runner builds it with ``n_envs`` copies);
    it declares what it provides (see :mod:`runner.contracts`)."""

    natively_batched: ClassVar[bool] = True
    provides: ClassVar[frozenset[str]] = frozenset({DISCRETE.name, STATE.name})
    requires: ClassVar[frozenset[str]] = frozenset()
    reports_agent_returns: ClassVar[bool] = False

    @classmethod
    def one_copy_per_process(cls, cfg: Any) -> tuple[str, str] | None:
        return None

    spec: EnvSpec
    n_envs: int
    device: torch.device

    @abstractmethod
    def reset(self) -> Observation:
        """Start a new episode in every copy."""

    @abstractmethod
    def step(self, actions: torch.Tensor) -> StepResult:
        """Apply joint actions [B, N] (int64), or [B, N, n_actions] float32 with continuous actions,
        in every copy."""

    def episode_stats(self) -> dict[str, torch.Tensor]:
        """Per-copy stats of the episodes just ended ([B] each), averaged into logged stats."""
        return {}

    def q_points(self) -> list[QPoint]:
        """States at which to tabulate learned Q-values (empty: no tables)."""
        return []

    def get_rng_state(self) -> Any:
        return None

    def set_rng_state(self, state: Any) -> None:
        return None

    def close(self) -> None:
        return None

    @classmethod
    def check_config(cls, cfg: Any) -> list[str]:
        """Config errors this env can detect in its own config node (``env``) before the run starts
        (strings naming key and value)."""
        return []
