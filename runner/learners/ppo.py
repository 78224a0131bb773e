"""IPPO and MAPPO: the PPO clipped objective with a decentralised or centralised critic.

Every update takes the episodes of the latest rollouts (``buffer=rollout``) and runs ``epochs``
passes over them in ``n_minibatch`` minibatches of episodes (whole episodes, so recurrent actors
and critics see their sequences). Per minibatch the critic takes one step, then the actor:

- **returns**: ``nstep`` (EPyMARL): ``q_nstep``-step returns bootstrapped from a target critic that
  follows the critic by Polyak averaging (``target_tau``) after every update; the advantage is the
  return minus the critic's current value, recomputed every epoch. ``gae`` (the MAPPO paper):
  GAE(``gae_lambda``) from the critic's values before the update, computed once per update.
  Both bootstrap a truncated episode (time limit) from the value of the observation that followed
  its last step, and a terminated one not at all.
- **actor**: ratio = exp(log pi(a|o) - log pi_old(a|o)), where pi_old is the policy that collected
  the episodes (the actor before this update's first step: the ratio is exactly 1 in the first
  minibatch); loss = -mean(min(ratio A, clip(ratio, 1 - clip, 1 + clip) A) + entropy_coef H).
- **critic**: squared error to the returns, optionally clipped around the old values
  (``value_clip``) and in normalised units (``value_norm``: running mean/std of the returns, as
  MAPPO's ValueNorm).

``ippo_learner``'s critic sees each agent's own observation; ``mappo_learner``'s the global state
(or the agent-specific global state). Agents that do not learn (agent groups with random, frozen or
scripted policies) are masked out of both losses.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch
from omegaconf import MISSING

from envs.base import EnvSpec
from modules.critics.value import CriticInput, ValueCritic
from runner.buffers.episode import EpisodeBatch
from runner.contracts import NO_MIXER, ON_POLICY, STATE, STOCHASTIC, Learner
from runner.controllers.basic import NEG
from runner.errors import check_range
from runner.learners.base import NonFiniteLossError
from runner.learners.normalise import RunningMeanStd
from runner.registry import LEARNERS


class Returns(str, Enum):
    """``learner.returns``; the config value is its name."""

    nstep = "nstep"
    gae = "gae"


@dataclass
class PPOLearnerConfig:
    name: str = MISSING
    lr: float = 3e-4
    """Actor learning rate (Adam). EPyMARL's ippo/mappo: 0.0003."""
    critic_lr: Any = None
    """Critic learning rate; None: lr (EPyMARL uses one lr for both)."""
    optim_eps: float = 1e-8
    """Adam's epsilon (torch's default, which EPyMARL's PPO uses; the MAPPO paper: 1e-5)."""
    grad_norm_clip: float = 10.0
    """Clip each network's global gradient norm to this value (<= 0: no clipping)."""
    gamma: float = 0.99
    """Discount factor."""
    batch_size: int = 10
    """Episodes per update: the rollout buffer hands over this many fresh episodes (EPyMARL: 10)."""
    epochs: int = 4
    """Passes over the batch per update (EPyMARL: 4; the MAPPO paper: 5-15)."""
    n_minibatch: int = 1
    """Minibatches per epoch (EPyMARL: 1, the whole batch), of whole episodes or of chunks."""
    data_chunk_length: int = 0
    """Split the episodes into chunks of this many steps for the minibatches, and stop recurrent
    networks' gradients at chunk starts (truncated backpropagation through time; the MAPPO paper's
    code: 10). 0: whole episodes."""
    clip: float = 0.2
    """PPO's ratio clip epsilon (EPyMARL's eps_clip)."""
    entropy_coef: float = 0.001
    """Weight of the policy's entropy bonus (EPyMARL: 0.001; the MAPPO paper: 0.01)."""
    returns: Returns = Returns.nstep
    """nstep (EPyMARL: n-step returns from a target critic) or gae (the MAPPO paper)."""
    q_nstep: int = 5
    """Steps of the n-step returns (EPyMARL's q_nstep)."""
    gae_lambda: float = 0.95
    """GAE's lambda (returns=gae)."""
    target_tau: float = 0.01
    """Polyak rate of the target critic after every update (returns=nstep; EPyMARL's
    target_update_interval_or_tau: 0.01)."""
    huber_delta: float = 0.0
    """The critic's loss: Huber with this delta (the MAPPO paper's code: 10); 0: squared error (EPyMARL)."""
    value_clip: float = 0.0
    """Clip the critic's new values to old +- value_clip in its loss (0: off; the MAPPO paper: 0.2)."""
    value_norm: bool = False
    """The critic learns returns standardised by their running mean and std (MAPPO's ValueNorm)."""
    advantage_norm: bool = False
    """Standardise the advantages of each minibatch (the MAPPO paper: on; EPyMARL: off)."""
    standardise_rewards: bool = True
    """Standardise rewards by their running mean and std (EPyMARL's default)."""
    lr_anneal: bool = False
    """Anneal both learning rates linearly to 0 at lr_anneal_time env steps."""
    lr_anneal_time: int = "${oc.select:t_max,1}"  # type: ignore[assignment]
    """Env steps over which lr_anneal takes the learning rates to 0 (default: the run's t_max)."""
    critic_input: CriticInput = CriticInput.obs
    """What each agent's critic sees: obs (IPPO), state or agent_state (state ++ own obs; MAPPO)."""
    critic_hidden_dim: int = 128
    """Units per critic layer (EPyMARL: hidden_dim, 128 for ippo/mappo)."""
    critic_layers: int = 2
    """Hidden layers of a feed-forward critic (EPyMARL's critics: 2)."""
    critic_recurrent: bool = False
    """A GRU critic over the episode (the MAPPO paper's recurrent critic) instead of an MLP."""
    critic_share_params: bool = True
    """One critic network for all agents, told apart by a one-hot id (False: one per agent)."""
    critic_orthogonal_init: bool = False
    """Orthogonal initialisation of the critic (gain sqrt(2), output 1; the MAPPO paper's code)."""


