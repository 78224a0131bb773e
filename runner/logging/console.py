"""Console backend (rich): a live progress bar and a compact table of recent stats."""

from __future__ import annotations

import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from runner.logging.base import Logger, RunInfo
from runner.registry import LOGGERS

console = Console(stderr=True)


@dataclass
class ConsoleLoggerConfig:
    name: str = MISSING
    print_stats: bool = True
    """Print recent stats at every log interval."""
    hide: list[str] = field(default_factory=lambda: [r"_std(_|$)", r"_z\d+$", r"^test_ep_length_mean_"])
    """Regexes of stat keys not to print (they still go to the other loggers)."""


class ProgressDisplay:
    """The live bar: t_env / t_max, episodes, latest returns, ETA. A no-op when disabled."""

    def __init__(self, total: int, start: int, enabled: bool) -> None:
        self.enabled = enabled and console.is_terminal
        self.progress = Progress(
            TextColumn("[bold blue]train"),
            BarColumn(),
            TextColumn("t_env {task.completed:,.0f}/{task.total:,.0f}"),
            TextColumn("ep {task.fields[episode]:,}"),
            TextColumn("return {task.fields[ret]}"),
            TextColumn("test {task.fields[test]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            disable=not self.enabled,
        )
        self.task = self.progress.add_task("train", total=total, completed=start, episode=0, ret="-", test="-")

    def __enter__(self) -> ProgressDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def update(self, t_env: int, episode: int, ret: float | None = None, test: float | None = None) -> None:
        fields: dict[str, Any] = {"completed": t_env, "episode": episode}
        if ret is not None:
            fields["ret"] = f"{ret:.3f}"
        if test is not None:
            fields["test"] = f"{test:.3f}"
        self.progress.update(self.task, **fields)


@LOGGERS.register("console", config=ConsoleLoggerConfig)
class ConsoleLogger(Logger):
    """Prints the latest value of every key logged since the last print, at the end of each log round."""

    def __init__(self, cfg: ConsoleLoggerConfig) -> None:
        self.cfg = cfg
        self._hide = [re.compile(p) for p in cfg.hide]
        self.latest: dict[str, tuple[int, float]] = {}
        self._since_print: dict[str, list[float]] = defaultdict(list)
        self._last_print_t = -1

    def start(self, info: RunInfo) -> None:
        console.print(f"[bold]hymarl[/] run [cyan]{info.run_name}[/] -> {info.run_dir}")

    def log_stat(self, key: str, value: float, t_env: int) -> None:
        self.latest[key] = (t_env, value)
        self._since_print[key].append(value)

    def end_round(self, t_env: int) -> None:
        if self.cfg.print_stats and t_env != self._last_print_t:
            self._print(t_env)

    def _print(self, t_env: int) -> None:
        self._last_print_t = t_env
        keys = sorted(k for k in self._since_print if k != "episode" and not any(p.search(k) for p in self._hide))
        if not keys:
            return
        cells = [f"{k}: {self._since_print[k][-1]:.4g}" for k in keys]
        ep = self.latest.get("episode", (0, 0))[1]
        line = f"t_env {t_env:>9,} | episode {int(ep):>7,} | " + " | ".join(cells)
        if console.is_terminal:
            console.print(line, highlight=False)
        else:
            print(line, file=sys.stderr, flush=True)
        self._since_print.clear()


def summary_table(title: str, rows: dict[str, Any]) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for k, v in rows.items():
        table.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    return table


def q_table(label: str, values: list[list[float]]) -> Table:
    """A 2-agent joint table: rows agent 1's action, columns agent 2's."""
    table = Table(title=label)
    table.add_column("a1 \\ a2", style="bold")
    for j in range(len(values[0])):
        table.add_column(str(j), justify="right")
    for i, row in enumerate(values):
        table.add_row(str(i), *[f"{v:.2f}" for v in row])
    return table
