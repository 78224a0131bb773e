"""Exploration schedules, a pure function of t_env (so nothing to checkpoint)."""

from __future__ import annotations

import math
from enum import Enum


class EpsilonSchedule(str, Enum):
    """``controller.epsilon_schedule``: how epsilon decays from epsilon_start to epsilon_finish.
    A str, so ``kind == "linear"`` holds; the config value is its name (Hydra rejects any other)."""

    linear = "linear"
    exp = "exp"


def epsilon_at(t_env: int, start: float, finish: float, anneal_time: int, kind: str) -> float:
    """Epsilon after t_env steps: ``linear`` or ``exp`` decay from start to finish over anneal_time."""
    if anneal_time <= 0 or t_env >= anneal_time:
        return finish
    frac = t_env / anneal_time
    if kind == "linear":
        return start + frac * (finish - start)
    if kind == "exp":
        if start <= 0 or finish <= 0:
            return finish
        return start * math.exp(frac * math.log(finish / start))
    raise ValueError(f"unknown epsilon schedule {kind!r}: use linear or exp")
