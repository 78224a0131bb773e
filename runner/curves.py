"""Learning curves of runs, as the report and the benchmark comparison both read them (numpy), and
drawn: the learning curve of one run, written at the end of training, and any metrics of runs
(matplotlib, headless, imported only to draw)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

Points = list[tuple[int, float]]
T = TypeVar("T")


@dataclass
class RunSeries:
    """One run's history of the metric, sorted by step, one value per step."""

    run_id: str
    run_name: str
    env: str
    group: str
    seed: str
    points: Points
    start_time: int = 0  # ms since the epoch (MLflow's); which run of a repeated seed is the latest


def align_curves(series: Sequence[Points]) -> tuple[list[int], np.ndarray]:
    """Put runs on a common grid of steps: the sorted union of the runs' logged steps from the largest
    of their first steps up to the smallest of their last steps (where every run has a value); the
    value of a run at a grid step is its last value logged at or before that step. Returns the grid
    and a (runs x grid) matrix; an empty grid when the runs' step ranges do not overlap."""
    if not series:
        return [], np.empty((0, 0))
    start = max(pts[0][0] for pts in series)
    end = min(pts[-1][0] for pts in series)
    grid = sorted({step for pts in series for step, _ in pts if start <= step <= end})
    matrix = np.empty((len(series), len(grid)))
    for i, pts in enumerate(series):
        steps = np.array([s for s, _ in pts])
        values = np.array([v for _, v in pts])
        matrix[i] = values[np.searchsorted(steps, grid, side="right") - 1]
    return grid, matrix


def fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.0f}" if abs(x) >= 1e5 else f"{x:.4g}"


def latest_per_seed(runs: Sequence[T], key: Callable[[T], Hashable | None], start: Callable[[T], int]
                    ) -> tuple[list[T], list[list[T]]]:
    """Runs with the same ``key`` (env, group, seed) are repeats of one experiment, not independent
    samples: of each such set only the latest (largest ``start``; on a tie, the last given) is kept.
    Runs whose key is None (no seed tag) are all kept. Returns the kept runs in the given order and
    each repeated set, oldest first (its last run is the one kept)."""
    by_key: dict[Hashable, list[int]] = defaultdict(list)
    for i, r in enumerate(runs):
        k = key(r)
        if k is not None:
            by_key[k].append(i)
    dropped: set[int] = set()
    repeats = []
    for idx in by_key.values():
        if len(idx) > 1:
            ordered = sorted(idx, key=lambda i: (start(runs[i]), i))
            dropped.update(ordered[:-1])
            repeats.append([runs[i] for i in ordered])
    return [r for i, r in enumerate(runs) if i not in dropped], repeats


def learning_curve(curves: dict[str, list[list[float]]], title: str, path: Path) -> Path:
    series = {k: curves[k] for k in ("return_mean", "test_return_mean") if curves.get(k)}
    return metrics_figure(series, title, "t_env", "episode return", path, styles={"test_return_mean": "-o"})


def metrics_figure(
    series: dict[str, Any], title: str, xlabel: str, ylabel: str, path: Path, styles: dict[str, str] | None = None
) -> Path:
    """One line per named series of (step, value) points (``styles``: matplotlib format per name, default "-")."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for name, pts in series.items():
        ax.plot([p[0] for p in pts], [p[1] for p in pts], (styles or {}).get(name, "-"), ms=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
