"""Base learner: optimiser, gradient clipping, target networks, device, save/load.

Subclasses implement :meth:`loss` and list their trainable modules; everything else (the
optimiser step, clipping, hard/soft target updates, NaN guard, checkpoint state) lives here.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch
from omegaconf import MISSING
from torch import nn

from runner.contracts import OFF_POLICY, Learner
from runner.errors import check_range
from runner.learners.normalise import RunningMeanStd


class Optimizer(str, Enum):
    """``learner.optimizer``; the config value is its name (Hydra rejects any other)."""

    adam = "adam"
    rmsprop = "rmsprop"


class TargetUpdate(str, Enum):
    """``learner.target_update``; the config value is its name (Hydra rejects any other)."""

    hard = "hard"
    soft = "soft"


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite: training cannot continue."""


@dataclass
class LearnerConfig:
    name: str = MISSING
    lr: float = 5e-4
    """Learning rate."""
    optimizer: Optimizer = Optimizer.adam
    """adam or rmsprop."""
    optim_alpha: float = 0.99
    """RMSprop smoothing constant."""
    optim_eps: float = 1e-5
    """Optimiser epsilon."""
    grad_norm_clip: float = 10.0
    """Clip the global gradient norm to this value (<= 0: no clipping)."""
    gamma: float = 0.99
    """Discount factor."""
    batch_size: int = 32
    """Episodes per update."""
    target_update: TargetUpdate = TargetUpdate.hard
    """hard (copy every target_update_interval episodes) or soft (Polyak with tau every update)."""
    target_update_interval: int = 200
    """Training episodes between hard target copies, counted as PyMARL does: an update after a
    rollout of B episodes counts B (with the episode runner, B=1: every N updates)."""
    tau: float = 0.005
    """Polyak rate of soft target updates."""
    standardise_rewards: bool = True
    """Standardise the rewards in the TD targets by their running mean and std over the training
    batches, (r - mean) / std (EPyMARL's default). LBF's tiny rewards otherwise drown in the initial
    Q-values; the paper presets of the two-step and m-step games turn it off to report raw Q-values."""


def check_learner_config(cfg: Any) -> list[str]:
    errs: list[str] = []
    if not cfg.lr > 0:
        errs.append(f"learner.lr={cfg.lr} is invalid: must be > 0")
    check_range(errs, "learner.gamma", cfg.gamma, 0.0, 1.0, lo_open=True)
    if cfg.batch_size < 1:
        errs.append(f"learner.batch_size={cfg.batch_size} is invalid: must be >= 1")
    if cfg.target_update_interval < 1:
        errs.append(f"learner.target_update_interval={cfg.target_update_interval} is invalid: must be >= 1")
    check_range(errs, "learner.tau", cfg.tau, 0.0, 1.0, lo_open=True)
    return errs


class BaseLearner(Learner):
    """Holds online and target copies of `modules` and trains them with one optimiser, from
    episodes sampled out of a replay buffer."""

    requires = frozenset({OFF_POLICY.name})

    def __init__(
        self, cfg: LearnerConfig, modules: dict[str, nn.Module], device: torch.device, target_keys: tuple[str, ...] | None = None
    ) -> None:
        self.cfg, self.device = cfg, device
        self.modules = modules
        keys = modules.keys() if target_keys is None else target_keys
        self.targets = {k: copy.deepcopy(modules[k]).requires_grad_(False) for k in keys}
        self.params = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
        # fused Adam runs one kernel for all parameters (CPU and CUDA): ~1 ms less per update here
        if cfg.optimizer == Optimizer.adam:
            self.optimiser: torch.optim.Optimizer = torch.optim.Adam(self.params, lr=cfg.lr, eps=cfg.optim_eps, fused=True)
        else:
            self.optimiser = torch.optim.RMSprop(
                self.params, lr=cfg.lr, alpha=cfg.optim_alpha, eps=cfg.optim_eps, foreach=True
            )
        self.grad_groups: dict[str, list[nn.Parameter]] = {}  # name -> parameters: logs grad_norm_<name>
        self.reward_stats = RunningMeanStd(device=device)  # learner.standardise_rewards
        self.n_updates = 0
        self.target_clock = 0  # training episodes behind the updates so far (hard target copies)

    def loss(self, batch: Any, t_env: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def train_rewards(self, rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The rewards a loss should learn from: with ``standardise_rewards``, the running statistics
        take in this batch's real steps (``mask``) and the rewards come back standardised."""
        if not self.cfg.standardise_rewards:
            return rewards
        self.reward_stats.update(rewards, mask)
        return self.reward_stats.standardise(rewards)

    def train(self, batch: Any, t_env: int, episodes: int = 1) -> dict[str, float]:
        """One gradient step on `batch`, after a rollout of `episodes` new episodes (they advance
        the hard-target clock). Returns the stats to log (floats)."""
        loss, stats = self.loss(batch, t_env)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"loss became {loss.item()} at t_env={t_env} (update {self.n_updates + 1}); "
                "training stopped. Lower learner.lr, clip gradients (learner.grad_norm_clip) or check rewards."
            )
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        for name, params in self.grad_groups.items():
            grads = [p.grad for p in params if p.grad is not None]
            stats[f"grad_norm_{name}"] = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(x) for x in grads])) if grads else torch.zeros(())
        clip = self.cfg.grad_norm_clip if self.cfg.grad_norm_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, clip, foreach=True)
        self.optimiser.step()
        self.n_updates += 1
        self._update_targets(episodes)
        out = {"loss": loss.detach(), "grad_norm": grad_norm.detach(), **stats}
        return {k: float(v) for k, v in out.items()}

    @torch.no_grad()
    def _update_targets(self, episodes: int) -> None:
        if self.cfg.target_update == TargetUpdate.soft:
            for k, tgt in self.targets.items():
                for tp, p in zip(tgt.parameters(), self.modules[k].parameters()):
                    tp.lerp_(p, self.cfg.tau)
            return
        every, before = self.cfg.target_update_interval, self.target_clock
        self.target_clock += episodes
        if self.target_clock // every > before // every:  # crossed a multiple of the interval
            for k, tgt in self.targets.items():
                tgt.load_state_dict(self.modules[k].state_dict())

    # -- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "modules": {k: m.state_dict() for k, m in self.modules.items()},
            "targets": {k: m.state_dict() for k, m in self.targets.items()},
            "optimiser": self.optimiser.state_dict(),
            "n_updates": self.n_updates,
            "target_clock": self.target_clock,
            "reward_stats": self.reward_stats.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any], weights_only: bool = False) -> None:
        for k, m in self.modules.items():
            m.load_state_dict(state["modules"][k])
        if weights_only:
            for k, m in self.targets.items():
                m.load_state_dict(state["modules"][k])
            return
        for k, m in self.targets.items():
            m.load_state_dict(state["targets"][k])
        self.optimiser.load_state_dict(state["optimiser"])
        self.n_updates = state["n_updates"]
        self.target_clock = state.get("target_clock", self.n_updates)  # older checkpoints: one per update
        if "reward_stats" in state:
            self.reward_stats.load_state_dict(state["reward_stats"])
        else:  # a checkpoint from before reward standardisation: fresh statistics
            self.reward_stats = RunningMeanStd(device=self.device)
