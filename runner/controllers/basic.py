"""The basic multi-agent controller (PyMARL's BasicMAC), batched over envs and agents.

Inputs per agent: its observation, optionally a one-hot agent id and a one-hot of its last
action. One agent network is shared by all agents (``share_params``) or every agent has its own
(evaluated in one batched matmul). Actions: epsilon-greedy over the available actions; greedy in
test mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import MISSING
from torch import nn

from envs.base import EnvSpec
from runner.buffers.episode import EpisodeBatch
from runner.contracts import AGENT_GROUPS, DISCRETE, Controller
from runner.controllers.schedules import EpsilonSchedule, epsilon_at
from runner.errors import check_range
from runner.registry import AGENTS, CONTROLLERS

NEG = -1e10  # "minus infinity" for masking unavailable actions without inf arithmetic


def detach_rows(hidden: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``hidden`` [B, ...] with the rows where ``rows`` [B] is True detached from the graph."""
    if not bool(rows.any()):
        return hidden
    return torch.where(rows.view(-1, *([1] * (hidden.dim() - 1))), hidden.detach(), hidden)


@dataclass
class BasicControllerConfig:
    name: str = MISSING
    share_params: bool = True
    """One network for all agents (True) or one per agent (False)."""
    obs_agent_id: bool = True
    """Append a one-hot agent id to each agent's input."""
    obs_last_action: bool = False
    """Append a one-hot of the agent's previous action to its input."""
    epsilon_start: float = 1.0
    """Exploration rate at t_env = 0."""
    epsilon_finish: float = 0.05
    """Exploration rate after epsilon_anneal_time steps."""
    epsilon_anneal_time: int = "${oc.select:env.epsilon_anneal_time,50000}"  # type: ignore[assignment]
    """Env steps over which epsilon goes from start to finish. Default: the env's recommendation
    where it has one (RouteRL: 1500 days), else 50,000."""
    epsilon_schedule: EpsilonSchedule = EpsilonSchedule.linear
    """linear or exp."""


