"""Benchmarks: our runs beside a paper's published numbers.

A benchmark is a config (``conf/benchmark/<name>.yaml``: tasks x algorithms x seeds x budget, run as
one Hydra multirun into one MLflow parent run); its runs carry the tag ``benchmark=<name>``. The
published numbers ship as data in this package (``<paper>.yaml``: citation, the table and row of
every value, how the paper computes them). :func:`compare` computes ours as the paper defines them
and puts theirs beside:

* **maximum return**: the evaluation step at which the mean test return over seeds is highest; the
  mean and 95% confidence interval over seeds at that step (Papoudakis et al. 2021, Sec. 4);
* **average return**: each seed's mean test return over all its evaluations (t_env = 0 included),
  then the mean and 95% confidence interval of those over seeds.

Intervals are Student-t intervals of the mean over seeds (mean +- t_{0.975, n-1} * sd / sqrt(n));
with one seed there is none. A task's ``divide_by`` (MPE: the number of agents, as the paper
reports MPE returns per agent) divides our returns before they are compared.

    python -m runner.tools report --parent <sweep run id> --published papoudakis2021
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from runner.curves import RunSeries, align_curves, fmt

DATA_DIR = Path(__file__).resolve().parent
STATS = ("max_return", "average_return")
TABLE_OF = {"max_return": "max_returns", "average_return": "average_returns"}

# two-sided 95% quantiles of Student's t, t_{0.975, df}, df = 1..30 (beyond: the normal 1.96)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


class PublishedError(ValueError):
    """An unknown or malformed published-results file."""


def available() -> list[str]:
    return sorted(p.stem for p in DATA_DIR.glob("*.yaml"))


def load_published(name: str) -> dict[str, Any]:
    """The published numbers ``name`` (a file of this package, or a path to a yaml of the same form)."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else DATA_DIR / f"{name}.yaml"
    if not path.is_file():
        raise PublishedError(f"no published results {name!r}: available: {', '.join(available())}")
    data = yaml.safe_load(path.read_text())
    for key in ("name", "citation", "tables", "tasks"):
        if key not in data:
            raise PublishedError(f"{path}: missing key {key!r}")
    return data


def t_halfwidth(values: Sequence[float] | np.ndarray) -> float | None:
    """Half-width of the 95% Student-t confidence interval of the mean; None for fewer than 2 values."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n < 2:
        return None
    t = _T975[n - 2] if n - 1 <= len(_T975) else 1.96
    return float(t * x.std(ddof=1) / math.sqrt(n))


def paper_stats(runs: Sequence[RunSeries], divide_by: float = 1.0) -> dict[str, Any]:
    """Maximum and average return of one algorithm on one task over its seeds (module docstring)."""
    grid, matrix = align_curves([r.points for r in runs])
    if not grid:
        raise ValueError("the runs' evaluation steps do not overlap")
    m = matrix / divide_by
    means = m.mean(axis=0)
    best = int(np.argmax(means))  # the first step with the highest mean over seeds
    per_seed_avg = m.mean(axis=1)
    return {
        "seeds": len(runs),
        "evaluations": len(grid),
        "last_step": grid[-1],
        "max_return": {"mean": float(means[best]), "ci95": t_halfwidth(m[:, best]), "step": grid[best]},
        "average_return": {"mean": float(per_seed_avg.mean()), "ci95": t_halfwidth(per_seed_avg)},
    }


def published_value(pub: dict[str, Any], task: str, stat: str, algo: str) -> dict[str, Any] | None:
    """{"mean", "ci95"} of the paper's cell, or None where it is not in the data."""
    cell = (pub["tasks"].get(task) or {}).get(TABLE_OF[stat], {}).get(algo)
    if cell is None:
        return None
    mean, ci = cell if isinstance(cell, (list, tuple)) else (cell, None)
    return {"mean": float(mean), "ci95": None if ci is None else float(ci)}


