"""MADDPG (Lowe et al. 2017) and MATD3 (Ackermann et al. 2019): deterministic actors, centralised critics.

Every agent acts with the controller's actor (``controller=deterministic``; one network shared through
the agent id, or one per agent) from its own observation; the critic Q(s, a_1..a_n) of every agent
sees the global state, the joint action and the agent's id (one network for all agents, as EPyMARL's
``maddpg_critic``; :mod:`modules.critics.q_critic`). Continuous actions enter the critic scaled to
[-1, 1] per dim, discrete ones as one-hots.

- **Critic**: masked mean squared error between Q_i(s_t, a_t) of the stored joint action and
  ``r_t + gamma (1 - terminated_t) Q'_i(s_{t+1}, mu'(o_{t+1}))`` with the target actors and critics.
  A time-limit truncation is not a termination: it bootstraps from the stored next state.
- **Actor**: ``-Q_i(s_t, a_t with a_i = mu_i(o_i))``, the other agents' actions from the batch (the
  MADDPG paper's gradient). Discrete actions pass through a straight-through Gumbel-softmax (hard
  one-hot forward, soft gradient) and the logits get EPyMARL's L2 penalty ``reg``.
- **Targets**: Polyak averaging with ``tau`` after every actor update (``target_update=soft``) or
  copies every ``target_update_interval`` training episodes (``hard``, EPyMARL's default).
- **MATD3** (``learner=matd3_learner``, the same learner with other defaults): twin critics whose
  minimum forms the target, actor and target updates every ``policy_freq`` critic updates, and target
  policy smoothing (clipped Gaussian noise on the target actors' continuous actions, TD3's).

Agents of groups that do not learn (random, scripted or frozen policies; ``controller.learn_idx``)
are part of the environment: the critic sees their stored actions, and they have no critic value
or actor loss of their own. ``learn_every`` > 0 learns every k env steps (``updates_per_learn``
updates each time) instead of once per rollout; that clock is checkpointed.

Deviations from EPyMARL's ``maddpg_learner``: its critic loss is masked by ``1 - terminated`` (so
padding after an episode counts as data); here by ``filled``. Its actor loss feeds every other
agent's *current* actor action to the critic; here their stored actions, as in the paper.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import MISSING
from torch import nn

from modules.critics.q_critic import QCritic
from runner.buffers.episode import EpisodeBatch
from runner.contracts import DETERMINISTIC, NO_MIXER, OFF_POLICY, STATE, Controller, Learner
from runner.errors import check_range
from runner.learners.base import NonFiniteLossError, TargetUpdate
from runner.learners.normalise import RunningMeanStd
from runner.registry import LEARNERS


@dataclass
class MADDPGLearnerConfig:
    name: str = MISSING
    actor_lr: float = 5e-4
    """Learning rate of the actors (Adam)."""
    critic_lr: float = 5e-4
    """Learning rate of the critics (Adam)."""
    optim_eps: float = 1e-8
    """Adam's epsilon (torch's default, as EPyMARL's MADDPG)."""
    grad_norm_clip: float = 10.0
    """Clip the actors' and the critics' global gradient norms to this value (<= 0: no clipping)."""
    gamma: float = 0.99
    """Discount factor."""
    batch_size: int = 32
    """Entries of the buffer per update: episodes (episode_replay) or transitions (transition_replay)."""
    target_update: TargetUpdate = TargetUpdate.hard
    """hard (copy every target_update_interval training episodes) or soft (Polyak with tau)."""
    target_update_interval: int = 200
    """Training episodes between hard target copies (EPyMARL's target_update_interval_or_tau: 200)."""
    tau: float = 0.01
    """Polyak rate of soft target updates: target <- (1 - tau) target + tau online."""
    standardise_rewards: bool = True
    """Standardise the rewards in the targets by their running mean and std (EPyMARL's default)."""
    reg: float = 1e-3
    """Discrete actions: weight of the mean squared logits in the actor loss (EPyMARL's reg)."""
    critic_hidden_dim: int = 128
    """Units per hidden layer of the critics (EPyMARL: its hidden_dim)."""
    critic_layers: int = 2
    """Hidden layers of the critics."""
    learn_every: int = 0
    """Env steps between learning phases (0: one learning phase after every rollout, as PyMARL)."""
    updates_per_learn: int = 1
    """Updates (each on a fresh sample) per learning phase."""
    twin_critics: bool = False
    """Two critics, the target from their minimum (MATD3's clipped double Q)."""
    policy_freq: int = 1
    """Actor and target updates every policy_freq critic updates (MATD3: 2)."""
    target_noise: float = 0.0
    """Continuous actions: std of the Gaussian noise on the target actions, in units of half the action
    range (MATD3's target policy smoothing; 0: none)."""
    target_noise_clip: float = 0.5
    """Clip of that noise (same units)."""


