"""MAVEN's controller: the basic controller plus a latent z drawn once per episode.

At episode start (a runner hook) z is drawn from the initial state: uniformly, or from the
learned hierarchical policy pi(z | s_0) (sampled in training, its argmax in test mode). z is
stored in the episode batch (field ``noise``, one per episode) and conditions every agent's
output layer. Extra test phases: z uniform (``_zuniform``) and each z in turn (``_z<k>``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from envs.base import EnvSpec, Observation
from modules.maven import LatentPolicy
from runner.buffers.episode import EpisodeBatch, FieldSpec
from runner.contracts import CONDITIONED, DISCRETE, LATENT
from runner.controllers.basic import BasicController, BasicControllerConfig
from runner.errors import check_range
from runner.registry import AGENTS, CONTROLLERS

LATENT_POLICIES = ("learned", "uniform")


@dataclass
class MavenControllerConfig(BasicControllerConfig):
    noise_dim: int = 16
    """Number of latent values z (one-hot)."""
    latent_policy: str = "learned"
    """learned: softmax policy pi(z | s_0) trained by REINFORCE; uniform: z ~ U{0..noise_dim-1}."""
    latent_policy_hidden: int = 64
    """Hidden units of the learned latent policy."""
    latent_epsilon: float = 0.0
    """Share of training episodes whose z is drawn uniformly instead of from the learned policy
    (keeps every z explored while the policy learns which z pays; test episodes use its argmax)."""
    test_each_z: int = 1
    """Test episodes per latent value (test_return_mean_z<k>); 0 = no per-z tests."""


@CONTROLLERS.register("maven", config=MavenControllerConfig)
class MavenController(BasicController):
    cfg: MavenControllerConfig
    supports_q_tables = False  # Q depends on z: the per-z test returns show what each z learned
    provides = frozenset({LATENT.name})  # not AGENT_GROUPS: z is drawn for the whole team
    requires = frozenset({DISCRETE.name, CONDITIONED.name})

    def __init__(self, cfg: MavenControllerConfig, agent_cfg: Any, spec: EnvSpec, device: torch.device) -> None:
        self.noise_dim = cfg.noise_dim
        super().__init__(cfg, agent_cfg, spec, device)
        self.latent_policy = LatentPolicy(spec.state_dim, cfg.noise_dim, cfg.latent_policy_hidden).to(device)
        self.variant = ""

    def build_agent(self, agent_cfg: Any, input_dim: int, n_actions: int, n_param_groups: int) -> nn.Module:
        return AGENTS.get(agent_cfg.name)(
            agent_cfg, input_dim, n_actions, n_param_groups, cond_dim=self.noise_dim + self.spec.n_agents
        )

    @staticmethod
    def check_config(cfg: Any) -> list[str]:
        errs = BasicController.check_config(cfg)
        if cfg.noise_dim < 1:
            errs.append(f"controller.noise_dim={cfg.noise_dim} is invalid: must be >= 1")
        if cfg.latent_policy not in LATENT_POLICIES:
            errs.append(
                f"controller.latent_policy={cfg.latent_policy!r} is invalid: available latent policies: "
                + ", ".join(LATENT_POLICIES)
            )
        check_range(errs, "controller.latent_epsilon", cfg.latent_epsilon, 0.0, 1.0)
        if cfg.test_each_z < 0:
            errs.append(f"controller.test_each_z={cfg.test_each_z} is invalid: must be >= 0")
        return errs

    # -- the latent, drawn once per episode --------------------------------------------------
    def extra_scheme(self) -> dict[str, FieldSpec]:
        return {"noise": FieldSpec((self.noise_dim,), torch.float32, episode_const=True)}

    def on_episode_start(self, batch: EpisodeBatch, observation: Observation, test_mode: bool) -> None:
        b = batch.batch_size
        device = batch.device
        if self.variant.startswith("_z") and self.variant[2:].isdigit():
            z = torch.full((b,), int(self.variant[2:]), dtype=torch.long, device=device)
        elif self.cfg.latent_policy == "uniform" or self.variant == "_zuniform":
            z = torch.randint(self.noise_dim, (b,), device=device)
        else:
            with torch.no_grad():
                logits = self.latent_policy(observation.state.to(device))
            if test_mode:
                z = logits.argmax(-1)
            else:
                z = torch.multinomial(logits.softmax(-1), 1).squeeze(-1)
                if self.cfg.latent_epsilon > 0:
                    uniform = torch.rand(b, device=device) < self.cfg.latent_epsilon
                    z = torch.where(uniform, torch.randint(self.noise_dim, (b,), device=device), z)
        batch.data["noise"][:] = F.one_hot(z, self.noise_dim).float()

    def test_variants(self) -> list[tuple[str, int | None]]:
        out: list[tuple[str, int | None]] = []
        if self.cfg.latent_policy == "learned":
            out.append(("_zuniform", None))
        if self.cfg.test_each_z > 0:
            out += [(f"_z{k}", self.cfg.test_each_z) for k in range(self.noise_dim)]
        return out

    def set_test_variant(self, suffix: str) -> None:
        self.variant = suffix

    # -- acting and learning: the agents see one-hot z ++ one-hot agent id ----------------------
    def call_agent(self, agent: nn.Module, inputs: torch.Tensor, hidden: Any, batch: EpisodeBatch | None, t: int | None):
        assert batch is not None  # MAVEN's agents are always called with the batch: its noise z
        noise = batch["noise"]  # [B, noise_dim]
        lead = inputs.shape[:-2]  # [B] for one step, [B, T+1] for a whole batch
        z = noise.view(noise.shape[0], *([1] * (len(lead) - 1)), 1, self.noise_dim).expand(*lead, self.spec.n_agents, -1)
        cond = torch.cat([z, self.agent_ids.expand(*lead, -1, -1)], -1)
        return agent(inputs, hidden, cond)