def compare(series: Sequence[RunSeries], pub: dict[str, Any], benchmark: str | None = None) -> dict[str, Any]:
    """Ours (per task and algorithm) beside the published values: JSON-able."""
    by_task: dict[str, dict[str, list[RunSeries]]] = defaultdict(lambda: defaultdict(list))
    for s in series:
        by_task[s.env][s.group].append(s)
    protocol = pub.get("protocol", {})
    rows = []
    for task in sorted(by_task):
        meta = pub["tasks"].get(task)
        divide_by = float((meta or {}).get("divide_by", 1))
        for algo in sorted(by_task[task]):
            ours = paper_stats(by_task[task][algo], divide_by)
            row = {"task": task, "row": (meta or {}).get("row"), "algo": algo, "divide_by": divide_by, "ours": ours,
                   "published": {s: published_value(pub, task, s, algo) for s in STATS} if meta else None}
            t_max = protocol.get("t_max")
            row["shorter_budget"] = bool(t_max and ours["last_step"] < t_max)
            rows.append(row)
    return {
        "benchmark": benchmark,
        "published": pub["name"],
        "citation": pub["citation"],
        "tables": pub["tables"],
        "protocol": protocol,
        "unknown_tasks": sorted(t for t in by_task if t not in pub["tasks"]),
        "rows": rows,
    }


def _cell(v: dict[str, Any] | None) -> str:
    if v is None:
        return "not in the data"
    return fmt(v["mean"]) if v.get("ci95") is None else f"{fmt(v['mean'])} ± {fmt(v['ci95'])}"


def render_markdown(data: dict[str, Any]) -> str:
    t = data["tables"]
    proto = data["protocol"]
    out = [
        f"# Benchmark {data['benchmark'] or ''}: ours beside {data['published']}".replace("  ", " "),
        "",
        f"Published: {data['citation']}",
        f"- maximum return: {t['max_returns']['source']}",
        f"- average return: {t['average_returns']['source']}",
        "",
        "Ours: maximum return = the mean over seeds at the evaluation step where that mean is highest "
        "(step in brackets), average return = the mean over seeds of each seed's mean over all its "
        "evaluations; ± = half-width of the 95% Student-t interval over seeds.",
    ]
    if proto:
        out.append(f"Paper's protocol: {proto.get('seeds')} seeds, {proto.get('t_max', 0):,} steps, "
                   f"{proto.get('test_episodes')} test episodes every {proto.get('test_interval', 0):,} steps.")
    if any(r["shorter_budget"] for r in data["rows"]):
        out.append("**Rows marked * ran a shorter budget than the paper's**: compare with care.")
    if data["unknown_tasks"]:
        out.append(f"Tasks without published values in {data['published']}: {', '.join(data['unknown_tasks'])}.")
    out += ["", "| task | algo | seeds | steps | max return (ours) | max return (paper) | average return (ours) "
            "| average return (paper) |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in data["rows"]:
        o, p = r["ours"], r["published"] or {}
        task = r["task"] + (f" ({r['row']})" if r["row"] else "") + (f", ÷{r['divide_by']:g}" if r["divide_by"] != 1 else "")
        steps = f"{o['last_step']:,}" + ("*" if r["shorter_budget"] else "")
        mx = f"{_cell(o['max_return'])} (at {o['max_return']['step']:,})"
        out.append(f"| {task} | {r['algo']} | {o['seeds']} | {steps} | {mx} | {_cell(p.get('max_return'))} "
                   f"| {_cell(o['average_return'])} | {_cell(p.get('average_return'))} |")
    return "\n".join(out) + "\n"


def write(series: Sequence[RunSeries], pub: dict[str, Any], out_dir: Path, benchmark: str | None = None) -> Path:
    """benchmark.md and benchmark.json (``pub``: :func:`load_published`) in ``out_dir``; returns the
    path of benchmark.md."""
    data = compare(series, pub, benchmark)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "benchmark.json").write_text(json.dumps(data, indent=1) + "\n")
    md = out_dir / "benchmark.md"
    md.write_text(render_markdown(data))
    return md
