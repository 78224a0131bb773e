"""Episode-major storage: every field is a preallocated tensor [B, T+1, *shape].

A *scheme* declares the fields: the base scheme comes from the env spec and components add
their own (e.g. a per-episode latent) with ``episode_const=True`` fields of shape [B, *shape].
Index t holds what was observed at step t and what was done in it; index T_ep (one past the
last step) holds the observation that followed the final step, for bootstrapping.
``filled[b, t]`` marks the steps that really happened.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from envs.base import EnvSpec


@dataclass(frozen=True)
class FieldSpec:
    shape: tuple[int, ...]
    dtype: torch.dtype
    episode_const: bool = False


def action_dtype(n_actions: int) -> torch.dtype:
    return torch.uint8 if n_actions <= 256 else torch.int32


def base_scheme(spec: EnvSpec) -> dict[str, FieldSpec]:
    n, a = spec.n_agents, spec.n_actions
    return {
        "obs": FieldSpec((n, spec.obs_dim), torch.float32),
        "state": FieldSpec((spec.state_dim,), torch.float32),
        "avail_actions": FieldSpec((n, a), torch.bool),
        "actions": FieldSpec((n, a), torch.float32) if spec.continuous else FieldSpec((n,), action_dtype(a)),
        "reward": FieldSpec((), torch.float32),
        "terminated": FieldSpec((), torch.bool),
        "filled": FieldSpec((), torch.bool),
    }


class EpisodeBatch:
    """A batch of B episodes of up to max_t steps (plus one bootstrap slot)."""

    def __init__(self, scheme: dict[str, FieldSpec], data: dict[str, torch.Tensor]) -> None:
        self.scheme = scheme
        self.data = data

    @classmethod
    def empty(cls, scheme: dict[str, FieldSpec], batch_size: int, max_t: int, device: torch.device) -> EpisodeBatch:
        data = {}
        for key, f in scheme.items():
            lead = (batch_size,) if f.episode_const else (batch_size, max_t + 1)
            data[key] = torch.zeros(*lead, *f.shape, dtype=f.dtype, device=device)
        return cls(scheme, data)

    @property
    def batch_size(self) -> int:
        return self.data["filled"].shape[0]

    @property
    def max_t(self) -> int:
        return self.data["filled"].shape[1] - 1

    @property
    def device(self) -> torch.device:
        return self.data["filled"].device

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.data[key]

    def write(self, t: int, **values: torch.Tensor) -> None:
        for key, v in values.items():
            self.data[key][:, t] = v

    def select(self, idx: torch.Tensor, max_t: int | None = None) -> EpisodeBatch:
        """Episodes idx, time cut to max_t steps (+1 bootstrap slot)."""
        out = {}
        for key, v in self.data.items():
            v = v[idx]
            if max_t is not None and not self.scheme[key].episode_const:
                v = v[:, : max_t + 1]
            out[key] = v
        return EpisodeBatch(self.scheme, out)

    def to(self, device: torch.device) -> EpisodeBatch:
        return EpisodeBatch(self.scheme, {k: v.to(device, non_blocking=True) for k, v in self.data.items()})
