"""Orthogonal initialisation of an agent or critic network (the PPO family's choice: Engstrom et al.
2020, "Implementation Matters in Deep Policy Gradients"; MAPPO's code base): every weight matrix
orthogonal with gain ``gain`` (sqrt(2) for ReLU layers), the output layer with ``out_gain`` (0.01
for a policy: near-uniform first actions; 1 for a value), every bias zero."""

from __future__ import annotations

import torch
from torch import nn

from modules.agents.grouped import GroupedLinear


@torch.no_grad()
def orthogonal_init(net: nn.Module, gain: float, out_gain: float) -> None:
    """``net``'s GroupedLinear layers, in registration order; the last one is the output layer."""
    layers = [m for m in net.modules() if isinstance(m, GroupedLinear)]
    for i, layer in enumerate(layers):
        g = out_gain if i == len(layers) - 1 else gain
        for w in layer.weight:  # one [out, in] matrix per parameter group
            nn.init.orthogonal_(w, gain=g)
        layer.bias.zero_()
