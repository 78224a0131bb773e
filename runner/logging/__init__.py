"""Loggers listen; they never drive. One narrow interface: ``log_stat(key, value, t_env)``."""

from runner.logging.base import Logger, Loggers, RunInfo

__all__ = ["Logger", "Loggers", "RunInfo"]
