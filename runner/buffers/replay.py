"""Uniform replay of whole episodes from a preallocated ring of episode-major tensors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import MISSING

from runner.buffers.episode import EpisodeBatch, FieldSpec
from runner.contracts import OFF_POLICY, SEQUENCES, Buffer
from runner.registry import BUFFERS


def check_storage_config(cfg: Any) -> list[str]:
    """The keys every buffer has: its capacity and where it stores."""
    errs = []
    if cfg.buffer_size < 1:
        errs.append(f"buffer.buffer_size={cfg.buffer_size} is invalid: must be >= 1")
    if cfg.device not in ("auto", "cpu"):
        errs.append(f"buffer.device={cfg.device!r} is invalid: must be auto or cpu")
    return errs


@dataclass
class EpisodeReplayConfig:
    name: str = MISSING
    buffer_size: int = 5000
    """Capacity in episodes; the oldest are overwritten first."""
    device: str = "auto"
    """Where episodes are stored: auto (the learner's device) or cpu (saves GPU memory)."""


@BUFFERS.register("episode_replay", config=EpisodeReplayConfig)
class EpisodeReplayBuffer(Buffer):
    provides = frozenset({OFF_POLICY.name, SEQUENCES.name})

    def __init__(self, cfg: EpisodeReplayConfig, scheme: dict[str, FieldSpec], max_t: int, device: torch.device) -> None:
        self.capacity = cfg.buffer_size
        self.storage = EpisodeBatch.empty(scheme, self.capacity, max_t, device)
        self.pos = 0
        self.size = 0

    @staticmethod
    def check_config(cfg: Any) -> list[str]:
        return check_storage_config(cfg)

    def insert(self, batch: EpisodeBatch) -> None:
        n = batch.batch_size
        idx = (torch.arange(n) + self.pos) % self.capacity
        idx = idx.to(self.storage.device)
        for key, v in batch.data.items():
            self.storage.data[key][idx] = v.to(self.storage.device)
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def can_sample(self, n: int) -> bool:
        return self.size >= n

    def sample(self, n: int) -> EpisodeBatch:
        idx = torch.randperm(self.size)[:n].to(self.storage.device)
        max_t = int(self.storage.data["filled"][idx].any(0).sum().item())
        return self.storage.select(idx, max_t=max_t)

    def state_dict(self) -> dict[str, Any]:
        return {"pos": self.pos, "size": self.size, "data": {k: v[: self.size].cpu() for k, v in self.storage.data.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pos, self.size = state["pos"], state["size"]
        for k, v in state["data"].items():
            self.storage.data[k][: self.size] = v.to(self.storage.device)
