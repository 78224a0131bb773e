"""Centralised action-value critics Q(s, a_1..a_n) of MADDPG and MATD3.

One network serves every agent (parameter sharing, as EPyMARL's ``maddpg_critic``): its input is the
global state, the joint action (continuous actions scaled to [-1, 1] per dim; one-hot for discrete
actions) and a one-hot id of the agent whose value it is, and its output that agent's Q. EPyMARL's
layout: fc-ReLU-fc-ReLU-fc to one value.
"""

from __future__ import annotations

import torch
from torch import nn


class QCritic(nn.Module):
    """ReLU MLP from [state, joint action, agent id] to one Q-value per agent."""

    ids: torch.Tensor

    def __init__(self, state_dim: int, n_agents: int, n_actions: int, hidden_dim: int = 128, n_layers: int = 2) -> None:
        super().__init__()
        self.n_agents, self.n_actions = n_agents, n_actions
        dims = [state_dim + n_agents * n_actions + n_agents] + [hidden_dim] * n_layers
        self.hidden = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims[:-1], dims[1:]))
        self.out = nn.Linear(dims[-1], 1)
        self.register_buffer("ids", torch.eye(n_agents), persistent=False)

    def forward(self, state: torch.Tensor, joint: torch.Tensor, agents: torch.Tensor) -> torch.Tensor:
        """Q [*lead, K] of K agents (indices ``agents`` [K]) from the state [*lead, S] and the joint
        action each of them is valued at, [*lead, K, N, A] (or [*lead, N, A]: the same for all)."""
        k = agents.shape[0]
        lead = state.shape[:-1]
        if joint.dim() == len(lead) + 2:
            joint = joint.unsqueeze(-3).expand(*lead, k, -1, -1)
        x = torch.cat([state.unsqueeze(-2).expand(*lead, k, -1), joint.flatten(-2),
                       self.ids[agents].expand(*lead, -1, -1)], -1)
        for layer in self.hidden:
            x = torch.relu(layer(x))
        return self.out(x).squeeze(-1)