def check_ppo_config(cfg: Any) -> list[str]:
    errs: list[str] = []
    if not cfg.lr > 0:
        errs.append(f"learner.lr={cfg.lr} is invalid: must be > 0")
    if cfg.critic_lr is not None and not (isinstance(cfg.critic_lr, (int, float)) and cfg.critic_lr > 0):
        errs.append(f"learner.critic_lr={cfg.critic_lr} is invalid: must be > 0 (or null: learner.lr)")
    check_range(errs, "learner.gamma", cfg.gamma, 0.0, 1.0, lo_open=True)
    if cfg.batch_size < 1:
        errs.append(f"learner.batch_size={cfg.batch_size} is invalid: must be >= 1")
    if cfg.epochs < 1:
        errs.append(f"learner.epochs={cfg.epochs} is invalid: must be >= 1")
    if cfg.n_minibatch < 1:
        errs.append(f"learner.n_minibatch={cfg.n_minibatch} is invalid: must be >= 1")
    elif cfg.batch_size >= 1 and cfg.n_minibatch > cfg.batch_size:
        errs.append(f"learner.n_minibatch={cfg.n_minibatch} is invalid: more minibatches than the "
                    f"learner.batch_size={cfg.batch_size} episodes they split")
    if not cfg.clip > 0:
        errs.append(f"learner.clip={cfg.clip} is invalid: must be > 0")
    if cfg.entropy_coef < 0:
        errs.append(f"learner.entropy_coef={cfg.entropy_coef} is invalid: must be >= 0")
    if cfg.data_chunk_length < 0:
        errs.append(f"learner.data_chunk_length={cfg.data_chunk_length} is invalid: must be >= 0 (0: whole episodes)")
    if cfg.q_nstep < 1:
        errs.append(f"learner.q_nstep={cfg.q_nstep} is invalid: must be >= 1")
    check_range(errs, "learner.gae_lambda", cfg.gae_lambda, 0.0, 1.0)
    check_range(errs, "learner.target_tau", cfg.target_tau, 0.0, 1.0, lo_open=True)
    if cfg.huber_delta < 0:
        errs.append(f"learner.huber_delta={cfg.huber_delta} is invalid: must be >= 0 (0: squared error)")
    if cfg.value_clip < 0:
        errs.append(f"learner.value_clip={cfg.value_clip} is invalid: must be >= 0 (0: off)")
    if cfg.lr_anneal and cfg.lr_anneal_time < 1:
        errs.append(f"learner.lr_anneal_time={cfg.lr_anneal_time} is invalid: must be >= 1")
    if cfg.critic_hidden_dim < 1:
        errs.append(f"learner.critic_hidden_dim={cfg.critic_hidden_dim} is invalid: must be >= 1")
    if cfg.critic_layers < 1:
        errs.append(f"learner.critic_layers={cfg.critic_layers} is invalid: must be >= 1")
    return errs


