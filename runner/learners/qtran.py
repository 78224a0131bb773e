"""QTRAN-base (Son et al., ICML 2019, arXiv 1905.05408): factorisation by transformation.

Besides the agents' Q_i(tau_i, u_i), a joint action-value network Q_jt(s, u) and a state value V(s)
(modules/mixers/qtran.py) are learned. The transformed joint value is the VDN sum
Q'_jt(tau, u) = sum_i Q_i(tau_i, u_i); the agents act greedily on their own Q_i, and QTRAN's
conditions make that greedy joint action ū the argmax of Q_jt:

    Q'_jt(ū) - Q_jt(ū) + V(s) = 0,   Q'_jt(u) - Q_jt(u) + V(s) >= 0 for every u.

Loss = L_td + opt_loss * L_opt + nopt_min_loss * L_nopt, all masked means over the valid steps:

- L_td   = (Q_jt(s, u) - y)^2 with y = r + gamma * (1 - terminated) * target Q_jt(s', ū') where ū'
  is the greedy joint action of the individual Qs at s' (online agents with ``double_q``, as PyMARL;
  else the target agents), evaluated by the target networks;
- L_opt  = (Q'_jt(ū) - Q_jt(ū).detach() + V(s))^2;
- L_nopt = min(Q'_jt(u) - Q_jt(u).detach() + V(s), 0)^2 for the taken joint action u.

Q_jt is trained only by L_td; L_opt and L_nopt train the agents and V towards the conditions.
Defaults as PyMARL's (and pymarl2's) qtran: qtran_arch=qtran_paper, mixing_embed_dim=64,
network_size=small, opt_loss=1, nopt_min_loss=0.1, double_q=true. QTRAN-alt (the counterfactual
joint network and L_nopt-min) is not implemented (PyMARL does not implement it either).

The qtran_paper architecture feeds Q_jt the agents' features: a recurrent agent's hidden state
(PyMARL's ``mac.hidden_states``) or, for a feed-forward agent, its input (observation ++ id), which
is all that agent conditions on. They are read with a forward hook on the agent network, so any
agent of the ``agent`` group works unchanged; gradients of L_td reach the agents through them, as
in PyMARL.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch
from torch import nn

from modules.mixers.qtran import QTranJoint
from runner.buffers.episode import EpisodeBatch
from runner.contracts import NO_MIXER, OFF_POLICY, STATE, Controller
from runner.controllers.basic import NEG
from runner.errors import ConfigError, invalid
from runner.learners.base import BaseLearner, LearnerConfig, check_learner_config
from runner.registry import LEARNERS


class QTranArch(str, Enum):
    """``learner.qtran_arch``: Q_jt's inputs (the config value is its name; Hydra rejects any other)."""

    qtran_paper = "qtran_paper"
    coma_critic = "coma_critic"


class NetworkSize(str, Enum):
    """``learner.network_size``: two (small) or three (big) hidden layers in Q_jt and V."""

    small = "small"
    big = "big"


@dataclass
class QTranLearnerConfig(LearnerConfig):
    double_q: bool = True
    """The greedy next joint action of the TD target by the online agents (else the target agents)."""
    qtran_arch: QTranArch = QTranArch.qtran_paper
    """qtran_paper: Q_jt(state, sum_i enc(feature_i, u_i)); coma_critic: Q_jt(state, one-hot u)."""
    network_size: NetworkSize = NetworkSize.small
    """small: 2 hidden ReLU layers in Q_jt and V; big: 3."""
    mixing_embed_dim: int = 64
    """Units per hidden layer of Q_jt and V."""
    opt_loss: float = 1.0
    """Weight of L_opt (the paper's lambda_opt)."""
    nopt_min_loss: float = 0.1
    """Weight of L_nopt (the paper's lambda_nopt)."""


def _check_weight(errs: list[str], key: str, value: Any) -> None:
    if not (isinstance(value, (int, float)) and value >= 0 and value != float("inf")):
        errs.append(invalid(key, value, "must be a finite number >= 0"))


