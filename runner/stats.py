"""Aggregate a metric over runs in MLflow: ``python -m runner.stats``.

For every group of runs (by a tag, e.g. algo), the median, interquartile range and mean of a
metric at given t_env steps (the last value logged at or before each step), across seeds::

    python -m runner.stats --experiment mstep-paper --metric test_return_mean --at 50000 100000

prints a markdown table. Reads the store of $MLFLOW_TRACKING_URI (default outputs/mlflow.db).
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from typing import Any


def value_at(history: list[Any], step: int) -> float | None:
    """The last value logged at or before `step`."""
    before = [m for m in history if m.step <= step]
    return max(before, key=lambda m: (m.step, m.timestamp)).value if before else None


def quartiles(xs: list[float]) -> tuple[float, float, float]:
    if len(xs) == 1:
        return xs[0], xs[0], xs[0]
    q1, med, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return q1, med, q3


def table(client: Any, experiment: str, metric: str, steps: list[int], group_by: str, status: str) -> str:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise SystemExit(f"no MLflow experiment named {experiment!r}")
    runs = client.search_runs([exp.experiment_id], filter_string=f"attributes.status = '{status}'", max_results=5000)
    groups: dict[str, list[Any]] = defaultdict(list)
    for r in runs:
        groups[r.data.tags.get(group_by, "?")].append(r)
    lines = [
        f"| {group_by} | seeds | " + " | ".join(f"{metric} at {s:,}: median [IQR] (mean)" for s in steps) + " | wall time per run (s) |",
        "|---|---:|" + "---|" * len(steps) + "---:|",
    ]
    for name in sorted(groups):
        cells = []
        for s in steps:
            vals = [v for r in groups[name] if (v := value_at(client.get_metric_history(r.info.run_id, metric), s)) is not None]
            if vals:
                q1, med, q3 = quartiles(sorted(vals))
                cells.append(f"{med:.2f} [{q1:.2f}, {q3:.2f}] ({statistics.mean(vals):.2f})")
            else:
                cells.append("-")
        walls = [(r.info.end_time - r.info.start_time) / 1000 for r in groups[name] if r.info.end_time]
        wall = f"{statistics.median(walls):.0f}" if walls else "-"
        lines.append(f"| {name} | {len(groups[name])} | " + " | ".join(cells) + f" | {wall} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m runner.stats", description=__doc__.split("\n")[0])
    p.add_argument("--experiment", default="hymarl", help="MLflow experiment name")
    p.add_argument("--metric", default="test_return_mean")
    p.add_argument("--at", type=int, nargs="+", required=True, help="t_env steps")
    p.add_argument("--group-by", default="algo", help="tag to group runs by")
    p.add_argument("--status", default="FINISHED", help="only runs with this status")
    args = p.parse_args(argv)
    from mlflow.tracking import MlflowClient

    from runner.tracking import default_tracking_uri

    print(table(MlflowClient(default_tracking_uri()), args.experiment, args.metric, args.at, args.group_by, args.status))


if __name__ == "__main__":
    main()
