"""Weighted QMIX (Rashid et al. 2020, NeurIPS, arXiv 2006.10800): OW-QMIX and CW-QMIX.

Two joint-action value functions are learned side by side:

- Q-hat*, an unrestricted centralised estimate: a second agent network (same architecture as the
  agents', its own weights) gives per-agent central utilities, and a feed-forward network of
  state ++ utilities mixes them with no monotonicity constraint (3 ReLU layers of
  ``central_mixing_embed_dim`` units) plus a state value V(s).
- Q_tot, the ordinary QMIX factorisation (``mixer=qmix``, unchanged) that the agents act with.

Both regress on one target, built from Q-hat*'s target networks at QMIX's greedy joint action
(the argmax that the monotonic Q_tot makes tractable):

    y = r + gamma * (1 - terminated) * Q-hat*_target(s', argmax_u Q_tot(s', u))

Q-hat* minimises the plain squared error (times ``central_loss``); QMIX the weighted one,
w(s, u) * (Q_tot(s, u) - y)^2, with w = 1 on the joint actions that matter and ``w`` (the paper's
alpha) elsewhere:

- ``weighting=ow`` (optimistic): w = 1 where Q_tot(s, u) < y (underestimated joint actions);
- ``weighting=cw`` (central): w = 1 where u is QMIX's greedy joint action or
  y > Q-hat*_target(s, argmax_u Q_tot(s, u)) (the target beats the current best's central value).

As the authors' code (oxwhirl/wqmix, ``max_q_learner``): the argmax comes from the online agent
networks (double Q; with ``double_q=false`` from the target agents), CW compares against the
*target* central network, the two losses are each averaged over the valid steps and summed.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch
from torch import nn

from modules.agents.grouped import GroupedLinear
from runner.buffers.episode import EpisodeBatch
from runner.contracts import JOINT_MIXER, STATE
from runner.controllers.basic import NEG
from runner.errors import check_range
from runner.learners.q_learner import QLearner, QLearnerConfig, td_lambda_targets, td_stats
from runner.registry import LEARNERS


class Weighting(str, Enum):
    """``learner.weighting``; the config value is its name (Hydra rejects any other)."""

    ow = "ow"
    cw = "cw"


@dataclass
class WQMixLearnerConfig(QLearnerConfig):
    weighting: Weighting = Weighting.ow
    """ow (optimistic: full weight where Q_tot < target) or cw (central: full weight on QMIX's greedy
    joint action and where the target beats Q-hat* there)."""
    w: float = 0.1
    """The paper's alpha: the weight of every other joint action, in (0, 1] (1: plain QMIX towards
    Q-hat*'s targets). oxwhirl/wqmix's default 0.1 (its README: the paper's appendix lists the values
    of each experiment)."""
    central_loss: float = 1.0
    """Coefficient of Q-hat*'s squared TD error in the loss (the authors' code: 1)."""
    central_mixing_embed_dim: int = 256
    """Units of each of the 3 hidden layers of Q-hat*'s feed-forward mixer and of its V(s)."""


