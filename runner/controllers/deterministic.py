"""The deterministic-actor controller of MADDPG and MATD3 (``controller=deterministic``).

It builds the agents' inputs as :class:`~runner.controllers.basic.BasicController` does (observation
plus an optional one-hot agent id) and runs the same agent networks (``agent=mlp`` or ``gru``), but
the network is an *actor*, not a Q-function:

- **Continuous actions** (a bounded Box): the actor's output x becomes the action
  ``low + (tanh(x) + 1) / 2 * (high - low)`` per dim, always within the bounds. Training actions add
  exploration noise to tanh(x), in units of half the action range (AgileRL's convention: noise on
  the actor's [-1, 1] output), clamped back into [-1, 1]: Gaussian (``noise=gaussian``, std =
  the scale) or Ornstein-Uhlenbeck (``noise=ou``, ``x += theta (mean - x) dt + scale sqrt(dt) N(0, 1)``,
  reset at every episode start). The scale goes linearly from ``noise_start`` to ``noise_finish``
  over ``noise_anneal_time`` env steps. Test actions carry no noise.
- **Discrete actions**: the actor outputs logits; unavailable actions are masked with a large
  negative number. Training actions are a Gumbel-max sample of the masked logits (EPyMARL's
  MADDPG acts with hard Gumbel-softmax samples), test actions the argmax.

:meth:`forward_seq` gives the learner the actions in the env's units (continuous, differentiable)
or the masked logits (discrete) of every step. An unbounded Box cannot be scaled into and is
refused when the controller is built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch
from omegaconf import MISSING

from envs.base import EnvSpec
from runner.buffers.episode import EpisodeBatch
from runner.contracts import AGENT_GROUPS, DETERMINISTIC
from runner.controllers.basic import NEG, BasicController
from runner.errors import ConfigError, check_range
from runner.registry import CONTROLLERS


class Noise(str, Enum):
    """``controller.noise``: the exploration noise of continuous actions."""

    gaussian = "gaussian"
    ou = "ou"


@dataclass
class DeterministicControllerConfig:
    name: str = MISSING
    share_params: bool = True
    """One actor for all agents (True) or one per agent (False)."""
    obs_agent_id: bool = True
    """Append a one-hot agent id to each agent's input."""
    obs_last_action: bool = False
    """Not supported by deterministic actors (must stay false; the field keeps BasicController's inputs)."""
    noise: Noise = Noise.gaussian
    """Continuous actions: gaussian (independent per step) or ou (Ornstein-Uhlenbeck, correlated over an episode)."""
    noise_start: float = 0.1
    """Noise scale at t_env = 0, in units of half the action range (TD3's expl_noise 0.1)."""
    noise_finish: float = 0.1
    """Noise scale after noise_anneal_time env steps."""
    noise_anneal_time: int = 50_000
    """Env steps over which the scale goes linearly from noise_start to noise_finish."""
    ou_theta: float = 0.15
    """noise=ou: rate of mean reversion (AgileRL's theta)."""
    ou_dt: float = 0.01
    """noise=ou: time step of the process (AgileRL's dt)."""
    ou_mean: float = 0.0
    """noise=ou: the mean the process reverts to (AgileRL's mean_noise)."""


def gumbel_max(logits: torch.Tensor) -> torch.Tensor:
    """Indices of a sample of the categorical distribution of ``logits`` (the Gumbel-max trick)."""
    u = torch.rand_like(logits).clamp_(1e-20, 1.0)
    return (logits - torch.log(-torch.log(u))).argmax(-1)


