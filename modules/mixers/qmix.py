"""QMIX mixer (Rashid et al. 2018): a monotonic mixing network whose weights come from the state.

Hypernetworks map the state to the mixing weights, taken in absolute value so that
dQ_tot/dQ_i >= 0; the biases are unconstrained and the final bias is a 2-layer state network.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import MISSING
from torch import nn

from runner.contracts import JOINT_MIXER, STATE, Component
from runner.registry import MIXERS


@dataclass
class QMixConfig:
    name: str = MISSING
    embed_dim: int = 32
    """Width of the mixing network's hidden layer (the QMIX paper's two-step setup: 8)."""
    hypernet_layers: int = 2
    """1: linear hypernetworks; 2: one hidden ReLU layer of hypernet_embed units."""
    hypernet_embed: int = 64
    """Hidden units of 2-layer hypernetworks."""

    @staticmethod
    def check(cfg) -> list[str]:
        m, errs = cfg, []
        if m.embed_dim < 1:
            errs.append(f"mixer.embed_dim={m.embed_dim} is invalid: must be >= 1")
        if m.hypernet_layers not in (1, 2):
            errs.append(f"mixer.hypernet_layers={m.hypernet_layers} is invalid: must be 1 or 2")
        if m.hypernet_embed < 1:
            errs.append(f"mixer.hypernet_embed={m.hypernet_embed} is invalid: must be >= 1")
        return errs


def _hypernet(layers: int, in_dim: int, hidden: int, out_dim: int) -> nn.Module:
    if layers == 1:
        return nn.Linear(in_dim, out_dim)
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))


@MIXERS.register("qmix", config=QMixConfig)
class QMixer(nn.Module, Component):
    joint = True
    provides = frozenset({JOINT_MIXER.name})
    requires = frozenset({STATE.name})
    check_config = staticmethod(QMixConfig.check)

    def __init__(self, cfg: QMixConfig, n_agents: int, state_dim: int) -> None:
        super().__init__()
        self.n_agents, self.embed_dim = n_agents, cfg.embed_dim
        self.hyper_w1 = _hypernet(cfg.hypernet_layers, state_dim, cfg.hypernet_embed, cfg.embed_dim * n_agents)
        self.hyper_w2 = _hypernet(cfg.hypernet_layers, state_dim, cfg.hypernet_embed, cfg.embed_dim)
        self.hyper_b1 = nn.Linear(state_dim, cfg.embed_dim)
        self.hyper_b2 = nn.Sequential(nn.Linear(state_dim, cfg.embed_dim), nn.ReLU(), nn.Linear(cfg.embed_dim, 1))

    def forward(self, agent_qs: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """agent_qs [..., N], states [..., S] -> Q_tot [..., 1]."""
        w1 = self.hyper_w1(states).abs().view(*states.shape[:-1], self.n_agents, self.embed_dim)
        b1 = self.hyper_b1(states)
        hidden = torch.nn.functional.elu((agent_qs.unsqueeze(-2) @ w1).squeeze(-2) + b1)
        w2 = self.hyper_w2(states).abs()
        return (hidden * w2).sum(-1, keepdim=True) + self.hyper_b2(states)
