"""The m-step matrix game of the MAVEN paper (Mahajan et al. 2019, Fig. 3), natively batched.

Two agents, two actions. Step 1: joint action (0, 0) enters the left branch and (1, 1) the right
one, each paying 1; an off-diagonal joint action ends the episode with 0. Left branch: m-2 steps
where (0, 0) pays 1 (anything else ends the episode), then a last step paying [[1, 1], [1, 4]].
Right branch: (1, 1) pays 1 at every step until step m (anything else ends the episode).
Best return m + 3 (left, 13 at m = 10); the right branch gives m. Observation and state:
one-hot(step) ++ one-hot(branch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from envs.base import EnvConfig, EnvSpec, Observation, StepResult, VecEnv
from runner.registry import ENVS

NONE, LEFT, RIGHT = 0, 1, 2


@dataclass
class MStepConfig(EnvConfig):
    m: int = 10
    """Episode length; the optimal return is m + 3, the easy branch gives m."""
    t_max: int = 105_000
    test_interval: int = 1_000
    log_interval: int = 1_000


@ENVS.register("mstep", config=MStepConfig)
class MStepGame(VecEnv):
    FINAL_LEFT = ((1.0, 1.0), (1.0, 4.0))

    def __init__(self, cfg: MStepConfig, n_envs: int, seed: int, device: torch.device) -> None:
        self.n_envs, self.device, self.m = n_envs, torch.device(device), cfg.m
        dim = cfg.m + 1 + 2
        self.spec = EnvSpec(n_agents=2, n_actions=2, obs_dim=dim, state_dim=dim, episode_limit=cfg.m,
                            agent_ids=("agent_0", "agent_1"))
        self.t = torch.zeros(n_envs, dtype=torch.long, device=self.device)
        self.branch = torch.zeros(n_envs, dtype=torch.long, device=self.device)
        self.done = torch.zeros(n_envs, dtype=torch.bool, device=self.device)
        self.final = torch.tensor(self.FINAL_LEFT, device=self.device).flatten()
        self._step_eye = torch.eye(cfg.m + 1, device=self.device)
        self._branch_eye = torch.cat([torch.zeros(1, 2, device=self.device), torch.eye(2, device=self.device)])
        self._avail = torch.ones(n_envs, 2, 2, dtype=torch.bool, device=self.device)

    @classmethod
    def check_config(cls, cfg: Any) -> list[str]:
        return [f"env.m={cfg.m} is invalid: must be >= 2"] if cfg.m < 2 else []

    def _observe(self) -> Observation:
        state = torch.cat([self._step_eye[self.t], self._branch_eye[self.branch]], -1)
        return Observation(state.unsqueeze(1).expand(-1, 2, -1), state, self._avail)

    def reset(self) -> Observation:
        self.t.zero_()
        self.branch.zero_()
        self.done.zero_()
        return self._observe()

    def step(self, actions: torch.Tensor) -> StepResult:
        a0, a1 = actions[:, 0], actions[:, 1]
        t, live = self.t, ~self.done
        both0, both1 = (a0 == 0) & (a1 == 0), (a0 == 1) & (a1 == 1)
        first = t == 0
        last = t == self.m - 1
        left, right = self.branch == LEFT, self.branch == RIGHT
        stay = (first & (both0 | both1)) | (left & ~last & both0) | (right & both1) | (left & last)
        reward = torch.where(left & last, self.final[a0 * 2 + a1], stay.float()) * live
        self.branch = torch.where(first & both0, LEFT, torch.where(first & both1, RIGHT, self.branch))
        ended = live & (~stay | last)
        self.t = torch.where(live, (t + 1).clamp(max=self.m), t)
        self.done = self.done | ended
        return StepResult(self._observe(), reward, ended, torch.zeros_like(ended))
