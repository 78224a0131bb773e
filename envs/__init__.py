"""Environments: the batched env contract (:mod:`envs.base`) and the matrix games shipped with hymarl."""

from envs.base import EnvConfig, EnvSpec, Observation, QPoint, VecEnv

__all__ = ["EnvConfig", "EnvSpec", "Observation", "QPoint", "VecEnv"]
