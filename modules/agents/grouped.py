"""Linear layers whose parameters are shared by all agents or held once per agent."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class GroupedLinear(nn.Module):
    """y[..., g, :] = x[..., g, :] @ W[g] + b[g] for G parameter groups over the agent dim.

    G == 1 shares the weights across agents (a plain linear layer); G == N gives every agent
    its own weights, computed in one batched matmul.
    """

    def __init__(self, n_groups: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.n_groups = n_groups
        self.weight = nn.Parameter(torch.empty(n_groups, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(n_groups, out_features))
        bound = 1.0 / math.sqrt(in_features)
        # the same init as nn.Linear, per group
        for g in range(n_groups):
            nn.init.kaiming_uniform_(self.weight[g], a=math.sqrt(5))
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.n_groups == 1:
            return F.linear(x, self.weight[0], self.bias[0])
        # x: [..., G, in] -> [..., G, 1, in] @ [G, in, out] -> [..., G, out]
        return (x.unsqueeze(-2) @ self.weight.transpose(1, 2)).squeeze(-2) + self.bias
