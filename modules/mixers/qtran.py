"""QTRAN-base's joint networks (Son et al. 2019): the joint action-value Q_jt(s, u) and the state value V(s).

Not a registered mixer: a mixer maps the agents' chosen Q-values to one joint value
(``forward(agent_qs, states)``), while Q_jt is a function of the joint *action* (and the agents'
features), learned beside the agents by ``learner=qtran_learner``, which owns these networks.

Two input architectures (``learner.qtran_arch``, PyMARL's names):

- ``qtran_paper``: the paper's Q_jt. Each agent's feature h_i (its recurrent hidden state, or its
  input for a feed-forward agent) and one-hot action u_i pass through a shared 2-layer encoder; the
  encodings are summed over agents (so the network is invariant to agent order) and concatenated
  with the state.
- ``coma_critic``: the state ++ the one-hot actions of all agents.

``network_size``: ``small`` (two hidden ReLU layers of ``embed_dim`` units in Q_jt and V) or
``big`` (three).
"""

from __future__ import annotations

import torch
from torch import nn

ARCHS = ("qtran_paper", "coma_critic")
SIZES = {"small": 2, "big": 3}


def _mlp(in_dim: int, hidden: int, layers: int) -> nn.Sequential:
    mods: list[nn.Module] = []
    d = in_dim
    for _ in range(layers):
        mods += [nn.Linear(d, hidden), nn.ReLU()]
        d = hidden
    mods.append(nn.Linear(d, 1))
    return nn.Sequential(*mods)


class QTranJoint(nn.Module):
    """Q_jt(s, h, u) and V(s): ``forward(states [..., S], features [..., N, H], actions_onehot [..., N, A])``
    returns (Q_jt [..., 1], V [..., 1])."""

    def __init__(self, arch: str, network_size: str, embed_dim: int, n_agents: int, n_actions: int,
                 state_dim: int, feature_dim: int) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"qtran_arch={arch!r}: must be one of {', '.join(ARCHS)}")
        self.arch, self.n_agents, self.n_actions = arch, n_agents, n_actions
        layers = SIZES[network_size]
        if arch == "qtran_paper":
            enc = feature_dim + n_actions
            self.action_encoding = nn.Sequential(nn.Linear(enc, enc), nn.ReLU(), nn.Linear(enc, enc))
            q_in = state_dim + enc
        else:
            q_in = state_dim + n_agents * n_actions
        self.Q = _mlp(q_in, embed_dim, layers)
        self.V = _mlp(state_dim, embed_dim, layers)

    def q(self, states: torch.Tensor, features: torch.Tensor | None, actions_onehot: torch.Tensor) -> torch.Tensor:
        """Q_jt [..., 1] of the joint actions given as one-hots [..., N, A]."""
        if self.arch == "qtran_paper":
            assert features is not None  # qtran_paper: the learner passes the agents' features
            enc = self.action_encoding(torch.cat([features, actions_onehot], -1)).sum(-2)
            return self.Q(torch.cat([states, enc], -1))
        return self.Q(torch.cat([states, actions_onehot.flatten(-2)], -1))

    def v(self, states: torch.Tensor) -> torch.Tensor:
        return self.V(states)

    def forward(self, states: torch.Tensor, features: torch.Tensor | None, actions_onehot: torch.Tensor):
        return self.q(states, features, actions_onehot), self.v(states)
