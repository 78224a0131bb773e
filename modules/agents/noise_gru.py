"""MAVEN's agent: a GRU body whose output layer is produced by a hypernetwork of (z, agent id).

Q_i = W(z, i) h_i + b(z, i): the latent z chosen for the episode selects the agents' joint
behaviour mode (Mahajan et al. 2019). Used with the ``maven`` controller, which supplies
``cond`` = one-hot z ++ one-hot agent id for every agent.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import MISSING
from torch import nn

from modules.agents.grouped import GroupedGRUCell, GroupedLinear
from runner.contracts import CONDITIONED, LATENT, SEQUENCES, Component
from runner.registry import AGENTS


@dataclass
class NoiseGRUAgentConfig:
    name: str = MISSING
    hidden_dim: int = 64
    """Size of the embedding and of the GRU hidden state."""
    hyper_hidden_dim: int = 64
    """Hidden units of the hypernetwork that maps (z, agent id) to the output layer."""


@AGENTS.register("noise_gru", config=NoiseGRUAgentConfig)
class NoiseGRUAgent(nn.Module, Component):
    recurrent = True
    conditioned = True
    provides = frozenset({CONDITIONED.name})
    requires = frozenset({LATENT.name, SEQUENCES.name})

    def __init__(
        self, cfg: NoiseGRUAgentConfig, input_dim: int, n_actions: int, n_param_groups: int, cond_dim: int = 0
    ) -> None:
        super().__init__()
        if cond_dim < 1:
            raise ValueError("agent 'noise_gru' needs a conditioning input (use controller=maven)")
        h, self.n_actions = cfg.hidden_dim, n_actions
        self.hidden_dim = h
        self.fc1 = GroupedLinear(n_param_groups, input_dim, h)
        self.cell = GroupedGRUCell(n_param_groups, h, h)
        self.hyper = nn.Sequential(
            nn.Linear(cond_dim, cfg.hyper_hidden_dim), nn.ReLU(), nn.Linear(cfg.hyper_hidden_dim, (h + 1) * n_actions)
        )

    @staticmethod
    def check_config(cfg) -> list[str]:
        errs = []
        for key in ("hidden_dim", "hyper_hidden_dim"):
            if cfg[key] < 1:
                errs.append(f"agent.{key}={cfg[key]} is invalid: must be >= 1")
        return errs

    def init_hidden(self, batch_shape: tuple[int, ...]) -> torch.Tensor:
        return self.fc1.weight.new_zeros(*batch_shape, self.hidden_dim)

    def forward(self, inputs: torch.Tensor, hidden: torch.Tensor | None, cond: torch.Tensor):
        x = torch.relu(self.fc1(inputs))
        if hidden is None:
            hidden = x.new_zeros(*x.shape[:-1], self.hidden_dim)
        h = self.cell(x, hidden)
        wb = self.hyper(cond).view(*cond.shape[:-1], self.hidden_dim + 1, self.n_actions)
        q = (h.unsqueeze(-2) @ wb[..., :-1, :]).squeeze(-2) + wb[..., -1, :]
        return q, h
