"""The fan-out the experiment talks to; the logger interface itself is :class:`runner.contracts.Logger`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runner.contracts import Logger as Logger  # re-exported: loggers subclass it from here too
from runner.contracts import RunInfo as RunInfo


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
