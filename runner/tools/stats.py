"""Aggregate a metric over runs in MLflow: ``python -m runner.tools stats``.

For every group of runs (by a tag, e.g. algo), the median, interquartile range and mean of a
metric at given t_env steps (the last value logged at or before each step), across seeds::

    python -m runner.tools stats --experiment mstep-paper --metric test_return_mean --at 50000 100000

prints a markdown table. Reads the store of ``--tracking-uri`` (default $MLFLOW_TRACKING_URI, else
outputs/mlflow.db); a SQLite file that does not exist is refused (exit code 2), not created.

Runs of a group that share an env and a seed (tags ``env``, ``seed``) are repeats, not independent
samples: only the latest of them (by start time) is counted, the ``seeds`` column counts distinct
seeds ("1 (3 runs)"), and a warning line on stderr names the runs left out.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from typing import Any

from runner import curves


def value_at(history: list[Any], step: int) -> float | None:
    """The last value logged at or before `step`."""
    before = [m for m in history if m.step <= step]
    return max(before, key=lambda m: (m.step, m.timestamp)).value if before else None


def quartiles(xs: list[float]) -> tuple[float, float, float]:
    if len(xs) == 1:
        return xs[0], xs[0], xs[0]
    q1, med, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return q1, med, q3


def latest_per_seed(runs: list[Any], group: str, group_by: str) -> tuple[list[Any], int]:
    """Of the runs that share an env and a seed, the latest (by start time); runs without a seed tag
    are all kept (:func:`runner.curves.latest_per_seed`, the report's rule). Prints a warning line per
    repeated seed. Returns the kept runs and how many were left out."""
    kept, sets = curves.latest_per_seed(
        runs, lambda r: None if r.data.tags.get("seed") is None else (r.data.tags.get("env", "?"), r.data.tags["seed"]),
        lambda r: r.info.start_time or 0)
    for rs in sorted(sets, key=lambda rs: (rs[-1].data.tags.get("env", "?"), rs[-1].data.tags["seed"])):
        env, seed, last = rs[-1].data.tags.get("env", "?"), rs[-1].data.tags["seed"], rs[-1]
        names = ", ".join(f"{r.info.run_name} ({r.info.run_id[:8]})" for r in rs[:-1])
        print(f"warning: {group_by}={group} on {env}: {len(rs)} runs with seed {seed} are not independent "
              f"samples; only the latest, {last.info.run_name} ({last.info.run_id[:8]}), is counted; "
              f"left out: {names}", file=sys.stderr)
    return kept, sum(len(rs) - 1 for rs in sets)


def table(client: Any, experiment: str, metric: str, steps: list[int], group_by: str, status: str) -> str:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise SystemExit(f"no MLflow experiment named {experiment!r}")
    runs = client.search_runs([exp.experiment_id], filter_string=f"attributes.status = '{status}'", max_results=5000)
    groups: dict[str, list[Any]] = defaultdict(list)
    for r in runs:
        groups[r.data.tags.get(group_by, "?")].append(r)
    repeated: dict[str, int] = {}
    for name in list(groups):
        groups[name], left_out = latest_per_seed(groups[name], name, group_by)
        repeated[name] = left_out
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
        n = len(groups[name])
        seeds = f"{n} ({n + repeated[name]} runs)" if repeated[name] else str(n)
        lines.append(f"| {name} | {seeds} | " + " | ".join(cells) + f" | {wall} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m runner.tools stats", description=__doc__.split("\n")[0])
    p.add_argument("--experiment", default="hymarl", help="MLflow experiment name")
    p.add_argument("--metric", default="test_return_mean")
    p.add_argument("--at", type=int, nargs="+", required=True, help="t_env steps")
    p.add_argument("--group-by", default="algo", help="tag to group runs by")
    p.add_argument("--status", default="FINISHED", help="only runs with this status")
    p.add_argument("--tracking-uri", help="the MLflow store (default: $MLFLOW_TRACKING_URI, else "
                   "sqlite:///outputs/mlflow.db)")
    args = p.parse_args(argv)
    from runner.tools import open_store

    client = open_store(args.tracking_uri)
    if client is None:
        raise SystemExit(2)
    print(table(client, args.experiment, args.metric, args.at, args.group_by, args.status))