class CentralFFMixer(nn.Module):
    """Q-hat*(s, u) = f([s, q_1(u_1), ..., q_N(u_N)]) + V(s): a ReLU MLP, no monotonicity constraint."""

    joint = True

    def __init__(self, n_agents: int, state_dim: int, embed_dim: int) -> None:
        super().__init__()
        d = embed_dim
        self.net = nn.Sequential(
            nn.Linear(state_dim + n_agents, d), nn.ReLU(), nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 1)
        )
        self.v = nn.Sequential(nn.Linear(state_dim, d), nn.ReLU(), nn.Linear(d, 1))

    def forward(self, agent_qs: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """agent_qs [..., N], states [..., S] -> Q-hat* [..., 1]."""
        return self.net(torch.cat([states, agent_qs], -1)) + self.v(states)


def _reinitialise(module: nn.Module) -> nn.Module:
    """Fresh random weights for a copied agent network (its layers' own initialisers; the agents'
    layers are GroupedLinear, and torch's linear, recurrent and norm layers)."""
    for m in module.modules():
        if isinstance(m, GroupedLinear):
            bound = 1.0 / math.sqrt(m.weight.shape[-1])
            with torch.no_grad():
                for g in range(m.n_groups):
                    nn.init.kaiming_uniform_(m.weight[g], a=math.sqrt(5))
                nn.init.uniform_(m.bias, -bound, bound)
        elif isinstance(m, (nn.Linear, nn.RNNCellBase, nn.RNNBase, nn.LayerNorm)):
            m.reset_parameters()
    return module


def wqmix_weights(
    weighting: Weighting, alpha: float, td: torch.Tensor, is_greedy: torch.Tensor, targets: torch.Tensor, central_greedy: torch.Tensor
) -> torch.Tensor:
    """The per-sample weights [B, T, 1] of QMIX's squared TD error.

    td = Q_tot(s, u) - y; is_greedy [B, T, 1]: u is QMIX's greedy joint action; central_greedy:
    Q-hat*(s, argmax Q_tot) (target network). OW: 1 where td < 0; CW: 1 where is_greedy or
    y > central_greedy; alpha elsewhere."""
    if weighting == Weighting.ow:
        full = td < 0
    else:
        full = is_greedy | (targets > central_greedy)
    return torch.where(full, torch.ones_like(td), torch.full_like(td, alpha))


@LEARNERS.register("wqmix_learner", config=WQMixLearnerConfig)
class WQMixLearner(QLearner):
    cfg: WQMixLearnerConfig
    # requires: the qmix mixer and Q-hat*'s mixer are both conditioned on the state (QLearner's
    # OFF_POLICY plus STATE)
    requires = QLearner.requires | frozenset({STATE.name, JOINT_MIXER.name})  # Q_tot is what it weights

    def __init__(self, cfg: WQMixLearnerConfig, controller: Any, mixer_cfg: Any, spec: Any, device: torch.device) -> None:
        super().__init__(cfg, controller, mixer_cfg, spec, device)
        for k in ("central_agent", "central_mixer"):  # Q-hat* has target copies too
            self.targets[k] = copy.deepcopy(self.modules[k]).requires_grad_(False)

    @staticmethod
    def check_config(cfg: Any) -> list[str]:
        errs = QLearner.check_config(cfg)
        check_range(errs, "learner.w", cfg.w, 0.0, 1.0, lo_open=True)
        if not cfg.central_loss > 0:
            errs.append(f"learner.central_loss={cfg.central_loss} is invalid: must be > 0 (Q-hat* gives the targets)")
        if cfg.central_mixing_embed_dim < 1:
            errs.append(f"learner.central_mixing_embed_dim={cfg.central_mixing_embed_dim} is invalid: must be >= 1")
        return errs

    def extra_modules(self, device: torch.device) -> dict[str, nn.Module]:
        n_mixed = self.spec.n_agents if self.learn_idx is None else len(self.learn_idx)
        self.central_agent = _reinitialise(copy.deepcopy(self.controller.agent)).to(device)
        self.central_mixer = CentralFFMixer(n_mixed, self.spec.state_dim, self.cfg.central_mixing_embed_dim).to(device)
        return {"central_agent": self.central_agent, "central_mixer": self.central_mixer}

    def loss(self, batch: EpisodeBatch, t_env: int):
        cfg = self.cfg
        actions, terminated, mask, rewards, avail, states = self.td_batch(batch)
        q = self.learning(self.controller.forward_seq(batch))  # [B, T+1, N, A]
        central_q = self.learning(self.controller.forward_seq(batch, agent=self.central_agent))
        chosen = q[:, :-1].gather(-1, actions.unsqueeze(-1)).squeeze(-1)  # [B, T, N]
        central_chosen = central_q[:, :-1].gather(-1, actions.unsqueeze(-1)).squeeze(-1)
        with torch.no_grad():
            if cfg.double_q:  # QMIX's greedy joint action, by the online agents
                greedy_q = q.detach()
            else:
                greedy_q = self.learning(self.controller.forward_seq(batch, agent=self.targets["agent"]))
            greedy = greedy_q.masked_fill(~avail, NEG).argmax(-1, keepdim=True)  # [B, T+1, N, 1]
            t_central = self.learning(self.controller.forward_seq(batch, agent=self.targets["central_agent"]))
            t_central_greedy = t_central.gather(-1, greedy).squeeze(-1)  # [B, T+1, N]
            central_greedy = self.targets["central_mixer"](t_central_greedy, states)  # [B, T+1, 1]
            targets = td_lambda_targets(rewards, terminated, mask, central_greedy[:, 1:], cfg.gamma, cfg.td_lambda)
        chosen_tot = self.mixer(chosen, states[:, :-1])  # [B, T, 1]
        central_tot = self.central_mixer(central_chosen, states[:, :-1])
        m = mask.unsqueeze(-1)
        n_valid = m.sum()
        td = (chosen_tot - targets) * m
        central_td = (central_tot - targets) * m
        with torch.no_grad():
            is_greedy = (actions == greedy[:, :-1].squeeze(-1)).all(-1, keepdim=True)
            ws = wqmix_weights(cfg.weighting, cfg.w, td, is_greedy, targets, central_greedy[:, :-1])
        qmix_loss = (ws * td**2).sum() / n_valid
        central_loss = (central_td**2).sum() / n_valid
        loss = qmix_loss + cfg.central_loss * central_loss

        stats = td_stats(td, chosen_tot, targets, m, chosen.shape[-1], joint=True)
        stats |= {
            "qmix_loss": qmix_loss.detach(),
            "central_loss": central_loss.detach(),
            "central_taken_mean": (central_tot.detach() * m).sum() / n_valid,
            "w_mean": (ws * m).sum() / n_valid,  # the authors' w_to_use: the share of full weights, blended
        }
        if self.learn_positions:
            stats.update(self.group_stats(chosen.detach(), td.detach(), m))
        return loss, stats

    @torch.no_grad()
    def q_table(self, obs: torch.Tensor, state: torch.Tensor, avail: torch.Tensor) -> dict[str, Any]:
        """QLearner's tables (agent_q, q_tot) plus ``q_central``: Q-hat* over all joint actions."""
        out = super().q_table(obs, state, avail)
        central_q = self.controller.q_values(obs.unsqueeze(0), agent=self.central_agent)[0]  # [N, A]
        if self.learn_idx is not None:
            central_q = central_q[self.learn_idx]
        n, a = central_q.shape
        joint = torch.cartesian_prod(*[torch.arange(a, device=central_q.device)] * n).view(-1, n)
        qs = central_q.gather(1, joint.T).T  # [A^n, N]
        out["q_central"] = self.central_mixer(qs, state.expand(qs.shape[0], -1)).view(*([a] * n)).cpu().tolist()
        return out
