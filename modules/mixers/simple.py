"""The ``none`` mixer (independent Q-learning) and VDN (Sunehag et al. 2017): Q_tot = sum_i Q_i."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import MISSING
from torch import nn

from runner.contracts import JOINT_MIXER, NO_MIXER, Component
from runner.registry import MIXERS


@dataclass
class NoMixerConfig:
    name: str = MISSING


@MIXERS.register("none", config=NoMixerConfig)
class NoMixer(nn.Module, Component):
    """Identity: every agent learns its own Q from the team reward (IQL)."""

    joint = False
    provides = frozenset({NO_MIXER.name})

    def __init__(self, cfg: NoMixerConfig, n_agents: int, state_dim: int) -> None:
        super().__init__()

    def forward(self, agent_qs: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        return agent_qs


@dataclass
class VDNConfig:
    name: str = MISSING


@MIXERS.register("vdn", config=VDNConfig)
class VDNMixer(nn.Module, Component):
    """Value decomposition networks: the sum of the agents' Q-values."""

    joint = True
    provides = frozenset({JOINT_MIXER.name})

    def __init__(self, cfg: VDNConfig, n_agents: int, state_dim: int) -> None:
        super().__init__()

    def forward(self, agent_qs: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        return agent_qs.sum(-1, keepdim=True)
