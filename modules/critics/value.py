"""State-value critics V of the on-policy actor-critic learners (IPPO, MAPPO).

One network evaluates every agent's value from the agent's own critic input, with a one-hot agent id
(shared weights, as EPyMARL's ``ac_critic``/``cv_critic``) or one set of weights per agent
(``share_params=false``):

- ``obs`` (IPPO, EPyMARL's ``ac_critic``): the agent's own observation.
- ``state`` (MAPPO, EPyMARL's ``cv_critic``): the env's global state, the same for every agent.
- ``agent_state`` (the MAPPO paper's "agent-specific global state"): state ++ the agent's own
  observation.

The body is an MLP (EPyMARL's critics: ``n_layers`` ReLU layers of ``hidden_dim``) or a GRU over
the episode (``recurrent``, as in the MAPPO paper's recurrent critic).
"""

from __future__ import annotations

from enum import Enum
from typing import Any

import torch
from torch import nn

from modules.agents.gru import GRUAgent, GRUAgentConfig
from modules.agents.init import orthogonal_init
from modules.agents.mlp import MLPAgent, MLPAgentConfig


class CriticInput(str, Enum):
    """``learner.critic_input``; the config value is its name."""

    obs = "obs"
    state = "state"
    agent_state = "agent_state"


def critic_input_dim(kind: CriticInput, obs_dim: int, state_dim: int, n_agents: int) -> int:
    return {CriticInput.obs: obs_dim, CriticInput.state: state_dim, CriticInput.agent_state: state_dim + obs_dim}[kind] + n_agents


class ValueCritic(nn.Module):
    """V [B, T, N] of every agent at every step of an episode batch's inputs."""

    agent_ids: torch.Tensor

    def __init__(self, kind: CriticInput, obs_dim: int, state_dim: int, n_agents: int, hidden_dim: int, n_layers: int,
                 recurrent: bool, share_params: bool, orthogonal: bool) -> None:
        super().__init__()
        self.kind, self.n_agents = CriticInput(kind), n_agents
        input_dim = critic_input_dim(self.kind, obs_dim, state_dim, n_agents)
        groups = 1 if share_params else n_agents
        self.recurrent = recurrent
        self.net: Any  # an agent network: init_hidden, forward -> (values, hidden)
        if recurrent:
            self.net = GRUAgent(GRUAgentConfig(name="gru", hidden_dim=hidden_dim), input_dim, 1, groups)
        else:
            self.net = MLPAgent(MLPAgentConfig(name="mlp", hidden_dim=hidden_dim, n_layers=n_layers), input_dim, 1, groups)
        if orthogonal:
            orthogonal_init(self.net, gain=2**0.5, out_gain=1.0)
        self.register_buffer("agent_ids", torch.eye(n_agents), persistent=False)

    def inputs(self, obs: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """obs [B, T, N, O], state [B, T, S] -> [B, T, N, in]."""
        lead = obs.shape[:-2]
        parts = []
        if self.kind != CriticInput.obs:
            parts.append(state.unsqueeze(-2).expand(*lead, self.n_agents, state.shape[-1]))
        if self.kind != CriticInput.state:
            parts.append(obs)
        parts.append(self.agent_ids.expand(*lead, -1, -1))
        return torch.cat(parts, -1)

    def forward(self, obs: torch.Tensor, state: torch.Tensor, cut: torch.Tensor | None = None) -> torch.Tensor:
        """``cut`` [B] (recurrent): the hidden state entering step cut[b] is detached (chunked BPTT)."""
        x = self.inputs(obs, state)
        if not self.recurrent:
            return self.net(x)[0].squeeze(-1)
        hidden = self.net.init_hidden((x.shape[0], self.n_agents))
        vs = []
        for t in range(x.shape[1]):
            if cut is not None and bool((cut == t).any()):
                hidden = torch.where((cut == t).view(-1, 1, 1), hidden.detach(), hidden)
            v, hidden = self.net(x[:, t], hidden)
            vs.append(v)
        return torch.stack(vs, 1).squeeze(-1)
