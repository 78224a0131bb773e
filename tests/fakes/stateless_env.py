"""An env with observations but no global state (state_dim 0): parts that require the state
(runner.contracts.STATE) are refused when it is built, before any run exists.

Registered as ``_stateless_test_env`` once: import it as ``tests.fakes.stateless_env`` only."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from envs.base import EnvConfig, EnvSpec, Observation, StepResult, VecEnv
from runner.registry import ENVS


@dataclass
class NoStateConfig(EnvConfig):
    pass


@ENVS.register("_stateless_test_env", config=NoStateConfig)
class NoStateEnv(VecEnv):
    def __init__(self, cfg, n_envs: int, seed: int, device) -> None:
        self.n_envs, self.device = n_envs, torch.device(device)
        self.spec = EnvSpec(2, 2, 3, 0, 2, ("a", "b"))

    def reset(self) -> Observation:
        return Observation(torch.zeros(self.n_envs, 2, 3), torch.zeros(self.n_envs, 0),
                           torch.ones(self.n_envs, 2, 2, dtype=torch.bool))

    def step(self, actions) -> StepResult:
        z = torch.ones(self.n_envs, dtype=torch.bool)
        return StepResult(self.reset(), torch.zeros(self.n_envs), z, ~z)

    closed = 0  # close() calls: the env copies built before a refusal are closed

    def close(self) -> None:
        type(self).closed += 1
