"""On-policy storage: the episodes of the latest rollouts, each handed to the learner once.

The on-policy learners (IPPO, MAPPO) train on episodes that the current policy collected and then
discard them (EPyMARL: ``buffer_size = batch_size = batch_size_run``). ``insert`` appends the
episodes of a rollout; ``can_sample(n)`` is true once ``n`` episodes have arrived since the last
sample; ``sample(n)`` returns the newest ``n`` of them, in the order they were collected, and
marks everything stored as used. Checkpoints keep the episodes not yet trained on, so a resume
continues exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from runner.buffers.episode import EpisodeBatch, FieldSpec
from runner.buffers.replay import EpisodeReplayBuffer
from runner.contracts import ON_POLICY, SEQUENCES
from runner.registry import BUFFERS


@dataclass
class RolloutBufferConfig:
    name: str = "rollout"
    buffer_size: int = "${oc.select:learner.batch_size,10}"  # type: ignore[assignment]
    """Episodes kept: the learner's batch (the episodes of one update)."""
    device: str = "auto"
    """Where the episodes are stored: auto (the learner's device) or cpu."""


@BUFFERS.register("rollout", config=RolloutBufferConfig)
class RolloutBuffer(EpisodeReplayBuffer):
    """The episode ring of :class:`EpisodeReplayBuffer`, sampled once per episode, newest first."""

    provides = frozenset({ON_POLICY.name, SEQUENCES.name})

    def __init__(self, cfg: RolloutBufferConfig, scheme: dict[str, FieldSpec], max_t: int, device: torch.device) -> None:
        super().__init__(cfg, scheme, max_t, device)  # type: ignore[arg-type]
        self.fresh = 0  # episodes inserted since the last sample (at most capacity)

    def insert(self, batch: EpisodeBatch) -> None:
        super().insert(batch)
        self.fresh = min(self.fresh + batch.batch_size, self.capacity)

    def can_sample(self, n: int) -> bool:
        return self.fresh >= n

    def sample(self, n: int) -> EpisodeBatch:
        idx = ((torch.arange(n) + self.pos - n) % self.capacity).to(self.storage.device)  # the newest n, oldest first
        self.fresh = 0
        max_t = int(self.storage.data["filled"][idx].any(0).sum().item())
        return self.storage.select(idx, max_t=max_t)

    def state_dict(self) -> dict[str, Any]:
        idx = ((torch.arange(self.fresh) + self.pos - self.fresh) % self.capacity).to(self.storage.device)
        return {"pos": self.pos, "fresh": self.fresh, "data": {k: v[idx].cpu() for k, v in self.storage.data.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pos, self.fresh = state["pos"], state["fresh"]
        idx = ((torch.arange(self.fresh) + self.pos - self.fresh) % self.capacity).to(self.storage.device)
        for k, v in state["data"].items():
            self.storage.data[k][idx] = v.to(self.storage.device)
