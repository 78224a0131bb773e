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


class GroupedGRUCell(nn.Module):
    """A GRU cell over the agent dim with shared (G == 1) or per-agent (G == N) weights."""

    def __init__(self, n_groups: int, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.w_ih = GroupedLinear(n_groups, input_size, 3 * hidden_size)
        self.w_hh = GroupedLinear(n_groups, hidden_size, 3 * hidden_size)

    def forward(self, x: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        i_r, i_z, i_n = self.w_ih(x).chunk(3, -1)
        h_r, h_z, h_n = self.w_hh(hidden).chunk(3, -1)
        r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
        return (1 - z) * torch.tanh(i_n + r * h_n) + z * hidden
