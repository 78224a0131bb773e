"""One Q-learner for IQL, VDN and QMIX: they differ only in the mixer (conf/algo/*.yaml).

Loss: masked mean squared TD error between the mixed Q of the taken actions and
r + gamma * (1 - terminated) * target-mixed max Q (double Q: argmax by the online network),
or the TD(lambda) return of those targets. A time-limit truncation is not a termination, so it
is bootstrapped from the stored next state. With ``standardise_rewards`` (the default, as EPyMARL)
the rewards in the targets are standardised by their running mean and std (docs/epymarl.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from runner.buffers.episode import EpisodeBatch
from runner.contracts import Controller
from runner.controllers.basic import NEG
from runner.errors import check_range
from runner.learners.base import BaseLearner, LearnerConfig, check_learner_config
from runner.registry import LEARNERS, MIXERS


class TDBatch(NamedTuple):
    actions: torch.Tensor  # [B, T, N] long
    terminated: torch.Tensor  # [B, T] float
    mask: torch.Tensor  # [B, T] float: the valid steps
    rewards: torch.Tensor  # [B, T] (standardised with learner.standardise_rewards)
    avail: torch.Tensor  # [B, T+1, N, A] bool
    states: torch.Tensor  # [B, T+1, mixer_state_dim]


@dataclass
class QLearnerConfig(LearnerConfig):
    double_q: bool = True
    """Pick the target's next action with the online network."""
    td_lambda: float = 0.0
    """0: one-step targets; in (0, 1]: TD(lambda) returns."""


def td_lambda_targets(
    rewards: torch.Tensor, terminated: torch.Tensor, mask: torch.Tensor, next_v: torch.Tensor, gamma: float, lam: float
) -> torch.Tensor:
    """TD(lambda) returns [B, T, K]; at an episode's last step they bootstrap from next_v."""
    r, term, m = rewards.unsqueeze(-1), terminated.unsqueeze(-1), mask.unsqueeze(-1)
    if lam == 0.0:
        return r + gamma * (1 - term) * next_v
    T = r.shape[1]
    out = torch.empty_like(next_v)
    g_next = next_v[:, T - 1]
    for t in reversed(range(T)):
        if t < T - 1:
            g_next = torch.where(m[:, t + 1] > 0, out[:, t + 1], next_v[:, t])
        out[:, t] = r[:, t] + gamma * (1 - term[:, t]) * ((1 - lam) * next_v[:, t] + lam * g_next)
    return out


def td_stats(td: torch.Tensor, chosen_tot: torch.Tensor, targets: torch.Tensor, m: torch.Tensor, n_agents: int,
             joint: bool) -> dict[str, torch.Tensor]:
    """The TD stats of every Q-learner, from the masked TD errors ``td`` and the mixed values of
    the taken actions [B, T, K] (K outputs per step). PyMARL's (and EPyMARL's) definitions: the
    mixer's output summed over the valid steps and divided by their number (times K) times
    n_agents; with a joint mixer that is Q_tot / n_agents, without one (IQL) an agent's mean Q /
    n_agents, as PyMARL logs it. ``q_tot_taken_mean``/``target_tot_mean`` (joint mixers): Q_tot itself."""
    n_valid = m.sum() * chosen_tot.shape[-1]
    n_pymarl = n_valid * n_agents
    q_sum, t_sum = (chosen_tot.detach() * m).sum(), (targets * m).sum()
    stats = {
        "td_error_abs": td.abs().sum().detach() / n_valid,
        "q_taken_mean": q_sum / n_pymarl,
        "target_mean": t_sum / n_pymarl,
    }
    if joint:
        stats["q_tot_taken_mean"] = q_sum / n_valid
        stats["target_tot_mean"] = t_sum / n_valid
    return stats