@dataclass
class MATD3LearnerConfig(MADDPGLearnerConfig):
    twin_critics: bool = True
    policy_freq: int = 2
    target_noise: float = 0.2
    """Continuous actions: std of the target policy smoothing noise (TD3's policy_noise 0.2)."""
    target_noise_clip: float = 0.5
    """Clip of that noise (TD3's noise_clip 0.5)."""


def check_maddpg_config(cfg: Any) -> list[str]:
    errs: list[str] = []
    for key in ("actor_lr", "critic_lr", "optim_eps"):
        value = cfg[key]
        if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
            errs.append(f"learner.{key}={value} is invalid: must be > 0")
    check_range(errs, "learner.gamma", cfg.gamma, 0, 1, lo_open=True)
    check_range(errs, "learner.tau", cfg.tau, 0, 1, lo_open=True)
    for key in ("batch_size", "target_update_interval", "updates_per_learn", "policy_freq", "critic_hidden_dim",
                "critic_layers"):
        if cfg[key] < 1:
            errs.append(f"learner.{key}={cfg[key]} is invalid: must be >= 1")
    if cfg.learn_every < 0:
        errs.append(f"learner.learn_every={cfg.learn_every} is invalid: must be >= 0 (0 = once per rollout)")
    for key in ("reg", "target_noise", "target_noise_clip"):
        value = cfg[key]
        if not (isinstance(value, (int, float)) and value >= 0 and math.isfinite(value)):
            errs.append(f"learner.{key}={value} is invalid: must be >= 0")
    return errs