def masked_mean(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return (x * m).sum() / m.sum().clamp_min(1.0)


def standardised(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """(x - mean) / (std + 1e-5) over the entries where m is 1 (the MAPPO paper's advantage normalisation)."""
    mean = masked_mean(x, m)
    return (x - mean) / (masked_mean((x - mean) ** 2, m).sqrt() + 1e-5)


def gae(rewards: torch.Tensor, values: torch.Tensor, terminated: torch.Tensor, filled: torch.Tensor, gamma: float,
        lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns [B, T, N] by GAE(lambda).

    rewards, terminated [B, T, 1 or N]; filled [B, T+1, 1] (False from one past each episode's last
    step); values [B, T+1, N], where values[:, t+1] after an episode's last step is the value of the
    observation that followed it. A terminated step bootstraps nothing; the last step of a truncated
    episode bootstraps from that value.
    """
    T = rewards.shape[1]
    adv = torch.zeros_like(values[:, :T])
    running = torch.zeros_like(values[:, 0])
    for t in reversed(range(T)):
        alive = 1.0 - terminated[:, t]
        delta = rewards[:, t] + gamma * values[:, t + 1] * alive - values[:, t]
        running = delta + gamma * lam * alive * filled[:, t + 1] * running
        running = running * filled[:, t]
        adv[:, t] = running
    return adv, adv + values[:, :T]


def nstep_returns(rewards: torch.Tensor, values: torch.Tensor, terminated: torch.Tensor, filled: torch.Tensor,
                  gamma: float, n: int) -> torch.Tensor:
    """n-step returns [B, T, N]: sum_{k<n} gamma^k r_{t+k} + gamma^n V(s_{t+n}), cut at the episode's
    end: a termination adds no value, a truncation adds gamma^(k+1) V of the observation that followed
    the last step. Shapes as in :func:`gae`."""
    B, T = rewards.shape[:2]
    pad = n + 1
    r = torch.cat([rewards.expand(-1, -1, values.shape[2]), rewards.new_zeros(B, pad, values.shape[2])], 1)
    term = torch.cat([terminated, terminated.new_zeros(B, pad, terminated.shape[2])], 1)
    fill = torch.cat([filled, filled.new_zeros(B, pad, 1)], 1)
    v = torch.cat([values, values.new_zeros(B, pad, values.shape[2])], 1)
    out = torch.zeros_like(values[:, :T])
    alive = fill[:, :T].expand_as(out).clone()  # inside the episode, not ended yet
    for k in range(n):
        sl = slice(k, k + T)
        out = out + gamma**k * r[:, sl] * alive
        ends = alive * (1.0 - fill[:, k + 1 : k + 1 + T])  # step t+k was the episode's last
        truncated_end = ends * (1.0 - term[:, sl])
        out = out + gamma ** (k + 1) * v[:, k + 1 : k + 1 + T] * truncated_end
        alive = alive * (1.0 - term[:, sl]) * fill[:, k + 1 : k + 1 + T]
    return out + gamma**n * v[:, n : n + T] * alive


def clipped_surrogate(log_ratio: torch.Tensor, adv: torch.Tensor, clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's objective per step, min(ratio A, clip(ratio, 1 - clip, 1 + clip) A), and whether each
    ratio lies outside the clip range (|ratio - 1| > clip: what ``clip_fraction`` counts)."""
    ratio = log_ratio.exp()
    surr = torch.minimum(ratio * adv, ratio.clamp(1.0 - clip, 1.0 + clip) * adv)
    return surr, (ratio - 1.0).abs() > clip


class PPOLearner(Learner):
    """The PPO update of both ippo_learner and mappo_learner (they differ in the critic's input)."""

    requires = frozenset({ON_POLICY.name, NO_MIXER.name, STOCHASTIC.name})

    def __init__(self, cfg: PPOLearnerConfig, controller: Any, mixer_cfg: Any, spec: EnvSpec, device: torch.device) -> None:
        self.cfg, self.controller, self.spec, self.device = cfg, controller, spec, device
        self.continuous = spec.continuous
        self.critic = ValueCritic(cfg.critic_input, spec.obs_dim, spec.state_dim, spec.n_agents, cfg.critic_hidden_dim,
                                  cfg.critic_layers, cfg.critic_recurrent, cfg.critic_share_params,
                                  cfg.critic_orthogonal_init).to(device)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_params = [p for p in controller.agent.parameters() if p.requires_grad]
        self.critic_params = list(self.critic.parameters())
        critic_lr = cfg.lr if cfg.critic_lr is None else cfg.critic_lr
        self.actor_opt = torch.optim.Adam(self.actor_params, lr=cfg.lr, eps=cfg.optim_eps)
        self.critic_opt = torch.optim.Adam(self.critic_params, lr=critic_lr, eps=cfg.optim_eps)
        self.base_lrs = (cfg.lr, critic_lr)
        self.reward_stats = RunningMeanStd(device=device)
        self.value_stats = RunningMeanStd(device=device)
        idx = controller.learn_idx
        agent_mask = torch.ones(spec.n_agents, device=device)
        if idx is not None:
            agent_mask = torch.zeros(spec.n_agents, device=device)
            agent_mask[idx] = 1.0
        self.agent_mask = agent_mask
        self.n_updates = 0

    check_config = staticmethod(check_ppo_config)

    # -- the policy ------------------------------------------------------------------------------
    def policy_terms(self, batch: EpisodeBatch, T: int, cut: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """log pi(a_t|o_t) and the policy's entropy, [B, T, N] each, for the batch's actions."""
        out = self.controller.forward_seq(batch, cut=cut)[:, :T]
        avail = batch["avail_actions"][:, :T]
        if not self.continuous:
            logp_all = torch.log_softmax(out.masked_fill(~avail, NEG), -1)
            logp = logp_all.gather(-1, batch["actions"][:, :T].long().unsqueeze(-1)).squeeze(-1)
            entropy = -(logp_all.exp() * logp_all).sum(-1)
            return logp, entropy
        log_std = self.controller.action_log_std()  # [N, A]
        real = avail.float()
        z = (batch["actions"][:, :T] - out) * torch.exp(-log_std)
        logp = ((-0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi)) * real).sum(-1)
        entropy = ((0.5 + 0.5 * math.log(2 * math.pi) + log_std) * real).sum(-1)
        return logp, entropy

    def values(self, critic: ValueCritic, batch: EpisodeBatch) -> torch.Tensor:
        """V [B, T+1, N] in return units (denormalised with value_norm)."""
        return self.in_return_units(critic(batch["obs"], batch["state"]))

    def in_return_units(self, v: torch.Tensor) -> torch.Tensor:
        """The critic's outputs in units of the returns (value_norm: it learns standardised returns)."""
        if not self.cfg.value_norm:
            return v
        return v * self.value_stats.std.float() + self.value_stats.mean.float()

    # -- the update ---------------------------------------------------------------------------------
    def _anneal(self, t_env: int) -> None:
        if not self.cfg.lr_anneal:
            return
        frac = max(0.0, 1.0 - t_env / self.cfg.lr_anneal_time)
        for opt, lr in zip((self.actor_opt, self.critic_opt), self.base_lrs):
            for group in opt.param_groups:
                group["lr"] = lr * frac

    def train(self, batch: EpisodeBatch, t_env: int, episodes: int = 1) -> dict[str, float]:
        cfg = self.cfg
        self._anneal(t_env)
        T = batch.max_t
        filled = batch["filled"].float().unsqueeze(-1)  # [B, T+1, 1]
        mask = filled[:, :T] * self.agent_mask  # [B, T, N]: real steps of learning agents
        rewards = batch["reward"][:, :T].unsqueeze(-1)
        if cfg.standardise_rewards:
            self.reward_stats.update(rewards, filled[:, :T])
            rewards = self.reward_stats.standardise(rewards)
        terminated = batch["terminated"][:, :T].float().unsqueeze(-1)

        with torch.no_grad():
            old_logp, _ = self.policy_terms(batch, T)
            old_v = self.values(self.critic, batch)
            if cfg.returns == Returns.gae:
                adv_fixed, returns = gae(rewards, old_v, terminated, filled, cfg.gamma, cfg.gae_lambda)
            else:
                adv_fixed = None
                returns = nstep_returns(rewards, self.values(self.target_critic, batch), terminated, filled, cfg.gamma,
                                        cfg.q_nstep)
            if adv_fixed is not None and cfg.advantage_norm:  # GAE: over the whole batch, once (MAPPO's code)
                adv_fixed = standardised(adv_fixed, mask)
            if cfg.value_norm:
                self.value_stats.update(returns, mask)
                old_v_norm = self.value_stats.standardise(old_v)
                target = self.value_stats.standardise(returns)
            else:
                old_v_norm, target = old_v, returns

        rows, starts = self._units(filled, T)
        sums: dict[str, float] = {}
        steps = 0
        for _epoch in range(cfg.epochs):
            order = torch.randperm(len(rows)).tensor_split(cfg.n_minibatch)
            for sel in order:
                idx, cut = rows[sel].to(batch.device), None if starts is None else starts[sel].to(batch.device)
                sub = batch.select(idx)
                m = mask[idx]
                if cut is not None:  # the chunk's own steps
                    t = torch.arange(T, device=batch.device)
                    m = m * ((t >= cut[:, None]) & (t < cut[:, None] + cfg.data_chunk_length)).unsqueeze(-1)
                stats = self._minibatch(sub, T, m, old_logp[idx], old_v_norm[idx, :T], target[idx], returns[idx],
                                        None if adv_fixed is None else adv_fixed[idx], cut)
                for k, v in stats.items():
                    sums[k] = sums.get(k, 0.0) + v
                steps += 1
        if cfg.returns == Returns.nstep:
            with torch.no_grad():
                for tp, p in zip(self.target_critic.parameters(), self.critic.parameters()):
                    tp.lerp_(p, cfg.target_tau)
        self.n_updates += 1
        out = {k: v / steps for k, v in sums.items()}
        out["target_mean"] = float(masked_mean(returns, mask))
        return out

    def _units(self, filled: torch.Tensor, T: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """What the minibatches are drawn from: the episodes (starts None), or with data_chunk_length L
        every chunk of L steps of every episode: its episode row and its first step."""
        B, L = filled.shape[0], self.cfg.data_chunk_length
        if L <= 0:
            return torch.arange(B), None
        lengths = filled[:, :T, 0].sum(1).long().tolist()
        rows = [(b, t0) for b in range(B) for t0 in range(0, max(lengths[b], 1), L)]
        return torch.tensor([r[0] for r in rows]), torch.tensor([r[1] for r in rows])

    def _minibatch(self, sub: EpisodeBatch, T: int, m: torch.Tensor, old_logp: torch.Tensor, old_v: torch.Tensor,
                   target: torch.Tensor, returns: torch.Tensor, adv: torch.Tensor | None,
                   cut: torch.Tensor | None = None) -> dict[str, float]:
        cfg = self.cfg
        # critic: one step
        v = self.critic(sub["obs"], sub["state"], cut)[:, :T]  # normalised units with value_norm
        err = self._value_error(v, target)
        if cfg.value_clip > 0:
            clipped = old_v + (v - old_v).clamp(-cfg.value_clip, cfg.value_clip)
            err = torch.maximum(err, self._value_error(clipped, target))
        value_loss = masked_mean(err, m)
        if adv is None:  # n-step: the return minus the critic's current value (EPyMARL)
            adv = returns - self.in_return_units(v.detach())
            if cfg.advantage_norm:  # n-step: per minibatch, as the advantages change every epoch
                adv = standardised(adv, m)
        adv = adv.detach()
        critic_grad = self._step(self.critic_opt, self.critic_params, value_loss, "value_loss")

        # actor: one step
        logp, entropy = self.policy_terms(sub, T, cut)
        log_ratio = logp - old_logp
        surr, outside = clipped_surrogate(log_ratio, adv, cfg.clip)
        pg_loss = -masked_mean(surr + cfg.entropy_coef * entropy, m)
        actor_grad = self._step(self.actor_opt, self.actor_params, pg_loss, "pg_loss")
        with torch.no_grad():
            return {
                "pg_loss": float(pg_loss),
                "value_loss": float(value_loss),
                "entropy": float(masked_mean(entropy, m)),
                "approx_kl": float(masked_mean(log_ratio.exp() - 1.0 - log_ratio, m)),  # Schulman's k3 estimator
                "clip_fraction": float(masked_mean(outside.float(), m)),
                "advantage_mean": float(masked_mean(adv, m)),
                "value_mean": float(masked_mean(v, m)),
                "actor_grad_norm": actor_grad,
                "critic_grad_norm": critic_grad,
            }

    def _value_error(self, v: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.cfg.huber_delta > 0:
            return torch.nn.functional.huber_loss(v, target, reduction="none", delta=self.cfg.huber_delta)
        return (v - target) ** 2

    def _step(self, opt: torch.optim.Optimizer, params: list[torch.nn.Parameter], loss: torch.Tensor, name: str) -> float:
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"{name} became {loss.item()} (update {self.n_updates + 1}); training stopped. "
                "Lower learner.lr, clip gradients (learner.grad_norm_clip) or check rewards."
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        clip = self.cfg.grad_norm_clip if self.cfg.grad_norm_clip > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(params, clip, foreach=True)
        opt.step()
        return float(norm)

    # -- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "modules": {"agent": self.controller.agent.state_dict(), "critic": self.critic.state_dict()},
            "targets": {"critic": self.target_critic.state_dict()},
            "actor_optimiser": self.actor_opt.state_dict(),
            "critic_optimiser": self.critic_opt.state_dict(),
            "reward_stats": self.reward_stats.state_dict(),
            "value_stats": self.value_stats.state_dict(),
            "n_updates": self.n_updates,
        }

    def load_state_dict(self, state: dict[str, Any], weights_only: bool = False) -> None:
        self.controller.agent.load_state_dict(state["modules"]["agent"])
        self.critic.load_state_dict(state["modules"]["critic"])
        if weights_only:
            self.target_critic.load_state_dict(state["modules"]["critic"])
            return
        self.target_critic.load_state_dict(state["targets"]["critic"])
        self.actor_opt.load_state_dict(state["actor_optimiser"])
        self.critic_opt.load_state_dict(state["critic_optimiser"])
        self.reward_stats.load_state_dict(state["reward_stats"])
        self.value_stats.load_state_dict(state["value_stats"])
        self.n_updates = state["n_updates"]


@LEARNERS.register("ippo_learner", config=PPOLearnerConfig)
class IPPOLearner(PPOLearner):
    """Independent PPO: each agent's critic sees its own observation (and its id)."""

    @staticmethod
    def check_config(cfg: Any) -> list[str]:
        errs = check_ppo_config(cfg)
        if cfg.critic_input != CriticInput.obs and str(cfg.critic_input) != "obs":
            errs.append(f"learner.critic_input={CriticInput(cfg.critic_input).value} is invalid for ippo_learner: its "
                        "critic is decentralised (obs); a centralised critic is learner=mappo_learner")
        return errs


@dataclass
class MAPPOLearnerConfig(PPOLearnerConfig):
    critic_input: CriticInput = CriticInput.state


@LEARNERS.register("mappo_learner", config=MAPPOLearnerConfig)
class MAPPOLearner(PPOLearner):
    """Multi-agent PPO: a centralised critic on the env's state (or the agent-specific global state)."""

    requires = PPOLearner.requires | frozenset({STATE.name})

    @staticmethod
    def check_config(cfg: Any) -> list[str]:
        errs = check_ppo_config(cfg)
        if CriticInput(cfg.critic_input) == CriticInput.obs:
            errs.append("learner.critic_input=obs is invalid for mappo_learner: its critic is centralised (state or "
                        "agent_state); a critic on the agent's own observation is learner=ippo_learner")
        return errs
