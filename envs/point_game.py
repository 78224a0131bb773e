"""``point_game``: a small cooperative continuous-control game, natively batched (tests and quick runs).

N agents (``n_agents``, default 2) start at random positions in [-1, 1]^2 and a shared target is
drawn at random in the same square. Each step every agent chooses a velocity in the Box [-1, 1]^2,
moves by ``speed`` times it (positions stay in the square) and the team is paid minus the agents'
mean distance to the target. Episodes are cut at ``episode_limit`` steps (a truncation, never a
termination: the value of the last state is bootstrapped).

- state: every agent's position, then the target ([2 N + 2]);
- observation of agent i: its position, the target, the other agents' positions relative to its own.

Moving straight to the target earns about -5 per episode of 25 steps with the defaults; a uniformly
random policy about -26.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from envs.base import EnvConfig, EnvSpec, Observation, StepResult, VecEnv
from runner.contracts import BOUNDED, CONTINUOUS, STATE
from runner.errors import check_range
from runner.registry import ENVS


@dataclass
class PointGameConfig(EnvConfig):
    n_agents: int = 2
    """Agents; all of them are paid by their mean distance to the one target."""
    episode_limit: int = 25
    """Steps per episode (then a truncation)."""
    speed: float = 0.1
    """Distance an agent moves per step at full velocity (a velocity of norm 1 per axis)."""
    t_max: int = 20_000
    test_interval: int = 2_000
    log_interval: int = 2_000


@ENVS.register("point_game", config=PointGameConfig)
class PointGame(VecEnv):
    provides: ClassVar[frozenset[str]] = frozenset({CONTINUOUS.name, STATE.name, BOUNDED.name})

    def __init__(self, cfg: PointGameConfig, n_envs: int, seed: int, device: torch.device) -> None:
        self.n_envs, self.device = n_envs, torch.device(device)
        n = self.n_agents = int(cfg.n_agents)
        self.limit, self.speed = int(cfg.episode_limit), float(cfg.speed)
        self.spec = EnvSpec(
            n_agents=n, n_actions=2, obs_dim=4 + 2 * (n - 1), state_dim=2 * n + 2, episode_limit=self.limit,
            agent_ids=tuple(f"agent_{i}" for i in range(n)), continuous=True,
            action_low=((-1.0, -1.0),) * n, action_high=((1.0, 1.0),) * n,
        )
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(int(seed))
        self.pos = torch.zeros(n_envs, n, 2, device=self.device)
        self.target = torch.zeros(n_envs, 2, device=self.device)
        self.t = 0
        self._avail = torch.ones(n_envs, n, 2, dtype=torch.bool, device=self.device)
        # others[i]: the agents other than i, in order (relative positions in i's observation)
        self._others = torch.tensor([[j for j in range(n) if j != i] for i in range(n)], dtype=torch.long,
                                    device=self.device).reshape(n, n - 1)

    @classmethod
    def check_config(cls, cfg: Any) -> list[str]:
        errs = []
        if cfg.n_agents < 1:
            errs.append(f"env.n_agents={cfg.n_agents} is invalid: must be >= 1")
        if cfg.episode_limit < 1:
            errs.append(f"env.episode_limit={cfg.episode_limit} is invalid: must be >= 1")
        check_range(errs, "env.speed", cfg.speed, 0.0, 2.0, lo_open=True)
        return errs

    def _uniform(self, *shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=self.gen, device=self.device) * 2 - 1

    def _observe(self) -> Observation:
        B, n = self.n_envs, self.n_agents
        target = self.target.unsqueeze(1).expand(B, n, 2)
        rel = (self.pos[:, self._others] - self.pos.unsqueeze(2)).reshape(B, n, 2 * (n - 1))
        obs = torch.cat([self.pos, target, rel], -1)
        state = torch.cat([self.pos.reshape(B, 2 * n), self.target], -1)
        return Observation(obs, state, self._avail)

    def distance(self) -> torch.Tensor:
        """[B]: the agents' mean distance to the target."""
        return torch.linalg.vector_norm(self.pos - self.target.unsqueeze(1), dim=-1).mean(-1)

    def reset(self) -> Observation:
        self.pos = self._uniform(self.n_envs, self.n_agents, 2)
        self.target = self._uniform(self.n_envs, 2)
        self.t = 0
        return self._observe()

    def step(self, actions: torch.Tensor) -> StepResult:
        done = self.t >= self.limit
        if not done:
            move = actions.to(self.device, torch.float32)[..., :2].clamp(-1.0, 1.0) * self.speed
            self.pos = (self.pos + move).clamp(-1.0, 1.0)
            self.t += 1
        reward = torch.zeros(self.n_envs, device=self.device) if done else -self.distance()
        truncated = torch.full((self.n_envs,), self.t >= self.limit, dtype=torch.bool, device=self.device)
        return StepResult(self._observe(), reward, torch.zeros_like(truncated), truncated)

    def episode_stats(self) -> dict[str, torch.Tensor]:
        return {"final_distance": self.distance()}

    def get_rng_state(self) -> Any:
        return self.gen.get_state()

    def set_rng_state(self, state: Any) -> None:
        self.gen.set_state(state)
