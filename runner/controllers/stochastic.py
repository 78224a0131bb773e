"""The stochastic-policy controller of the on-policy actor-critic learners (IPPO, MAPPO).

Inputs are built as in :class:`runner.controllers.basic.BasicController` (observation, optional
agent id and last action); the agent network's outputs are the policy's parameters:

- **discrete actions**: logits. Unavailable actions are masked before the softmax (EPyMARL's
  ``mask_before_softmax``), so they have probability 0 and take no part in the entropy. Training
  samples from the categorical distribution, and so do test episodes (EPyMARL's ``soft_policies``
  selector); with ``test_greedy`` they take the most probable action.
- **continuous actions**: the mean of a diagonal Gaussian, with a state-independent learned log
  standard deviation per action dim (one per parameter group: shared by the agents of a group, or
  one per agent with ``share_params=false``), starting at ``log_std_init``. Training samples the
  Gaussian and stores the sample in the batch as drawn: the env adapter clips it into the action
  space's bounds when it is sent (the "clipped Gaussian" of MAPPO's and AgileRL's code), so the
  learner's log-probabilities are those of the actions it sampled. With ``test_greedy``, test
  episodes take the mean, clamped into the bounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from envs.base import EnvSpec
from modules.agents.init import orthogonal_init
from runner.buffers.episode import EpisodeBatch
from runner.contracts import AGENT_GROUPS, STOCHASTIC
from runner.controllers.basic import NEG, BasicController
from runner.errors import check_range
from runner.registry import AGENTS, CONTROLLERS


@dataclass
class StochasticControllerConfig:
    name: str = "stochastic"
    share_params: bool = True
    """One actor network for all agents of a group (True) or one per agent (False)."""
    obs_agent_id: bool = True
    """Append a one-hot agent id to each agent's input (EPyMARL's obs_agent_id)."""
    obs_last_action: bool = False
    """Append a one-hot of the agent's previous action to its input (discrete actions only)."""
    orthogonal_init: bool = False
    """Orthogonal initialisation of the actor: gain sqrt(2) on hidden layers, 0.01 on the output (the
    MAPPO paper's code). False: PyTorch's default initialisation (EPyMARL)."""
    log_std_init: float = 0.0
    """Continuous actions: the initial log standard deviation of the Gaussian policy (std 1)."""
    test_greedy: bool = False
    """False: test episodes sample from the policy, as EPyMARL's soft_policies selector does in every
    mode (and as the policy was trained). True: they take its mode (the most probable action, the
    Gaussian's mean), as the MAPPO paper's evaluation does. On LBF the mode of an IPPO policy scores
    far below the policy itself (docs/results.md): greedy agents get stuck where sampling ones don't."""


class GaussianActor(nn.Module):
    """An agent network whose outputs are the Gaussian's mean, plus the learned log std [G, A]."""

    net: Any  # an agent network: recurrent, init_hidden, forward -> (means, hidden)

    def __init__(self, net: nn.Module, n_actions: int, n_param_groups: int, log_std_init: float) -> None:
        super().__init__()
        self.net = net
        self.recurrent = bool(net.recurrent)
        self.log_std = nn.Parameter(torch.full((n_param_groups, n_actions), float(log_std_init)))

    def init_hidden(self, batch_shape: tuple[int, ...]) -> Any:
        return self.net.init_hidden(batch_shape)

    def forward(self, inputs: torch.Tensor, hidden: Any = None) -> tuple[torch.Tensor, Any]:
        return self.net(inputs, hidden)


@CONTROLLERS.register("stochastic", config=StochasticControllerConfig)
class StochasticController(BasicController):
    provides = frozenset({AGENT_GROUPS.name, STOCHASTIC.name})
    requires = frozenset()  # discrete or continuous actions
    supports_q_tables = False
    cfg: StochasticControllerConfig  # type: ignore[assignment]
    low: torch.Tensor
    high: torch.Tensor

    def __init__(self, cfg: StochasticControllerConfig, agent_cfg: Any, spec: EnvSpec, device: torch.device) -> None:
        if spec.continuous and cfg.obs_last_action:
            from runner.errors import ConfigError

            raise ConfigError("controller.obs_last_action=true is invalid with continuous actions: the last action "
                              "is a one-hot of a discrete choice (set controller.obs_last_action=false)")
        self.continuous = spec.continuous
        super().__init__(cfg, agent_cfg, spec, device)  # type: ignore[arg-type]
        low = torch.tensor(spec.action_low) if spec.continuous else torch.zeros(spec.n_agents, spec.n_actions)
        high = torch.tensor(spec.action_high) if spec.continuous else torch.zeros(spec.n_agents, spec.n_actions)
        self.register_buffer("low", low.to(device), persistent=False)
        self.register_buffer("high", high.to(device), persistent=False)

    @staticmethod
    def check_config(cfg: Any) -> list[str]:
        errs: list[str] = []
        check_range(errs, "controller.log_std_init", cfg.log_std_init, -20.0, 2.0)
        return errs

    def build_agent(self, agent_cfg: Any, input_dim: int, n_actions: int, n_param_groups: int) -> nn.Module:
        net = AGENTS.get(agent_cfg.name)(agent_cfg, input_dim, n_actions, n_param_groups)
        if self.cfg.orthogonal_init:
            orthogonal_init(net, gain=2**0.5, out_gain=0.01)
        if not self.continuous:
            return net
        return GaussianActor(net, n_actions, n_param_groups, self.cfg.log_std_init)

    # -- exploration: the policy's own randomness ----------------------------------------------------
    def epsilon(self, t_env: int) -> float:
        return 0.0

    def exploration_stats(self, t_env: int) -> dict[str, float]:
        if not self.continuous:
            return {}  # the learner logs the policy's entropy
        return {"action_std_mean": float(self.action_log_std().exp().mean())}

    def action_log_std(self, agent: Any = None) -> torch.Tensor:
        log_std = (agent or self.agent).log_std
        return log_std.expand(self.spec.n_agents, -1) if log_std.shape[0] == 1 else log_std

    # -- acting ---------------------------------------------------------------------------------
    @torch.no_grad()
    def select_actions(self, batch: EpisodeBatch, t: int, t_env: int, test_mode: bool) -> torch.Tensor:
        """Discrete: [B, N] int64; continuous: [B, N, A] float32 (padded dims 0)."""
        last = batch["actions"][:, t - 1].long() if t > 0 and self.cfg.obs_last_action else None
        if last is None and self.cfg.obs_last_action:
            last = torch.full(batch["actions"].shape[:1] + batch["actions"].shape[2:], -1, device=batch.device, dtype=torch.long)
        out, self.hidden = self.call_agent(self.agent, self._inputs(batch["obs"][:, t], last), self.hidden, batch, t)
        avail = batch["avail_actions"][:, t]
        if not self.continuous:
            logits = out.masked_fill(~avail, NEG)
            if test_mode and self.cfg.test_greedy:
                return logits.argmax(-1)
            return torch.distributions.Categorical(logits=logits).sample()
        if test_mode and self.cfg.test_greedy:
            return torch.maximum(torch.minimum(out, self.high), self.low) * avail
        std = self.action_log_std().exp()
        return (out + std * torch.randn_like(out)) * avail
