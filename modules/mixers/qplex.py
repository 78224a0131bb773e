"""QPLEX mixer (Wang et al., ICLR 2021, "QPLEX: Duplex Dueling Multi-Agent Q-Learning").

Duplex dueling: each agent's Q_i is split into V_i = max_a Q_i and A_i = Q_i - V_i <= 0, both
transformed with the state: Q_i' = w_i(s) Q_i + b_i(s) with w_i > 0 (so V_i' = w_i V_i + b_i and
A_i' = w_i A_i), and the joint advantage weights them with lambda_i(s, a) > 0 from multi-head
attention over the state and the joint action:

    Q_tot(s, a) = sum_i V_i'(s) + sum_i lambda_i(s, a) A_i'(s, a_i).

As the authors' code (``is_minus_one``, the default) it is computed as
``sum_i Q_i' + sum_i (lambda_i - 1) A_i'`` with A_i' detached in the second sum (``stop_gradient``),
the same value with the TD gradient reaching Q_i through the first sum only. Since A_i' <= 0 with
equality at the greedy action and lambda_i > 0, Q_tot is maximal at the individual argmaxes (IGM).

lambda_i(s, a) = sum_k |key_k(s)| * sigmoid(agent_k(s))_i * sigmoid(action_k(s, onehot(a)))_i over
``n_head`` heads (the authors' ``DMAQ_SI_Weight``); w_i and b_i are state networks of one hidden
ReLU layer of ``hypernet_embed`` units. Unlike the other mixers, the forward pass needs the joint
action (one-hot) and the agents' max Q_i, so this mixer is built and called by
``learner=qplex_learner`` (``runner/learners/qplex.py``); ``learner=q_learner`` is refused at build.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import MISSING
from torch import nn

from runner.contracts import ACTION_INPUTS, DUELING_MIXER, STATE, Component
from runner.errors import invalid
from runner.registry import MIXERS

EPS = 1e-10  # the authors' floor of the positive weights (|x| + 1e-10)


@dataclass
class QplexConfig:
    name: str = MISSING
    hypernet_embed: int = 64
    """Hidden units of the state networks of the transformation weights w_i(s) and biases b_i(s)."""
    n_head: int = 10
    """Attention heads of lambda_i(s, a) (the authors' ``num_kernel``)."""
    adv_hypernet_layers: int = 3
    """Layers (1, 2 or 3) of each head's key, agent and action networks (authors' qplex.yaml: 3)."""
    adv_hypernet_embed: int = 64
    """Hidden units of those networks when adv_hypernet_layers > 1."""
    weighted_head: bool = True
    """Transform Q_i with w_i(s) Q_i + b_i(s) (false: w_i = 1, b_i = 0)."""
    is_minus_one: bool = True
    """Q_tot = sum_i Q_i' + sum_i (lambda_i - 1) A_i' = sum_i V_i' + sum_i lambda_i A_i' (the paper's
    form; the authors' default). false: sum_i Q_i' + sum_i lambda_i A_i', i.e. weights 1 + lambda_i,
    as the authors' code does with is_minus_one=False."""
    stop_gradient: bool = True
    """Detach A_i' in the weighted advantage term (the authors' code always does)."""

    @staticmethod
    def check(cfg) -> list[str]:
        errs = []
        if cfg.hypernet_embed < 1:
            errs.append(invalid("mixer.hypernet_embed", cfg.hypernet_embed, "must be >= 1"))
        if cfg.n_head < 1:
            errs.append(invalid("mixer.n_head", cfg.n_head, "must be >= 1"))
        if cfg.adv_hypernet_layers not in (1, 2, 3):
            errs.append(invalid("mixer.adv_hypernet_layers", cfg.adv_hypernet_layers, "must be 1, 2 or 3"))
        if cfg.adv_hypernet_embed < 1:
            errs.append(invalid("mixer.adv_hypernet_embed", cfg.adv_hypernet_embed, "must be >= 1"))
        return errs


def _mlp(layers: int, in_dim: int, hidden: int, out_dim: int) -> nn.Module:
    if layers == 1:
        return nn.Linear(in_dim, out_dim)
    mods: list[nn.Module] = [nn.Linear(in_dim, hidden), nn.ReLU()]
    for _ in range(layers - 2):
        mods += [nn.Linear(hidden, hidden), nn.ReLU()]
    return nn.Sequential(*mods, nn.Linear(hidden, out_dim))


class HeadsMLP(nn.Module):
    """``heads`` independent MLPs of the same shape (ReLU between layers), run as one batched matmul
    per layer: x [..., in] -> [heads, ..., out]. Each head is initialised as nn.Linear layers are."""

    def __init__(self, heads: int, layers: int, in_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden] * (layers - 1) + [out_dim]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            bound = d_in**-0.5  # nn.Linear's default: U(-1/sqrt(in), 1/sqrt(in)) for weights and biases
            self.weights.append(nn.Parameter(torch.empty(heads, d_in, d_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(heads, 1, d_out).uniform_(-bound, bound)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        h = x.reshape(1, -1, x.shape[-1])
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            if i:
                h = torch.relu(h)
            h = torch.baddbmm(b, h.expand(w.shape[0], -1, -1) if i == 0 else h, w)
        return h.view(h.shape[0], *lead, h.shape[-1])


class AdvantageWeights(nn.Module):
    """lambda_i(s, a) > 0: multi-head attention over the state and the joint action (one-hot); per
    head k, |key_k(s)| * sigmoid(agent_k(s))_i * sigmoid(action_k(s, a))_i, summed over the heads."""

    def __init__(self, cfg: QplexConfig, n_agents: int, n_actions: int, state_dim: int) -> None:
        super().__init__()
        H, L, E = cfg.n_head, cfg.adv_hypernet_layers, cfg.adv_hypernet_embed
        self.keys = HeadsMLP(H, L, state_dim, E, 1)
        self.agents = HeadsMLP(H, L, state_dim, E, n_agents)
        self.actions = HeadsMLP(H, L, state_dim + n_agents * n_actions, E, n_agents)

    def forward(self, states: torch.Tensor, actions_onehot: torch.Tensor) -> torch.Tensor:
        """states [..., S], actions_onehot [..., N, A] -> lambda [..., N]."""
        sa = torch.cat([states, actions_onehot.flatten(-2)], -1)
        heads = (self.keys(states).abs() + EPS) * torch.sigmoid(self.agents(states)) * torch.sigmoid(self.actions(sa))
        return heads.sum(0)


@MIXERS.register("qplex", config=QplexConfig)
class QplexMixer(nn.Module, Component):
    joint = True
    provides = frozenset({DUELING_MIXER.name})
    # the joint action and the agents' max Q-values come from learner=qplex_learner
    requires = frozenset({STATE.name, ACTION_INPUTS.name})
    check_config = staticmethod(QplexConfig.check)

    def __init__(self, cfg: QplexConfig, n_agents: int, state_dim: int, n_actions: int) -> None:
        super().__init__()
        self.cfg, self.n_agents, self.n_actions = cfg, n_agents, n_actions
        self.hyper_w = _mlp(2, state_dim, cfg.hypernet_embed, n_agents)  # w_i(s) = |.| + eps
        self.hyper_b = _mlp(2, state_dim, cfg.hypernet_embed, n_agents)  # b_i(s)
        self.lambdas = AdvantageWeights(cfg, n_agents, n_actions, state_dim)

    def transform(self, qs: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """w_i(s) q_i + b_i(s) for per-agent values qs [..., N] (identity without weighted_head)."""
        if not self.cfg.weighted_head:
            return qs
        return (self.hyper_w(states).abs() + EPS) * qs + self.hyper_b(states)

    def forward(self, agent_qs: torch.Tensor, states: torch.Tensor, actions_onehot: torch.Tensor,
                max_qs: torch.Tensor) -> torch.Tensor:
        """agent_qs [..., N] (Q_i of the actions in actions_onehot [..., N, A]), states [..., S],
        max_qs [..., N] (V_i = max_a Q_i) -> Q_tot [..., 1]."""
        q = self.transform(agent_qs, states)
        v = self.transform(max_qs, states)
        adv = q - v  # A_i' = w_i (Q_i - V_i) <= 0
        if self.cfg.stop_gradient:
            adv = adv.detach()
        lam = self.lambdas(states, actions_onehot)
        if self.cfg.is_minus_one:
            lam = lam - 1.0
        return q.sum(-1, keepdim=True) + (lam * adv).sum(-1, keepdim=True)