@LEARNERS.register("qtran_learner", config=QTranLearnerConfig)
class QTranLearner(BaseLearner):
    cfg: QTranLearnerConfig
    # V(s) and Q_jt(s, u) are functions of the global state
    requires = frozenset({OFF_POLICY.name, STATE.name, NO_MIXER.name})  # it owns its joint networks Q_jt and V

    def __init__(self, cfg: QTranLearnerConfig, controller: Controller, mixer_cfg: Any, spec: Any, device: torch.device) -> None:
        if controller.learn_idx is not None or isinstance(controller.agent, nn.ModuleDict):
            raise ConfigError("learner=qtran_learner does not support agent groups (`groups`): it learns one team of every agent")
        self.cfg, self.controller, self.spec = cfg, controller, spec
        self.learn_idx = None
        self.learn_positions: dict[str, list[int]] = {}
        n, a = spec.n_agents, spec.n_actions
        feature_dim = self._probe_feature_dim(spec, device)
        self.joint = QTranJoint(cfg.qtran_arch.value, cfg.network_size.value, cfg.mixing_embed_dim, n, a,
                                spec.state_dim, feature_dim).to(device)
        super().__init__(cfg, {"agent": controller.agent, "joint": self.joint}, device, target_keys=("agent", "joint"))
        self.eye = torch.eye(a, device=device)

    @staticmethod
    def check_config(cfg: Any) -> list[str]:
        errs = check_learner_config(cfg)
        _check_weight(errs, "learner.opt_loss", cfg.opt_loss)
        _check_weight(errs, "learner.nopt_min_loss", cfg.nopt_min_loss)
        if cfg.mixing_embed_dim < 1:
            errs.append(invalid("learner.mixing_embed_dim", cfg.mixing_embed_dim, "must be >= 1"))
        return errs

    # -- the agents' Q-values and features -------------------------------------------------------
    def _with_features(self, agent: nn.Module, call: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Run ``call()`` (a controller forward through ``agent``) and collect the agent's features at
        every call: its new hidden state, or its input for a feed-forward agent. Returns (Q, features)
        with features [..., N, H] aligned with Q [..., N, A]."""
        feats: list[torch.Tensor] = []

        def hook(_mod: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            feats.append(inputs[0] if output[1] is None else output[1])

        handle = agent.register_forward_hook(hook)
        try:
            q = call()
        finally:
            handle.remove()
        h = feats[0] if len(feats) == 1 and feats[0].dim() == q.dim() else torch.stack(feats, 1)
        return q, h

    def _probe_feature_dim(self, spec: Any, device: torch.device) -> int:
        obs = torch.zeros(1, spec.n_agents, spec.obs_dim, device=device)
        agent = self.controller.agent
        _, h = self._with_features(agent, lambda: self.controller.q_values(obs, agent))
        return int(h.shape[-1])

    def agent_values(self, batch: EpisodeBatch, target: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Q [B, T+1, N, A] and features [B, T+1, N, H] of the online (or target) agents."""
        agent = self.targets["agent"] if target else self.controller.agent
        return self._with_features(agent, lambda: self.controller.forward_seq(batch, agent=agent))

    # -- the loss ----------------------------------------------------------------------------------
    def loss(self, batch: EpisodeBatch, t_env: int):
        cfg = self.cfg
        actions = batch["actions"][:, :-1].long()  # [B, T, N]
        terminated = batch["terminated"][:, :-1].float()
        mask = batch["filled"][:, :-1].float()
        rewards = self.train_rewards(batch["reward"][:, :-1], mask)
        avail = batch["avail_actions"]
        states = batch["state"]

        q, h = self.agent_values(batch)  # [B, T+1, N, A], [B, T+1, N, H]
        chosen = q[:, :-1].gather(-1, actions.unsqueeze(-1)).squeeze(-1)  # [B, T, N]
        max_q, greedy = q.masked_fill(~avail, NEG).max(-1)  # [B, T+1, N]: Q_i(ū_i) and ū

        joint_q, v = self.joint(states[:, :-1], h[:, :-1], self.eye[actions])  # [B, T, 1] each
        with torch.no_grad():
            tq, th = self.agent_values(batch, target=True)
            nxt = greedy if cfg.double_q else tq.masked_fill(~avail, NEG).argmax(-1)
            target_joint: QTranJoint = self.targets["joint"]  # type: ignore[assignment]
            next_jq = target_joint.q(states[:, 1:], th[:, 1:], self.eye[nxt[:, 1:]])
            targets = rewards.unsqueeze(-1) + cfg.gamma * (1 - terminated.unsqueeze(-1)) * next_jq
        m = mask.unsqueeze(-1)
        n_valid = m.sum()

        td = (joint_q - targets) * m
        td_loss = (td**2).sum() / n_valid
        greedy_jq = self.joint.q(states[:, :-1], h[:, :-1], self.eye[greedy[:, :-1]]).detach()
        opt = (max_q[:, :-1].sum(-1, keepdim=True) - greedy_jq + v) * m
        opt_loss = (opt**2).sum() / n_valid
        nopt = (chosen.sum(-1, keepdim=True) - joint_q.detach() + v).clamp(max=0) * m
        nopt_loss = (nopt**2).sum() / n_valid
        loss = td_loss + cfg.opt_loss * opt_loss + cfg.nopt_min_loss * nopt_loss

        n_agents = chosen.shape[-1]
        jq_sum = (joint_q.detach() * m).sum()
        stats = {
            "td_loss": td_loss.detach(),
            "opt_loss": opt_loss.detach(),
            "nopt_loss": nopt_loss.detach(),
            "td_error_abs": td.abs().sum().detach() / n_valid,
            # PyMARL's definitions (see QLearner): the joint value / n_agents; *_tot: the joint value itself
            "q_taken_mean": jq_sum / (n_valid * n_agents),
            "target_mean": (targets * m).sum() / (n_valid * n_agents),
            "q_tot_taken_mean": jq_sum / n_valid,
            "target_tot_mean": (targets * m).sum() / n_valid,
            "v_mean": (v.detach() * m).sum() / n_valid,
            "q_transformed_taken_mean": (chosen.detach().sum(-1, keepdim=True) * m).sum() / n_valid,
        }
        return loss, stats

    # -- Q tables ------------------------------------------------------------------------------
    @torch.no_grad()
    def q_table(self, obs: torch.Tensor, state: torch.Tensor, avail: torch.Tensor) -> dict[str, Any]:
        """At one state: the agents' Q [N, A], Q_jt and Q'_jt = sum_i Q_i over all joint actions
        ([A] * N nested lists, agent 1's action first) and V(s)."""
        agent = self.controller.agent
        q, h = self._with_features(agent, lambda: self.controller.q_values(obs.unsqueeze(0), agent))
        agent_q, feats = q[0], h[0]  # [N, A], [N, H]
        n, a = agent_q.shape
        joint = torch.cartesian_prod(*[torch.arange(a, device=agent_q.device)] * n).view(-1, n)  # [A^n, N]
        shape = [a] * n
        q_jt = self.joint.q(state.expand(joint.shape[0], -1), feats.expand(joint.shape[0], -1, -1), self.eye[joint])
        transformed = agent_q.gather(1, joint.T).sum(0)  # [A^n]
        return {
            "agent_q": agent_q.cpu().tolist(),
            "q_jt": q_jt.view(*shape).cpu().tolist(),
            "q_jt_transformed": transformed.view(*shape).cpu().tolist(),
            "v": float(self.joint.v(state)),
        }