@CONTROLLERS.register("deterministic", config=DeterministicControllerConfig)
class DeterministicController(BasicController):
    provides = frozenset({AGENT_GROUPS.name, DETERMINISTIC.name})
    requires = frozenset()  # discrete and (bounded) continuous actions
    supports_q_tables = False
    cfg: DeterministicControllerConfig  # type: ignore[assignment]
    low: torch.Tensor
    high: torch.Tensor

    def __init__(self, cfg: DeterministicControllerConfig, agent_cfg: Any, spec: EnvSpec, device: torch.device) -> None:
        if spec.continuous and not spec.bounded:
            raise ConfigError(
                f"controller=deterministic needs bounded continuous actions: the env's action bounds are "
                f"low={[list(r) for r in spec.action_low]}, high={[list(r) for r in spec.action_high]} "
                "(deterministic actors scale tanh into [low, high]); set env.action_bounds=[low, high]"
            )
        super().__init__(cfg, agent_cfg, spec, device)  # type: ignore[arg-type]
        n, a = spec.n_agents, spec.n_actions
        low = torch.tensor(spec.action_low, dtype=torch.float32) if spec.continuous else torch.zeros(n, a)
        high = torch.tensor(spec.action_high, dtype=torch.float32) if spec.continuous else torch.ones(n, a)
        self.register_buffer("low", low.reshape(n, a), persistent=False)
        self.register_buffer("high", high.reshape(n, a), persistent=False)
        self.ou_state: torch.Tensor | None = None  # noise=ou: [B, N, A], reset at every episode start
        self.to(device)

    @staticmethod
    def check_config(cfg: Any) -> list[str]:
        errs: list[str] = []
        if cfg.obs_last_action:
            errs.append(f"controller.obs_last_action={cfg.obs_last_action} is invalid: deterministic actors do not "
                        "take the last action as input (must be false)")
        for key in ("noise_start", "noise_finish"):
            value = cfg[key]
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                errs.append(f"controller.{key}={value} is invalid: must be >= 0")
        if cfg.noise_anneal_time < 0:
            errs.append(f"controller.noise_anneal_time={cfg.noise_anneal_time} is invalid: must be >= 0")
        check_range(errs, "controller.ou_theta", cfg.ou_theta, 0, math.inf)
        check_range(errs, "controller.ou_dt", cfg.ou_dt, 0, math.inf, lo_open=True, hi_open=True)
        return errs

    # -- exploration ------------------------------------------------------------------------------
    def epsilon(self, t_env: int) -> float:
        return 0.0

    def noise_scale(self, t_env: int) -> float:
        cfg = self.cfg
        if cfg.noise_anneal_time <= 0 or t_env >= cfg.noise_anneal_time:
            return float(cfg.noise_finish)
        return float(cfg.noise_start + t_env / cfg.noise_anneal_time * (cfg.noise_finish - cfg.noise_start))

    def exploration_stats(self, t_env: int) -> dict[str, float]:
        return {"noise_scale": self.noise_scale(t_env)} if self.spec.continuous else {}

    def init_hidden(self, batch_size: int) -> None:
        super().init_hidden(batch_size)
        self.ou_state = None  # a new episode: the OU process starts again at 0

    def _noise(self, shape: torch.Size, device: torch.device, t_env: int) -> torch.Tensor:
        cfg, scale = self.cfg, self.noise_scale(t_env)
        if cfg.noise == Noise.gaussian:
            return torch.randn(shape, device=device) * scale
        x = self.ou_state if self.ou_state is not None and self.ou_state.shape == shape else torch.zeros(shape, device=device)
        x = x + cfg.ou_theta * (cfg.ou_mean - x) * cfg.ou_dt + scale * math.sqrt(cfg.ou_dt) * torch.randn(shape, device=device)
        self.ou_state = x
        return x

    # -- actions ----------------------------------------------------------------------------------
    def scale(self, unit: torch.Tensor) -> torch.Tensor:
        """Actions in [-1, 1] per dim -> the env's units [low, high]."""
        return self.low + (unit + 1) * 0.5 * (self.high - self.low)

    @torch.no_grad()
    def select_actions(self, batch: EpisodeBatch, t: int, t_env: int, test_mode: bool) -> torch.Tensor:
        """Joint actions of step t: [B, N, A] float32 in the bounds (continuous) or [B, N] int64."""
        out, self.hidden = self.call_agent(self.agent, self._inputs(batch["obs"][:, t], None), self.hidden, batch, t)
        avail = batch["avail_actions"][:, t]
        if self.spec.continuous:
            unit = torch.tanh(out)
            if not test_mode:
                unit = (unit + self._noise(unit.shape, unit.device, t_env)).clamp(-1.0, 1.0)
            return self.scale(unit) * avail
        logits = out.masked_fill(~avail, NEG)
        return logits.argmax(-1) if test_mode else gumbel_max(logits)

    def forward_seq(self, batch: EpisodeBatch, agent: Any = None, cut: torch.Tensor | None = None) -> torch.Tensor:
        """[B, T+1, N, A] of every step: actions in the env's units (continuous, differentiable; padded
        dims 0) or the masked logits (discrete)."""
        out = super().forward_seq(batch, agent, cut)
        avail = batch["avail_actions"]
        if self.spec.continuous:
            return self.scale(torch.tanh(out)) * avail
        return out.masked_fill(~avail, NEG)
