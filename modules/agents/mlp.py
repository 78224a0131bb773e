"""Feed-forward agent: ReLU MLP from inputs to Q-values (the QMIX paper's two-step agent)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import MISSING
from torch import nn

from modules.agents.grouped import GroupedLinear
from runner.contracts import Component
from runner.registry import AGENTS


@dataclass
class MLPAgentConfig:
    name: str = MISSING
    hidden_dim: int = 64
    """Units per hidden layer."""
    n_layers: int = 1
    """Hidden layers (the QMIX paper's two-step agent: one layer of 64 ReLU units)."""

    @staticmethod
    def check(cfg) -> list[str]:
        errs = []
        if cfg.hidden_dim < 1:
            errs.append(f"agent.hidden_dim={cfg.hidden_dim} is invalid: must be >= 1")
        if cfg.n_layers < 1:
            errs.append(f"agent.n_layers={cfg.n_layers} is invalid: must be >= 1")
        return errs


@AGENTS.register("mlp", config=MLPAgentConfig)
class MLPAgent(nn.Module, Component):
    recurrent = False
    conditioned = False

    def __init__(self, cfg: MLPAgentConfig, input_dim: int, n_actions: int, n_param_groups: int) -> None:
        super().__init__()
        dims = [input_dim] + [cfg.hidden_dim] * cfg.n_layers
        self.hidden = nn.ModuleList(GroupedLinear(n_param_groups, i, o) for i, o in zip(dims[:-1], dims[1:]))
        self.out = GroupedLinear(n_param_groups, dims[-1], n_actions)
        self.hidden_dim = 0

    check_config = staticmethod(MLPAgentConfig.check)

    def init_hidden(self, batch_shape: tuple[int, ...]) -> torch.Tensor | None:
        return None

    def forward(self, inputs: torch.Tensor, hidden: torch.Tensor | None = None):
        x = inputs
        for layer in self.hidden:
            x = torch.relu(layer(x))
        return self.out(x), None