@CONTROLLERS.register("basic", config=BasicControllerConfig)
class BasicController(nn.Module, Controller):
    provides = frozenset({AGENT_GROUPS.name})
    requires = frozenset({DISCRETE.name})
    # buffers and submodules, declared for type checkers (nn.Module's __getattr__ types them Tensor | Module)
    agent_ids: torch.Tensor
    action_eye: torch.Tensor
    agent: Any  # the agent network (an AGENTS entry): init_hidden, forward, per-agent parameter groups
    source: Path  # a frozen group's checkpoint (controllers.grouped.load_frozen sets it)

    def __init__(self, cfg: BasicControllerConfig, agent_cfg: Any, spec: EnvSpec, device: torch.device) -> None:
        super().__init__()
        self.cfg, self.spec = cfg, spec
        n, a = spec.n_agents, spec.n_actions
        input_dim = spec.obs_dim + (n if cfg.obs_agent_id else 0) + (a if cfg.obs_last_action else 0)
        self.agent = self.build_agent(agent_cfg, input_dim, a, 1 if cfg.share_params else n)
        self.register_buffer("agent_ids", torch.eye(n), persistent=False)
        self.register_buffer("action_eye", torch.eye(a), persistent=False)
        self.hidden: torch.Tensor | None = None
        self.to(device)

    supports_q_tables = True

    def build_agent(self, agent_cfg: Any, input_dim: int, n_actions: int, n_param_groups: int) -> nn.Module:
        return AGENTS.get(agent_cfg.name)(agent_cfg, input_dim, n_actions, n_param_groups)

    def call_agent(self, agent: nn.Module, inputs: torch.Tensor, hidden: Any, batch: EpisodeBatch | None, t: int | None):
        """Every agent forward goes through here (step t, or all steps when t is None)."""
        return agent(inputs, hidden)

    @staticmethod
    def check_config(cfg: Any) -> list[str]:
        errs = list[str]()
        check_range(errs, "controller.epsilon_start", cfg.epsilon_start, 0.0, 1.0)
        check_range(errs, "controller.epsilon_finish", cfg.epsilon_finish, 0.0, 1.0)
        if cfg.epsilon_anneal_time < 0:
            errs.append(f"controller.epsilon_anneal_time={cfg.epsilon_anneal_time} is invalid: must be >= 0")
        return errs

    # -- inputs -------------------------------------------------------------------------------
    def _inputs(self, obs: torch.Tensor, last_actions: torch.Tensor | None) -> torch.Tensor:
        """obs [..., N, O]; last_actions [..., N] (long, -1 = none) -> inputs [..., N, in]."""
        parts = [obs]
        if self.cfg.obs_agent_id:
            parts.append(self.agent_ids.expand(*obs.shape[:-1], -1))
        if self.cfg.obs_last_action:
            assert last_actions is not None  # obs_last_action: the caller passes them
            onehot = self.action_eye[last_actions.clamp(min=0)] * (last_actions >= 0).unsqueeze(-1)
            parts.append(onehot)
        return torch.cat(parts, -1) if len(parts) > 1 else obs

    def _last_actions_seq(self, batch: EpisodeBatch) -> torch.Tensor:
        acts = batch["actions"].long()
        none = torch.full_like(acts[:, :1], -1)
        return torch.cat([none, acts[:, :-1]], 1)

    # -- acting -------------------------------------------------------------------------------
    def init_hidden(self, batch_size: int) -> None:
        self.hidden = self.agent.init_hidden((batch_size, self.spec.n_agents))

    def epsilon(self, t_env: int) -> float:
        cfg = self.cfg
        return epsilon_at(t_env, cfg.epsilon_start, cfg.epsilon_finish, cfg.epsilon_anneal_time, cfg.epsilon_schedule)

    @torch.no_grad()
    def select_actions(self, batch: EpisodeBatch, t: int, t_env: int, test_mode: bool) -> torch.Tensor:
        """Joint actions [B, N] (int64) for step t of every episode in the batch."""
        last = batch["actions"][:, t - 1].long() if t > 0 else None
        if last is None and self.cfg.obs_last_action:
            last = torch.full(batch["actions"].shape[:1] + batch["actions"].shape[2:], -1, device=batch.device, dtype=torch.long)
        q, self.hidden = self.call_agent(self.agent, self._inputs(batch["obs"][:, t], last), self.hidden, batch, t)
        avail = batch["avail_actions"][:, t]
        greedy = q.masked_fill(~avail, NEG).argmax(-1)
        if test_mode:
            return greedy
        eps = self.epsilon(t_env)
        if eps <= 0.0:
            return greedy
        random = (torch.rand(avail.shape, device=avail.device) * avail).argmax(-1)
        explore = torch.rand(greedy.shape, device=greedy.device) < eps
        return torch.where(explore, random, greedy)

    # -- learning -----------------------------------------------------------------------------
    def forward_seq(self, batch: EpisodeBatch, agent: Any = None, cut: torch.Tensor | None = None) -> torch.Tensor:
        """Q-values [B, T+1, N, A] of every step of the batch (with `agent`, e.g. a target net; `cut`:
        see :meth:`runner.contracts.Controller.forward_seq`)."""
        agent = agent or self.agent
        last = self._last_actions_seq(batch) if self.cfg.obs_last_action else None
        inputs = self._inputs(batch["obs"], last)
        if not agent.recurrent:
            return self.call_agent(agent, inputs, None, batch, None)[0]
        hidden = agent.init_hidden((batch.batch_size, self.spec.n_agents))
        qs = []
        for t in range(inputs.shape[1]):
            if cut is not None:
                hidden = detach_rows(hidden, cut == t)
            q, hidden = self.call_agent(agent, inputs[:, t], hidden, batch, t)
            qs.append(q)
        return torch.stack(qs, 1)

    @torch.no_grad()
    def q_values(self, obs: torch.Tensor, agent: Any = None) -> torch.Tensor:
        """Q-values [M, N, A] for M standalone observations [M, N, O] (first step of an episode)."""
        agent = agent or self.agent
        last = torch.full(obs.shape[:-1], -1, dtype=torch.long, device=obs.device)
        hidden = agent.init_hidden(tuple(obs.shape[:-1]))
        return agent(self._inputs(obs, last), hidden)[0]
