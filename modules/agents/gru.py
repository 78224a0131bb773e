"""Recurrent agent (PyMARL's RNNAgent): linear -> GRU cell -> linear to Q-values."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import MISSING
from torch import nn

from modules.agents.grouped import GroupedGRUCell, GroupedLinear
from runner.contracts import SEQUENCES, Component
from runner.registry import AGENTS


@dataclass
class GRUAgentConfig:
    name: str = MISSING
    hidden_dim: int = 64
    """Size of the embedding and of the GRU hidden state."""


@AGENTS.register("gru", config=GRUAgentConfig)
class GRUAgent(nn.Module, Component):
    recurrent = True
    requires = frozenset({SEQUENCES.name})  # whole episodes: the hidden state runs over them
    conditioned = False

    def __init__(self, cfg: GRUAgentConfig, input_dim: int, n_actions: int, n_param_groups: int) -> None:
        super().__init__()
        h = cfg.hidden_dim
        self.hidden_dim = h
        self.fc1 = GroupedLinear(n_param_groups, input_dim, h)
        self.cell = GroupedGRUCell(n_param_groups, h, h)
        self.fc2 = GroupedLinear(n_param_groups, h, n_actions)

    @staticmethod
    def check_config(cfg) -> list[str]:
        if cfg.hidden_dim < 1:
            return [f"agent.hidden_dim={cfg.hidden_dim} is invalid: must be >= 1"]
        return []

    def init_hidden(self, batch_shape: tuple[int, ...]) -> torch.Tensor:
        return self.fc1.weight.new_zeros(*batch_shape, self.hidden_dim)

    def forward(self, inputs: torch.Tensor, hidden: torch.Tensor | None = None):
        x = torch.relu(self.fc1(inputs))
        if hidden is None:
            hidden = x.new_zeros(*x.shape[:-1], self.hidden_dim)
        h = self.cell(x, hidden)
        return self.fc2(h), h
