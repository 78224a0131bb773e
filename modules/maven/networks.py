"""The hierarchical latent policy and the recurrent discriminator of MAVEN (Mahajan et al. 2019)."""

from __future__ import annotations

import torch
from torch import nn


class LatentPolicy(nn.Module):
    """pi(z | s_0): a softmax over noise_dim latent values from the episode's initial state."""

    def __init__(self, state_dim: int, noise_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(state_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, noise_dim))

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        """Logits [..., noise_dim]."""
        return self.net(state)


class Discriminator(nn.Module):
    """q(z | trajectory): a GRU over softmax(Q) of all agents ++ state, classifying z at each step."""

    def __init__(self, input_dim: int, noise_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.gru = nn.GRU(input_dim, hidden_dim, batch_first=True)
        self.out = nn.Linear(hidden_dim, noise_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, T, input_dim] -> logits [B, T, noise_dim] (each step sees the trajectory so far)."""
        h, _ = self.gru(x)
        return self.out(h)
