"""Uniform replay of single transitions (``buffer=transition_replay``), as DDPG-style learners use.

Every filled step t of an inserted episode becomes one entry, stored as a two-slot episode so that a
sample is an ordinary :class:`~runner.buffers.episode.EpisodeBatch` of [n, 2]: slot 0 holds all of
step t (observation, state, available actions, actions, reward, terminated; ``filled`` True), slot 1
what followed it (observation, state, available actions and the actions taken at t+1, zeros after an
episode's last step; reward and terminated 0, ``filled`` False), the bootstrap slot of a one-step
episode. Per-episode fields are copied into every transition of their episode.

The entries live in a preallocated ring of ``buffer_size`` transitions (the oldest are overwritten
first). It provides off-policy data but not ``sequences``: a recurrent agent needs whole episodes
(``buffer=episode_replay``), and the capability check refuses the combination before a run starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import MISSING

from runner.buffers.episode import EpisodeBatch, FieldSpec
from runner.buffers.replay import check_storage_config
from runner.contracts import OFF_POLICY, Buffer
from runner.registry import BUFFERS

NOT_CARRIED = ("reward", "terminated", "filled")  # zero in slot 1: nothing happened there yet


@dataclass
class TransitionReplayConfig:
    name: str = MISSING
    buffer_size: int = 100_000
    """Capacity in transitions (env steps of all agents); the oldest are overwritten first."""
    device: str = "auto"
    """Where transitions are stored: auto (the learner's device) or cpu (saves GPU memory)."""


@BUFFERS.register("transition_replay", config=TransitionReplayConfig)
class TransitionReplayBuffer(Buffer):
    provides = frozenset({OFF_POLICY.name})

    @classmethod
    def slots_per_entry(cls, max_t: int) -> int:
        return 2

    def __init__(self, cfg: TransitionReplayConfig, scheme: dict[str, FieldSpec], max_t: int, device: torch.device) -> None:
        self.capacity = cfg.buffer_size
        self.scheme = scheme
        self.storage = EpisodeBatch.empty(scheme, self.capacity, 1, device)
        self.pos = 0
        self.size = 0

    @staticmethod
    def check_config(cfg: Any) -> list[str]:
        return check_storage_config(cfg)

    @staticmethod
    def transitions(batch: EpisodeBatch) -> dict[str, torch.Tensor]:
        """Every filled step of ``batch`` as a two-slot entry: field -> [M, 2, ...] (per-episode fields
        [M, ...]), in episode-major, then time order."""
        ep, t = batch["filled"].nonzero(as_tuple=True)
        out = {}
        for key, v in batch.data.items():
            if batch.scheme[key].episode_const:
                out[key] = v[ep]
                continue
            nxt = v[ep, t + 1]
            if key in NOT_CARRIED:
                nxt = torch.zeros_like(nxt)
            out[key] = torch.stack([v[ep, t], nxt], 1)
        return out

    def insert(self, batch: EpisodeBatch) -> None:
        entries = self.transitions(batch)
        n = entries["filled"].shape[0]
        if n == 0:
            return
        if n > self.capacity:  # more than fits: the newest capacity transitions
            entries = {k: v[n - self.capacity:] for k, v in entries.items()}
            self.pos = (self.pos + n - self.capacity) % self.capacity
            n = self.capacity
        idx = ((torch.arange(n) + self.pos) % self.capacity).to(self.storage.device)
        for key, v in entries.items():
            self.storage.data[key][idx] = v.to(self.storage.device)
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def can_sample(self, n: int) -> bool:
        return self.size >= n

    def sample(self, n: int) -> EpisodeBatch:
        """n distinct transitions, uniformly: an EpisodeBatch [n, 2]."""
        idx = torch.randperm(self.size)[:n].to(self.storage.device)
        return self.storage.select(idx)

    def state_dict(self) -> dict[str, Any]:
        return {"pos": self.pos, "size": self.size, "data": {k: v[: self.size].cpu() for k, v in self.storage.data.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pos, self.size = state["pos"], state["size"]
        for k, v in state["data"].items():
            self.storage.data[k][: self.size] = v.to(self.storage.device)
