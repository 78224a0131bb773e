"""The logger interface and the fan-out the experiment talks to."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class RunInfo:
    """What a logger needs to open a run."""

    config: dict[str, Any]  # resolved config
    tags: dict[str, str]
    run_name: str
    run_dir: Path
    hydra_dir: Path | None
    resume_state: dict[str, Any] = field(default_factory=dict)  # from a checkpoint: reopen that run
    t_env_start: int = 0


class Logger:
    """Base class: every method is optional for a backend."""

    def start(self, info: RunInfo) -> None:
        pass

    def log_stat(self, key: str, value: float, t_env: int) -> None:
        pass

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        pass

    def end_round(self, t_env: int) -> None:
        """Every stat of one log round at ``t_env`` has been logged (the train stats of a log
        interval): e.g. the console prints its line here. No key order is implied."""

    def flush(self) -> None:
        pass

    def state(self) -> dict[str, Any]:
        """What a checkpoint must keep to continue this run on resume."""
        return {}

    def describe(self) -> str | None:
        """One line for the end-of-run summary (e.g. where to find the run)."""
        return None

    def finish(self, status: str, error: str | None = None) -> None:
        """status: FINISHED, FAILED or KILLED."""


class Loggers(Logger):
    def __init__(self, loggers: list[Logger]) -> None:
        self.loggers = loggers

    def start(self, info: RunInfo) -> None:
        for lg in self.loggers:
            lg.start(info)

    def log_stat(self, key: str, value: float, t_env: int) -> None:
        for lg in self.loggers:
            lg.log_stat(key, value, t_env)

    def log_stats(self, stats: dict[str, float], t_env: int) -> None:
        for k, v in stats.items():
            self.log_stat(k, v, t_env)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        for lg in self.loggers:
            lg.log_artifact(path, artifact_path)

    def end_round(self, t_env: int) -> None:
        for lg in self.loggers:
            lg.end_round(t_env)

    def flush(self) -> None:
        for lg in self.loggers:
            lg.flush()

    def state(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for lg in self.loggers:
            out.update(lg.state())
        return out

    def describe(self) -> list[str]:  # type: ignore[override]
        return [d for lg in self.loggers if (d := lg.describe())]

    def finish(self, status: str, error: str | None = None) -> None:
        for lg in self.loggers:
            try:
                lg.finish(status, error)
            except Exception as exc:  # a logger failing at the end must not hide the run's own outcome
                print(f"warning: logger {type(lg).__name__} failed to finish: {exc}")
