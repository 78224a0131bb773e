"""QPLEX's learner (Wang et al., ICLR 2021): QLearner's TD loss with the duplex dueling mixer.

The QPLEX mixer (``modules/mixers/qplex.py``) needs more than (agent_qs, states): the joint action
(one-hot) whose Q_tot it computes and the agents' max Q-values V_i. Online: the taken actions and
V_i = max over available actions of the online Q_i (detached, as the authors' learner). Target
(double Q, the default): the online network's greedy next actions, the target network's Q_i of
them and the target network's max Q_i, mixed by the target mixer; without double Q the target
network's own greedy actions (the advantage term is then zero). Everything else (masking,
TD(lambda), reward standardisation, targets, stats) is QLearner's. ``q_table`` gives QPLEX's own
Q_tot over all joint actions.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from modules.mixers.qplex import QplexMixer
from runner.buffers.episode import EpisodeBatch
from runner.contracts import ACTION_INPUTS, DUELING_MIXER, OFF_POLICY
from runner.controllers.basic import NEG
from runner.learners.q_learner import QLearner, QLearnerConfig, td_lambda_targets, td_stats
from runner.registry import LEARNERS, MIXERS


@LEARNERS.register("qplex_learner", config=QLearnerConfig)
class QplexLearner(QLearner):
    cfg: QLearnerConfig
    mixer: QplexMixer
    provides = frozenset({ACTION_INPUTS.name})
    requires = frozenset({OFF_POLICY.name, DUELING_MIXER.name})

    def build_mixer(self, mixer_cfg: Any, n_mixed: int) -> Any:
        """QPLEX's mixer also needs n_actions (the joint action's one-hot)."""
        return MIXERS.get(mixer_cfg.name)(mixer_cfg, n_mixed, self.mixer_state_dim(), n_actions=self.spec.n_actions)

    def _onehot(self, actions: torch.Tensor) -> torch.Tensor:
        return F.one_hot(actions, self.spec.n_actions).float()

    def td_loss(self, batch: EpisodeBatch):
        """Masked TD loss of QPLEX's Q_tot, its stats, and the online Q-values [B, T+1, N, A]."""
        cfg = self.cfg
        actions, terminated, mask, rewards, avail, states = self.td_batch(batch)
        q = self.learning(self.controller.forward_seq(batch))  # [B, T+1, N, A]
        chosen = q[:, :-1].gather(-1, actions.unsqueeze(-1)).squeeze(-1)  # [B, T, N]
        greedy_q = q.detach().masked_fill(~avail, NEG)
        best = greedy_q.argmax(-1)  # [B, T+1, N]
        max_q = greedy_q[:, :-1].max(-1).values  # V_i of the online network (no gradient)
        with torch.no_grad():
            tq = self.learning(self.controller.forward_seq(batch, agent=self.targets["agent"]))
            tq = tq.masked_fill(~avail, NEG)
            t_max_q = tq.max(-1).values
            t_act = best if cfg.double_q else tq.argmax(-1)
            t_chosen = tq.gather(-1, t_act.unsqueeze(-1)).squeeze(-1)
            next_v = self.targets["mixer"](t_chosen, states, self._onehot(t_act), t_max_q)[:, 1:]  # [B, T, 1]
            targets = td_lambda_targets(rewards, terminated, mask, next_v, cfg.gamma, cfg.td_lambda)
        chosen_tot = self.mixer(chosen, states[:, :-1], self._onehot(actions), max_q)  # [B, T, 1]
        m = mask.unsqueeze(-1)
        n_valid = m.sum()
        td = (chosen_tot - targets) * m
        loss = (td**2).sum() / n_valid
        stats = td_stats(td, chosen_tot, targets, m, chosen.shape[-1], joint=True)
        # the authors' hit_prob: the share of taken actions that are the online greedy ones
        stats["hit_prob"] = ((best[:, :-1] == actions).float().mean(-1, keepdim=True) * m).sum() / n_valid
        if self.learn_positions:
            stats.update(self.group_stats(chosen.detach(), td.detach(), m))
        return loss, stats, q

    @torch.no_grad()
    def joint_q(self, agent_q: torch.Tensor, state: torch.Tensor, avail: torch.Tensor | None = None) -> torch.Tensor:
        """QPLEX's Q_tot of every joint action, shape [A] * N, from per-agent Q [N, A] at one state [S]
        (V_i: the max over the available actions, avail [N, A])."""
        n, a = agent_q.shape
        joint = torch.cartesian_prod(*[torch.arange(a, device=agent_q.device)] * n).view(-1, n)  # [A^n, N]
        qs = agent_q.gather(1, joint.T).T  # [A^n, N]
        masked = agent_q if avail is None else agent_q.masked_fill(~avail.bool(), NEG)
        max_q = masked.max(-1).values.expand_as(qs)
        return self.mixer(qs, state.expand(qs.shape[0], -1), self._onehot(joint), max_q).view(*([a] * n))

    @torch.no_grad()
    def q_table(self, obs: torch.Tensor, state: torch.Tensor, avail: torch.Tensor) -> dict[str, Any]:
        """Per-agent Q [N, A] and QPLEX's Q_tot over all joint actions (``q_tot``) at one state."""
        agent_q, out = self.agent_values(obs)
        if self.learn_idx is not None:
            avail = avail[self.learn_idx]
        out["q_tot"] = self.joint_q(agent_q, state, avail).cpu().tolist()
        return out
