"""A logger that sends the process a real signal at a given t_env (what Ctrl-C or ``kill`` would
do), and the helpers of the resume-equality tests that use it.

Registered as ``_interrupt_at`` once: import it as ``tests.fakes.interrupt`` only."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from mlflow.tracking import MlflowClient
from omegaconf import open_dict

from runner.experiment import run
from runner.logging.base import Logger
from runner.registry import LOGGERS
from tests.conftest import compose


@LOGGERS.register("_interrupt_at")
class InterruptAt(Logger):
    """Sends the process a real signal once t_env reaches `at`."""

    def __init__(self, cfg: dict) -> None:
        self.at, self.signum, self.sent = cfg["at"], cfg.get("signum", int(signal.SIGINT)), False

    def log_stat(self, key: str, value: float, t_env: int) -> None:
        if t_env >= self.at and not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.signum)


def run_until(run_dir: Path, *overrides: str, interrupt_at: int | None = None, signum: int = signal.SIGINT):
    """A run in-process; with `interrupt_at`, interrupted by a real signal at that t_env."""
    cfg = compose(*overrides)
    if interrupt_at is not None:
        with open_dict(cfg):
            cfg.logger["_interrupt_at"] = {"at": interrupt_at, "signum": int(signum)}
    return run(cfg, hydra_dir=run_dir)


def metrics(client: MlflowClient, run_id: str) -> dict[str, list[tuple[int, float]]]:
    """Every metric of a run: its (step, value) history."""
    run_ = client.get_run(run_id)
    return {k: sorted((m.step, m.value) for m in client.get_metric_history(run_id, k)) for k in run_.data.metrics}
