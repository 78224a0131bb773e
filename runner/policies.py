"""Scripted policies for fixed agent groups (``groups.<name>.policy: {_target_: ...}``).

A scripted policy is any callable built by Hydra's ``instantiate`` from the policy node (its
other keys are constructor arguments) and called once per step for the group's agents::

    policy(obs, avail, t) -> actions

- ``obs``: [B, n, obs_dim] float, the group's observations (its own size, no padding);
- ``avail``: [B, n, n_actions] bool, the group's available actions;
- ``t``: the step of the episode (0 at reset);
- returns integer actions [B, n], each available.

A class that needs to know when a batch of episodes starts subclasses :class:`ScriptedPolicy`
and overrides ``reset(batch_size)``; a plain callable is wrapped in one. Scripted policies run in
the main process under ``torch.no_grad()`` and never learn.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


class ScriptedPolicy:
    """The contract of a scripted policy: ``__call__(obs, avail, t) -> actions`` and
    ``reset(batch_size)`` (a no-op by default)."""

    def __call__(self, obs: torch.Tensor, avail: torch.Tensor, t: int) -> Any:
        raise NotImplementedError

    def reset(self, batch_size: int) -> None:
        """A new batch of ``batch_size`` episodes starts."""

    @staticmethod
    def wrap(policy: Any) -> ScriptedPolicy:
        """``policy`` itself when it is a ScriptedPolicy, else a ScriptedPolicy that calls it."""
        return policy if isinstance(policy, ScriptedPolicy) else _CallablePolicy(policy)


class _CallablePolicy(ScriptedPolicy):
    def __init__(self, fn: Callable[[torch.Tensor, torch.Tensor, int], Any]) -> None:
        self.fn = fn

    def __call__(self, obs: torch.Tensor, avail: torch.Tensor, t: int) -> Any:
        return self.fn(obs, avail, t)


class ConstantAction(ScriptedPolicy):
    """Always the same action (e.g. a teammate that never moves), where it is available; otherwise
    the first available action."""

    def __init__(self, action: int = 0) -> None:
        if action < 0:
            raise ValueError(f"ConstantAction(action={action}): the action must be >= 0")
        self.action = action

    def __call__(self, obs: torch.Tensor, avail: torch.Tensor, t: int) -> torch.Tensor:
        if self.action >= avail.shape[-1]:
            raise ValueError(f"ConstantAction(action={self.action}): the group has only {avail.shape[-1]} actions")
        first = avail.long().argmax(-1)
        return torch.where(avail[..., self.action], torch.full_like(first, self.action), first)


class Cycle(ScriptedPolicy):
    """Actions 0, 1, ..., k-1, 0, ... by step of the episode (where available; else the first
    available action): a deterministic but non-constant teammate."""

    def __init__(self, period: int | None = None) -> None:
        self.period = period

    def __call__(self, obs: torch.Tensor, avail: torch.Tensor, t: int) -> torch.Tensor:
        k = self.period or avail.shape[-1]
        a = t % min(k, avail.shape[-1])
        first = avail.long().argmax(-1)
        return torch.where(avail[..., a], torch.full_like(first, a), first)
