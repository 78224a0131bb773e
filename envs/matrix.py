"""Matrix games as natively batched torch envs: B episodes step as tensor ops.

- ``twostep``: the two-step game of the QMIX paper (Rashid et al. 2018, Table 1).
- ``matrix``: any one-step cooperative game given as a payoff tensor (n agents, n actions) in yaml.
- ``climbing``: the climbing game [[11,-30,0],[-30,7,6],[0,0,5]] (Claus & Boutilier 1998).
- ``penalty``: the penalty game [[10,0,k],[0,2,0],[k,0,10]] with configurable k.

The one-step games can be repeated: ``steps`` > 1 plays the same game ``steps`` times in one
episode with a constant observation, as in EPyMARL's matrix games (Papoudakis et al. 2021: 25
steps). The last step terminates the episode (EPyMARL counts its time limit as terminal).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import MISSING

from envs.base import EnvConfig, EnvSpec, Observation, QPoint, StepResult, VecEnv
from runner.registry import ENVS


def _agent_ids(n: int) -> tuple[str, ...]:
    return tuple(f"agent_{i}" for i in range(n))


@dataclass
class TwoStepConfig(EnvConfig):
    payoff_2a: float = 7.0
    """Reward of every joint action in state 2A."""
    payoff_2b: Any = field(default_factory=lambda: [[0.0, 1.0], [1.0, 8.0]])
    """Payoff matrix of state 2B (rows: agent 1's action)."""
    bystanders: int = 0
    """Extra agents (agent_2, ...) that see the same state and act, but whose actions never
    change the payoff: a team with members outside the learners' control (agent groups)."""
    t_max: int = 10_000
    test_interval: int = 1_000
    log_interval: int = 1_000


@ENVS.register("twostep", config=TwoStepConfig)
class TwoStepGame(VecEnv):
    """Two agents, actions A(0)/B(1). State 1 pays 0 and agent 1's action picks 2A or 2B.

    2A pays ``payoff_2a`` for every joint action, 2B pays ``payoff_2b``. Two steps, then the
    episode terminates. Observation and state: one-hot of (1, 2A, 2B); zeros once terminal.
    ``bystanders`` more agents observe and act too, without any effect on the payoff.
    """

    LABELS = ("state 1", "state 2A", "state 2B")

    def __init__(self, cfg: TwoStepConfig, n_envs: int, seed: int, device: torch.device) -> None:
        self.n_envs, self.device = n_envs, torch.device(device)
        n = self.n_agents = 2 + cfg.bystanders
        self.spec = EnvSpec(n_agents=n, n_actions=2, obs_dim=3, state_dim=3, episode_limit=2, agent_ids=_agent_ids(n))
        self.payoff_2b = torch.tensor(cfg.payoff_2b, dtype=torch.float32, device=self.device).flatten()
        self.payoff_2a = float(cfg.payoff_2a)
        self.cur = torch.zeros(n_envs, dtype=torch.long, device=self.device)  # 0:1, 1:2A, 2:2B, 3:terminal
        self._eye = torch.cat([torch.eye(3, device=self.device), torch.zeros(1, 3, device=self.device)])
        self._avail = torch.ones(n_envs, n, 2, dtype=torch.bool, device=self.device)

    @classmethod
    def check_config(cls, cfg: Any) -> list[str]:
        errs = []
        p = _plain(cfg.payoff_2b)
        if _payoff_shape(p) != (2, 2):
            errs.append(f"env.payoff_2b={p} is invalid: must be a 2x2 matrix of numbers")
        if cfg.bystanders < 0:
            errs.append(f"env.bystanders={cfg.bystanders} is invalid: must be >= 0")
        return errs

    def _observe(self) -> Observation:
        onehot = self._eye[self.cur]
        return Observation(onehot.unsqueeze(1).expand(-1, self.n_agents, -1).contiguous(), onehot, self._avail)

    def reset(self) -> Observation:
        self.cur.zero_()
        return self._observe()

    def step(self, actions: torch.Tensor) -> StepResult:
        cur = self.cur
        a0, a1 = actions[:, 0], actions[:, 1]
        r2b = self.payoff_2b[a0 * 2 + a1]
        reward = torch.where(cur == 1, self.payoff_2a, torch.where(cur == 2, r2b, 0.0))
        reward = reward.masked_fill(cur == 3, 0.0)
        terminated = (cur == 1) | (cur == 2)
        self.cur = torch.where(cur == 0, 1 + a0, torch.where(cur == 3, cur, torch.full_like(cur, 3)))
        return StepResult(self._observe(), reward, terminated, torch.zeros_like(terminated))

    def q_points(self) -> list[QPoint]:
        pts = []
        for i, label in enumerate(self.LABELS):
            onehot = self._eye[i]
            n = self.n_agents
            pts.append(QPoint(label, onehot.expand(n, 3), onehot, torch.ones(n, 2, dtype=torch.bool, device=self.device)))
        return pts


@dataclass
class RepeatedGameConfig(EnvConfig):
    steps: int = 1
    """Plays of the one-step game per episode (constant observation; the last one terminates)."""


@dataclass
class MatrixGameConfig(RepeatedGameConfig):
    payoff: Any = MISSING
    """Payoff tensor as nested lists: n_agents levels deep, n_actions long at each level."""
    t_max: int = 10_000
    test_interval: int = 1_000
    log_interval: int = 1_000


def _payoff_shape(payoff: Any) -> tuple[int, ...] | None:
    """Shape of a nested list if it is a regular tensor with equal sides, else None."""
    try:
        t = torch.tensor(_plain(payoff), dtype=torch.float32)
    except (ValueError, TypeError):
        return None
    if t.dim() < 1 or len(set(t.shape)) != 1 or t.shape[0] < 2:
        return None
    return tuple(t.shape)


def _plain(x: Any) -> Any:
    if hasattr(x, "__iter__") and not isinstance(x, str):
        return [_plain(v) for v in x]
    return x


@ENVS.register("matrix", config=MatrixGameConfig)
class MatrixGame(VecEnv):
    """A one-step cooperative game: every agent picks an action, the team gets payoff[a_1, ..., a_n].

    Observation and state are a constant 1 (nothing to observe); the episode terminates after
    ``steps`` plays (default one, so the learned Q_tot is a direct estimate of the payoff under the
    behaviour policy).
    """

    def __init__(self, cfg: Any, n_envs: int, seed: int, device: torch.device) -> None:
        self.n_envs, self.device = n_envs, torch.device(device)
        payoff = torch.tensor(_plain(self.payoff_of(cfg)), dtype=torch.float32, device=self.device)
        n_agents, n_actions = payoff.dim(), payoff.shape[0]
        self.steps = int(cfg.steps)
        self.spec = EnvSpec(n_agents, n_actions, 1, 1, self.steps, _agent_ids(n_agents))
        self.flat = payoff.flatten()
        self.t = torch.zeros(n_envs, dtype=torch.long, device=self.device)
        self.strides = torch.tensor([n_actions ** (n_agents - 1 - i) for i in range(n_agents)], device=self.device)
        self.done = torch.zeros(n_envs, dtype=torch.bool, device=self.device)
        self._obs = torch.ones(n_envs, n_agents, 1, device=self.device)
        self._state = torch.ones(n_envs, 1, device=self.device)
        self._avail = torch.ones(n_envs, n_agents, n_actions, dtype=torch.bool, device=self.device)

    @staticmethod
    def payoff_of(cfg: Any) -> Any:
        return cfg.payoff

    @classmethod
    def check_config(cls, cfg: Any) -> list[str]:
        payoff = cls.payoff_of(cfg)
        errs = _check_steps(cfg)
        if _payoff_shape(payoff) is None:
            errs.append(
                f"env.payoff={_plain(payoff)} is invalid: must be nested lists forming an "
                "n_actions x ... x n_actions tensor (one level per agent, n_actions >= 2)"
            )
        return errs

    def _observe(self) -> Observation:
        return Observation(self._obs, self._state, self._avail)

    def reset(self) -> Observation:
        self.done.zero_()
        self.t.zero_()
        return self._observe()

    def step(self, actions: torch.Tensor) -> StepResult:
        reward = self.flat[(actions * self.strides).sum(-1)].masked_fill(self.done, 0.0)
        self.t += 1
        self.done = self.t >= self.steps
        return StepResult(self._observe(), reward, self.done.clone(), torch.zeros_like(self.done))

    def q_points(self) -> list[QPoint]:
        n, a = self.spec.n_agents, self.spec.n_actions
        return [QPoint("state", self._obs[0], self._state[0], torch.ones(n, a, dtype=torch.bool, device=self.device))]


def _check_steps(cfg: Any) -> list[str]:
    if cfg.steps < 1:
        return [f"env.steps={cfg.steps} is invalid: must be >= 1"]
    return []


@dataclass
class ClimbingConfig(RepeatedGameConfig):
    t_max: int = 10_000
    test_interval: int = 1_000
    log_interval: int = 1_000


@ENVS.register("climbing", config=ClimbingConfig)
class ClimbingGame(MatrixGame):
    """The climbing game: optimum 11 at (0, 0), guarded by -30 miscoordination penalties."""

    PAYOFF = [[11.0, -30.0, 0.0], [-30.0, 7.0, 6.0], [0.0, 0.0, 5.0]]

    @staticmethod
    def payoff_of(cfg: Any) -> Any:
        return ClimbingGame.PAYOFF


@dataclass
class PenaltyConfig(RepeatedGameConfig):
    k: float = -100.0
    """Penalty for miscoordinating between the two optimal joint actions (k <= 0)."""
    t_max: int = 10_000
    test_interval: int = 1_000
    log_interval: int = 1_000


@ENVS.register("penalty", config=PenaltyConfig)
class PenaltyGame(MatrixGame):
    """The penalty game [[10,0,k],[0,2,0],[k,0,10]]: two optima, k for mixing them up."""

    @staticmethod
    def payoff_of(cfg: Any) -> Any:
        k = float(cfg.k)
        return [[10.0, 0.0, k], [0.0, 2.0, 0.0], [k, 0.0, 10.0]]

    @classmethod
    def check_config(cls, cfg: Any) -> list[str]:
        errs = _check_steps(cfg)
        if cfg.k > 0:
            errs.append(f"env.k={cfg.k} is invalid: the penalty must be <= 0")
        return errs