@LEARNERS.register("maddpg_learner", config=MADDPGLearnerConfig)
class MADDPGLearner(Learner):
    # deterministic actors: a Q-value controller would run and learn nothing (refused before the run)
    requires = frozenset({OFF_POLICY.name, NO_MIXER.name, STATE.name, DETERMINISTIC.name})
    cfg: MADDPGLearnerConfig

    def __init__(self, cfg: MADDPGLearnerConfig, controller: Controller, mixer_cfg: Any, spec: Any, device: torch.device) -> None:
        self.cfg, self.controller, self.spec, self.device = cfg, controller, spec, device
        n, a = spec.n_agents, spec.n_actions
        idx = controller.learn_idx
        self.learn_idx = torch.arange(n, device=device) if idx is None else idx.to(device)
        eye = torch.eye(n, dtype=torch.bool, device=device)
        self.own = eye[self.learn_idx].unsqueeze(-1)  # [K, N, 1]: agent k's row of the joint action
        self.learns = eye[self.learn_idx].any(0).unsqueeze(-1)  # [N, 1]: the rows of learning agents
        if spec.continuous:
            self.low = torch.tensor(spec.action_low, dtype=torch.float32, device=device).reshape(n, a)
            self.high = torch.tensor(spec.action_high, dtype=torch.float32, device=device).reshape(n, a)
        self.actor: nn.Module = controller.agent
        self.critics = nn.ModuleList(
            QCritic(spec.state_dim, n, a, cfg.critic_hidden_dim, cfg.critic_layers) for _ in range(2 if cfg.twin_critics else 1)
        ).to(device)
        self.target_actor = copy.deepcopy(self.actor).requires_grad_(False)
        self.target_critics = copy.deepcopy(self.critics).requires_grad_(False)
        self.modules: dict[str, nn.Module] = {"agent": self.actor, "critic": self.critics}
        self.targets: dict[str, nn.Module] = {"agent": self.target_actor, "critic": self.target_critics}
        self.actor_params = [p for p in self.actor.parameters() if p.requires_grad]
        self.critic_params = list(self.critics.parameters())
        self.actor_opt = torch.optim.Adam(self.actor_params, lr=cfg.actor_lr, eps=cfg.optim_eps)
        self.critic_opt = torch.optim.Adam(self.critic_params, lr=cfg.critic_lr, eps=cfg.optim_eps)
        self.reward_stats = RunningMeanStd(device=device)
        self.n_updates = 0  # critic updates
        self.target_clock = 0  # training episodes behind the updates (hard target copies)
        self.step_clock = 0  # env steps seen by updates_due (learn_every)
        self.last_actor = {"actor_loss": 0.0, "actor_grad_norm": 0.0}  # of the latest actor update (policy_freq)

    @staticmethod
    def check_config(cfg: Any) -> list[str]:
        return check_maddpg_config(cfg)

    # -- when to learn ------------------------------------------------------------------------------
    def updates_due(self, steps: int, episodes: int) -> int:
        cfg = self.cfg
        if cfg.learn_every == 0:
            return cfg.updates_per_learn
        before = self.step_clock
        self.step_clock += steps
        return (self.step_clock // cfg.learn_every - before // cfg.learn_every) * cfg.updates_per_learn

    # -- actions as the critic sees them --------------------------------------------------------------
    def unit(self, actions: torch.Tensor) -> torch.Tensor:
        """Continuous actions in the env's units -> [-1, 1] per dim (padded dims stay 0)."""
        return 2 * (actions - self.low) / (self.high - self.low) - 1

    def stored_joint(self, batch: EpisodeBatch) -> torch.Tensor:
        """The stored joint actions [B, T+1, N, A] as critic input."""
        if self.spec.continuous:
            return self.unit(batch["actions"].float()) * batch["avail_actions"]
        return F.one_hot(batch["actions"].long(), self.spec.n_actions).float()

    def target_joint(self, out: torch.Tensor, avail: torch.Tensor) -> torch.Tensor:
        """The target actors' actions as critic input: greedy one-hots, or (MATD3) smoothed continuous actions."""
        if not self.spec.continuous:
            return F.one_hot(out.argmax(-1), self.spec.n_actions).float()
        unit = self.unit(out)
        if self.cfg.target_noise > 0:
            clip = self.cfg.target_noise_clip
            unit = (unit + (torch.randn_like(unit) * self.cfg.target_noise).clamp(-clip, clip)).clamp(-1.0, 1.0)
        return unit * avail

    def policy_joint(self, out: torch.Tensor, avail: torch.Tensor) -> torch.Tensor:
        """The online actors' actions as critic input, differentiable: straight-through Gumbel-softmax
        one-hots of the masked logits (discrete) or the scaled actions."""
        if not self.spec.continuous:
            return F.gumbel_softmax(out, hard=True)
        return self.unit(out) * avail

    # -- one update ---------------------------------------------------------------------------------
    def train(self, batch: EpisodeBatch, t_env: int, episodes: int = 1) -> dict[str, float]:
        cfg = self.cfg
        mask = batch["filled"][:, :-1].float()
        terminated = batch["terminated"][:, :-1].float()
        rewards = batch["reward"][:, :-1].float()
        if cfg.standardise_rewards:
            self.reward_stats.update(rewards, mask)
            rewards = self.reward_stats.standardise(rewards)
        state, avail = batch["state"], batch["avail_actions"]
        stored = self.stored_joint(batch)  # [B, T+1, N, A]
        agents = self.learn_idx
        m = mask.unsqueeze(-1)  # [B, T, 1]
        n_valid = (m.sum() * len(agents)).clamp_min(1.0)

        # critic: Q_i(s, a) -> r + gamma (1 - term) min_c Q'_c(s', mu'(o'))
        with torch.no_grad():
            t_out = self.controller.forward_seq(batch, agent=self.target_actor)[:, 1:]
            next_joint = torch.where(self.learns, self.target_joint(t_out, avail[:, 1:]), stored[:, 1:])
            q_next = torch.stack([c(state[:, 1:], next_joint, agents) for c in self.target_critics]).min(0).values
            targets = rewards.unsqueeze(-1) + cfg.gamma * (1 - terminated.unsqueeze(-1)) * q_next  # [B, T, K]
        qs = [c(state[:, :-1], stored[:, :-1], agents) for c in self.critics]
        critic_loss = sum(((q - targets) * m).pow(2).sum() for q in qs) / n_valid
        assert isinstance(critic_loss, torch.Tensor)
        if not torch.isfinite(critic_loss):
            raise NonFiniteLossError(
                f"critic loss became {critic_loss.item()} at t_env={t_env} (update {self.n_updates + 1}); training "
                "stopped. Lower learner.critic_lr, clip gradients (learner.grad_norm_clip) or check rewards."
            )
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        critic_grad = self._clip(self.critic_params)
        self.critic_opt.step()

        stats = {
            "critic_loss": critic_loss.detach(),
            "critic_grad_norm": critic_grad,
            "q_taken_mean": (qs[0].detach() * m).sum() / n_valid,
            "target_mean": (targets * m).sum() / n_valid,
            "td_error_abs": ((qs[0].detach() - targets) * m).abs().sum() / n_valid,
        }
        actor_due = self.n_updates % cfg.policy_freq == 0
        self.n_updates += 1
        if actor_due:
            self._actor_update(batch, stored, m, n_valid, t_env)
            if cfg.target_update == TargetUpdate.soft:
                self._soft_update()
        if cfg.target_update == TargetUpdate.hard:
            every, before = cfg.target_update_interval, self.target_clock
            self.target_clock += episodes
            if self.target_clock // every > before // every:
                for k, tgt in self.targets.items():
                    tgt.load_state_dict(self.modules[k].state_dict())
        out = {k: float(v) for k, v in stats.items()}
        out.update(self.last_actor)
        return out

    def actor_loss(self, batch: EpisodeBatch, stored: torch.Tensor, m: torch.Tensor, n_valid: torch.Tensor) -> torch.Tensor:
        """-Q_i(s, a with a_i = mu_i(o_i)) of every learning agent i (+ reg * mean squared logits)."""
        avail = batch["avail_actions"][:, :-1]
        out = self.controller.forward_seq(batch)[:, :-1]  # [B, T, N, A]
        policy = self.policy_joint(out, avail)
        joint = torch.where(self.own, policy.unsqueeze(-3), stored[:, :-1].unsqueeze(-3))  # [B, T, K, N, A]
        q = self.critics[0](batch["state"][:, :-1], joint, self.learn_idx)  # [B, T, K]
        loss = -(q * m).sum() / n_valid
        if not self.spec.continuous and self.cfg.reg > 0:
            logits, ok = out[:, :, self.learn_idx], avail[:, :, self.learn_idx] * m.unsqueeze(-1).bool()
            loss = loss + self.cfg.reg * (logits * ok).pow(2).sum() / ok.sum().clamp_min(1)
        return loss

    def _actor_update(self, batch: EpisodeBatch, stored: torch.Tensor, m: torch.Tensor, n_valid: torch.Tensor,
                      t_env: int) -> None:
        self.critics.requires_grad_(False)  # the actor loss differentiates through the critic, not into it
        try:
            loss = self.actor_loss(batch, stored, m, n_valid)
        finally:
            self.critics.requires_grad_(True)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"actor loss became {loss.item()} at t_env={t_env} (update {self.n_updates}); "
                                     "training stopped. Lower learner.actor_lr or clip gradients (learner.grad_norm_clip).")
        self.actor_opt.zero_grad(set_to_none=True)
        loss.backward()
        grad = self._clip(self.actor_params)
        self.actor_opt.step()
        self.last_actor = {"actor_loss": float(loss.detach()), "actor_grad_norm": float(grad)}

    def _clip(self, params: list[nn.Parameter]) -> torch.Tensor:
        clip = self.cfg.grad_norm_clip if self.cfg.grad_norm_clip > 0 else float("inf")
        return torch.nn.utils.clip_grad_norm_(params, clip).detach()

    @torch.no_grad()
    def _soft_update(self) -> None:
        for k, tgt in self.targets.items():
            for tp, p in zip(tgt.parameters(), self.modules[k].parameters()):
                tp.lerp_(p, self.cfg.tau)

    # -- checkpoints ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "modules": {k: m.state_dict() for k, m in self.modules.items()},
            "targets": {k: m.state_dict() for k, m in self.targets.items()},
            "optimisers": {"actor": self.actor_opt.state_dict(), "critic": self.critic_opt.state_dict()},
            "n_updates": self.n_updates,
            "target_clock": self.target_clock,
            "step_clock": self.step_clock,
            "reward_stats": self.reward_stats.state_dict(),
            "last_actor": dict(self.last_actor),
        }

    def load_state_dict(self, state: dict[str, Any], weights_only: bool = False) -> None:
        for k, m in self.modules.items():
            m.load_state_dict(state["modules"][k])
        source = state["modules"] if weights_only else state["targets"]
        for k, m in self.targets.items():
            m.load_state_dict(source[k])
        if weights_only:
            return
        self.actor_opt.load_state_dict(state["optimisers"]["actor"])
        self.critic_opt.load_state_dict(state["optimisers"]["critic"])
        self.n_updates, self.target_clock, self.step_clock = state["n_updates"], state["target_clock"], state["step_clock"]
        self.reward_stats.load_state_dict(state["reward_stats"])
        self.last_actor = dict(state["last_actor"])


@LEARNERS.register("matd3_learner", config=MATD3LearnerConfig)
class MATD3Learner(MADDPGLearner):
    """MATD3: the MADDPG learner with twin critics, delayed actor updates and target policy smoothing
    switched on by its config's defaults (``twin_critics``, ``policy_freq``, ``target_noise``)."""
