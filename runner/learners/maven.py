"""MAVEN (Mahajan et al. 2019, arXiv 1910.07483): QMIX with a latent z for committed exploration.

Loss = TD (QMIX mixer conditioned on state ++ z)
     + mi_loss * cross-entropy of a recurrent discriminator that recovers z from the agents'
       softmax(Q) and the state along the episode (a variational lower bound on I(z; trajectory),
       which makes each z a distinct joint behaviour)
     + REINFORCE loss of the latent policy pi(z | s_0) on episode returns, minus an entropy bonus
       (learned latent policy only).
Deviations from the paper: the REINFORCE advantage subtracts the batch's mean return (a
baseline); the discriminator is trained on every step of the episode (each step sees the
trajectory so far) rather than only on the final step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from modules.maven import Discriminator
from runner.buffers.episode import EpisodeBatch
from runner.contracts import LATENT, OFF_POLICY, STATE
from runner.controllers.maven import MavenController
from runner.learners.q_learner import QLearner, QLearnerConfig
from runner.registry import LEARNERS


@dataclass
class MavenLearnerConfig(QLearnerConfig):
    mi_loss: float = 1.0
    """Weight of the discriminator's cross-entropy (the mutual-information term)."""
    entropy_coef: float = 0.001
    """Entropy bonus of the learned latent policy."""
    discrim_hidden: int = 64
    """GRU hidden units of the discriminator."""


@LEARNERS.register("maven_learner", config=MavenLearnerConfig)
class MavenLearner(QLearner):
    cfg: MavenLearnerConfig
    # the latent z comes from controller=maven; MAVEN's latent policy and mixer are conditioned on the state
    requires = frozenset({OFF_POLICY.name, LATENT.name, STATE.name})

    def __init__(self, cfg: MavenLearnerConfig, controller: Any, mixer_cfg: Any, spec: Any, device: torch.device) -> None:
        self.latent: MavenController = controller.member()  # the team's one learning group draws z
        super().__init__(cfg, controller, mixer_cfg, spec, device)

    @staticmethod
    def check_config(cfg: Any) -> list[str]:
        errs = QLearner.check_config(cfg)
        if cfg.mi_loss < 0:
            errs.append(f"learner.mi_loss={cfg.mi_loss} is invalid: must be >= 0")
        if cfg.entropy_coef < 0:
            errs.append(f"learner.entropy_coef={cfg.entropy_coef} is invalid: must be >= 0")
        return errs

    def mixer_state_dim(self) -> int:
        return self.spec.state_dim + self.latent.noise_dim

    def mixer_states(self, batch: EpisodeBatch) -> torch.Tensor:
        state = batch["state"]
        return torch.cat([state, batch["noise"].unsqueeze(1).expand(-1, state.shape[1], -1)], -1)

    def extra_modules(self, device: torch.device) -> dict[str, torch.nn.Module]:
        n, a = self.spec.n_agents, self.spec.n_actions
        self.discriminator = Discriminator(n * a + self.spec.state_dim, self.latent.noise_dim, self.cfg.discrim_hidden).to(device)
        mods: dict[str, torch.nn.Module] = {"discriminator": self.discriminator}
        if self.latent.cfg.latent_policy == "learned":
            mods["latent_policy"] = self.latent.latent_policy
        return mods

    def loss(self, batch: EpisodeBatch, t_env: int):
        td, stats, q = self.td_loss(batch)
        mask = batch["filled"][:, :-1].float()
        z = batch["noise"].argmax(-1)  # [B]

        # discriminator: recover z from softmax(Q) of all agents ++ state, at every real step
        T = mask.shape[1]
        q_soft = q[:, :T].softmax(-1).flatten(2)  # [B, T, N*A]; gradients reach the agents
        logits = self.discriminator(torch.cat([q_soft, batch["state"][:, :T]], -1))
        ce = F.cross_entropy(logits.flatten(0, 1), z.repeat_interleave(T), reduction="none").view_as(mask)
        discrim_loss = (ce * mask).sum() / mask.sum()
        loss = td + self.cfg.mi_loss * discrim_loss
        stats["discrim_loss"] = discrim_loss.detach()

        if "latent_policy" in self.modules:  # REINFORCE on episode returns, with an entropy bonus
            returns = (batch["reward"][:, :-1] * mask).sum(1)
            logp = self.latent.latent_policy(batch["state"][:, 0]).log_softmax(-1)
            entropy = -(logp.exp() * logp).sum(-1).mean()
            advantage = returns - returns.mean()
            pg = -(advantage * logp.gather(1, z.unsqueeze(1)).squeeze(1)).mean()
            loss = loss + pg - self.cfg.entropy_coef * entropy
            stats["latent_policy_entropy"] = entropy.detach()
        return loss, stats