@LEARNERS.register("q_learner", config=QLearnerConfig)
class QLearner(BaseLearner):
    cfg: QLearnerConfig
    def __init__(self, cfg: QLearnerConfig, controller: Controller, mixer_cfg: Any, spec: Any, device: torch.device) -> None:
        self.cfg, self.controller, self.spec = cfg, controller, spec
        # agent groups: only the learning agents are mixed; the others are part of the environment
        self.learn_idx = controller.learn_idx
        self.learn_positions = controller.learn_positions
        n_mixed = spec.n_agents if self.learn_idx is None else len(self.learn_idx)
        self.mixer = self.build_mixer(mixer_cfg, n_mixed).to(device)
        modules = {"agent": controller.agent, "mixer": self.mixer, **self.extra_modules(device)}
        super().__init__(cfg, modules, device, target_keys=("agent", "mixer"))
        if self.learn_positions:  # per-group gradient norms
            self.grad_groups = {g: list(controller.agent[g].parameters()) for g in self.learn_positions}

    def build_mixer(self, mixer_cfg: Any, n_mixed: int) -> Any:
        """The mixer of the learning agents' values (subclasses may give it more, e.g. QPLEX's n_actions)."""
        return MIXERS.get(mixer_cfg.name)(mixer_cfg, n_mixed, self.mixer_state_dim())

    def mixer_state_dim(self) -> int:
        """Size of what the mixer is conditioned on (the env state; subclasses may add to it)."""
        return self.spec.state_dim

    def mixer_states(self, batch: EpisodeBatch) -> torch.Tensor:
        """What the mixer is conditioned on at every step: [B, T+1, mixer_state_dim]."""
        return batch["state"]

    def extra_modules(self, device: torch.device) -> dict[str, torch.nn.Module]:
        """More trainable modules (no target copies), e.g. a discriminator."""
        return {}

    @staticmethod
    def check_config(cfg: Any) -> list[str]:
        errs = check_learner_config(cfg)
        check_range(errs, "learner.td_lambda", cfg.td_lambda, 0.0, 1.0)
        return errs

    def loss(self, batch: EpisodeBatch, t_env: int):
        loss, stats, _ = self.td_loss(batch)
        return loss, stats

    def td_batch(self, batch: EpisodeBatch) -> TDBatch:
        """What every TD loss reads of a batch (``learn_idx``: the learning agents' actions and
        available actions only). The rewards go through :meth:`train_rewards` once per call."""
        actions = batch["actions"][:, :-1].long()
        terminated = batch["terminated"][:, :-1].float()
        mask = batch["filled"][:, :-1].float()
        rewards = self.train_rewards(batch["reward"][:, :-1], mask)
        avail = batch["avail_actions"]
        if self.learn_idx is not None:
            actions, avail = actions[:, :, self.learn_idx], avail[:, :, self.learn_idx]
        return TDBatch(actions, terminated, mask, rewards, avail, self.mixer_states(batch))

    def learning(self, q: torch.Tensor) -> torch.Tensor:
        """Values [B, T+1, N, A] of the learning agents only."""
        return q if self.learn_idx is None else q[:, :, self.learn_idx]

    def td_loss(self, batch: EpisodeBatch):
        """Masked TD loss, its stats, and the online Q-values [B, T+1, N, A] (for extra losses)."""
        cfg = self.cfg
        actions, terminated, mask, rewards, avail, states = self.td_batch(batch)
        q = self.learning(self.controller.forward_seq(batch))  # [B, T+1, N, A]
        chosen = q[:, :-1].gather(-1, actions.unsqueeze(-1)).squeeze(-1)  # [B, T, N]
        with torch.no_grad():
            tq = self.learning(self.controller.forward_seq(batch, agent=self.targets["agent"]))
            tq = tq.masked_fill(~avail, NEG)
            if cfg.double_q:
                best = q.detach().masked_fill(~avail, NEG).argmax(-1, keepdim=True)
                t_max_q = tq.gather(-1, best).squeeze(-1)
            else:
                t_max_q = tq.max(-1).values
            next_v = self.targets["mixer"](t_max_q, states)[:, 1:]  # [B, T, K]
            targets = td_lambda_targets(rewards, terminated, mask, next_v, cfg.gamma, cfg.td_lambda)
        chosen_tot = self.mixer(chosen, states[:, :-1])  # [B, T, K]
        m = mask.unsqueeze(-1)
        n_valid = m.sum() * chosen_tot.shape[-1]
        td = (chosen_tot - targets) * m
        loss = (td**2).sum() / n_valid
        stats = td_stats(td, chosen_tot, targets, m, chosen.shape[-1], self.mixer.joint)
        if self.learn_positions:
            stats.update(self.group_stats(chosen.detach(), td.detach(), m))
        return loss, stats, q

    def group_stats(self, chosen: torch.Tensor, td: torch.Tensor, m: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per learning group: the mean Q of the taken actions, and with independent targets (no
        joint mixer, one TD error per agent) the group's own TD loss."""
        out = {}
        per_agent = td.shape[-1] == chosen.shape[-1] and not self.mixer.joint
        for g, pos in self.learn_positions.items():
            n = m.sum() * len(pos)
            out[f"q_taken_mean_{g}"] = (chosen[..., pos] * m).sum() / n
            if per_agent:
                out[f"loss_{g}"] = (td[..., pos] ** 2).sum() / n
        return out

    def agent_values(self, obs: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        """The learning agents' Q [N, A] at one first-step observation, and a Q table's first entries:
        ``agent_q`` and, with agent groups, the learning agents' ids (``agents``)."""
        agent_q = self.controller.q_values(obs.unsqueeze(0))[0]  # [N, A]
        out: dict[str, Any] = {}
        if self.learn_idx is not None:  # agent groups: the learning agents' values
            agent_q = agent_q[self.learn_idx]
            out["agents"] = [self.spec.agent_ids[i] for i in self.learn_idx.tolist()]
        out["agent_q"] = agent_q.cpu().tolist()
        return agent_q, out

    @torch.no_grad()
    def q_table(self, obs: torch.Tensor, state: torch.Tensor, avail: torch.Tensor) -> dict[str, Any]:
        """Learned values at one state: per-agent Q [N, A] and, with a joint mixer, Q_tot over joint actions."""
        agent_q, out = self.agent_values(obs)
        if self.mixer.joint:
            n, a = agent_q.shape
            joint = torch.cartesian_prod(*[torch.arange(a, device=agent_q.device)] * n).view(-1, n)
            qs = agent_q.gather(1, joint.T).T  # [A^n, N]
            q_tot = self.mixer(qs, state.expand(qs.shape[0], -1)).view(*([a] * n))
            out["q_tot"] = q_tot.cpu().tolist()
        return out
