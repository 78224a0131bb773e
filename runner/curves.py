"""Learning curves of runs, as the report and the benchmark comparison both read them (pure: numpy only)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Points = list[tuple[int, float]]


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
