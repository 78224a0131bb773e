"""Learning curves of runs, as the report and the benchmark comparison both read them (pure: numpy only)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TypeVar

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
