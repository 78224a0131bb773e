"""Aggregate report of MLflow runs: learning curves and a statistics table per env.

    python -m runner.tools report                               # FINISHED runs of experiment 'hymarl'
    python -m runner.tools report --experiment mstep-paper --threshold mstep=8 --threshold twostep=7.5
    python -m runner.tools report --parent <sweep run id>       # the children of one sweep, any experiment
    python -m runner.tools report --filter "params.lr = '0.0005'" --metric return_mean --out outputs/lr-report
    make report REPORT_ARGS="--parent <sweep run id>"

Selection: the runs of the experiment (with ``--parent``: only the children of that run, tag
``mlflow.parentRunId``, in any experiment) with the given status (``--status ALL``: any), ANDed with
``--filter`` (an MLflow search filter string). Sweep parents (tag ``mode=sweep``) and evaluation runs
(``mode=evaluate``) are left out, and so are runs that never logged the metric.

Runs are grouped per env (tag ``env``) and, within an env, per algo (the tag ``--group-by``); the
runs of a group are its seeds. Runs of a group that repeat a seed (tag ``seed``) are not independent
samples: of each seed only the latest run (by start time) enters the statistics, and the report and
a warning line name the runs left out (runs without a seed tag are all kept). Written to ``--out``
(default ``outputs/report``, with ``--parent`` ``outputs/report/<parent id>``):

* ``<env>.png``: mean learning curve of each group with a 95% bootstrap confidence band of the mean;
* ``report.md``, ``report.html`` (self-contained: figures embedded as base64 PNG), ``report.json``
  (every number, machine-readable): a table per env with, per group, the seeds, the mean and the
  IQM of the final values, a 95% bootstrap CI of the mean, and the median steps to a threshold.

With ``--parent`` the same files are also logged as artifacts of the parent run under ``report/``.
Statistics (all deterministic; repeated seeds: see :func:`one_run_per_seed`):

* final value of a run: the value logged at its last step (the latest one when a step was logged twice);
* IQM: see :func:`iqm`; CI: see :func:`bootstrap_ci` (percentile bootstrap, 2000 resamples, seed 0),
  over the distinct seeds of a group (none with a single seed);
* curves: see :func:`align_curves`;
* steps to threshold: see :func:`steps_to_threshold` and :func:`median_steps`; the threshold of an
  env is ``--threshold ENV=VALUE``, else 90% of the best final mean among the env's groups (for a
  negative best mean: best - 10% of |best|, so that it stays below the best).

mlflow and matplotlib are imported lazily: they cost seconds of start-up.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
import re
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from runner.curves import Points, RunSeries, align_curves, fmt, latest_per_seed
from runner.tracking.store import retry

N_BOOT = 2000
SEED = 0
LEVEL = 0.95
DEFAULT_FRACTION = 0.9
FILES = ("report.md", "report.html", "report.json", "benchmark.md", "benchmark.json")


class ReportError(ValueError):
    """Nothing to report (unknown experiment or parent, no matching runs): exit code 2 on the CLI."""


# --- statistics (pure) ------------------------------------------------------------------------------------


def history_points(history: Sequence[Any]) -> Points:
    """(step, value) pairs of an MLflow metric history, sorted by step; of a step logged more than
    once, the latest value (by timestamp, then by log order)."""
    latest: dict[int, tuple[int, int, float]] = {}
    for i, m in enumerate(history):
        step, key = int(m.step), (int(m.timestamp), i)
        if step not in latest or key >= latest[step][:2]:
            latest[step] = (*key, float(m.value))
    return [(step, latest[step][2]) for step in sorted(latest)]


def final_value(points: Points) -> float:
    """The value at the run's last logged step."""
    return points[-1][1]


def one_run_per_seed(series: Sequence[RunSeries]) -> tuple[list[RunSeries], list[dict[str, Any]]]:
    """Runs of one env and group that share a seed are repeats of the same experiment, not independent
    samples: only the latest of them (largest start time; on a tie, the last given) is kept for the
    statistics (:func:`runner.curves.latest_per_seed`). Runs without a seed tag (``?``) are all kept.
    Returns the kept runs (in the given order) and, per repeated seed,
    ``{env, group, seed, runs, kept: {run_id, run_name}, left_out: [...]}``."""
    kept, sets = latest_per_seed(series, lambda s: None if s.seed == "?" else (s.env, s.group, s.seed),
                                 lambda s: s.start_time)
    repeats = [{
        "env": rs[-1].env, "group": rs[-1].group, "seed": rs[-1].seed, "runs": len(rs),
        "kept": {"run_id": rs[-1].run_id, "run_name": rs[-1].run_name},
        "left_out": [{"run_id": r.run_id, "run_name": r.run_name} for r in rs[:-1]],
    } for rs in sets]
    repeats.sort(key=lambda r: (r["env"], r["group"], r["seed"]))
    return kept, repeats


def repeat_line(r: dict[str, Any]) -> str:
    """One line about a repeated seed (the report's notes and the CLI's warning)."""
    def name(run: dict[str, str]) -> str:
        return f"{run['run_name'] or '?'} ({run['run_id'][:8]})"

    return (f"{r['group']} on {r['env']}: {r['runs']} runs with seed {r['seed']} are not independent samples; "
            f"only the latest, {name(r['kept'])}, enters the statistics; left out: "
            + ", ".join(name(x) for x in r["left_out"]))


def iqm(values: Sequence[float]) -> float:
    """Interquartile mean: sort the n values, drop floor(n/4) values from each end, and average the
    rest (n=1..3: the plain mean; n=4: the mean of the middle 2; n=8: the mean of the middle 4;
    n=10: floor(10/4)=2 dropped from each end, the mean of the middle 6)."""
    xs = sorted(values)
    if not xs:
        raise ValueError("iqm of no values")
    k = len(xs) // 4
    return float(np.mean(xs[k : len(xs) - k]))


def bootstrap_band(
    matrix: np.ndarray, n_boot: int = N_BOOT, seed: int = SEED, level: float = LEVEL
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile-bootstrap confidence interval of the column means of ``matrix`` (rows = runs,
    columns = steps). The rows are resampled with replacement ``n_boot`` times (the same resamples
    for every column, drawn by ``numpy.random.default_rng(seed)``: deterministic); the interval is
    the (1-level)/2 and (1+level)/2 percentiles (numpy's linear interpolation) of the resampled means.
    A column whose values are all equal gets the point interval [mean, mean]."""
    m = np.asarray(matrix, dtype=float)
    if m.ndim != 2 or m.shape[0] == 0:
        raise ValueError("bootstrap of no values")
    n, cols = m.shape
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    weights = np.stack([np.bincount(row, minlength=n) for row in idx]) / n  # (n_boot, n)
    q = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    lo, hi = np.empty(cols), np.empty(cols)
    for start in range(0, cols, 256):  # bounded memory: n_boot x 256 means at a time
        block = weights @ m[:, start : start + 256]
        lo[start : start + 256], hi[start : start + 256] = np.percentile(block, q, axis=0)
    const = np.ptp(m, axis=0) == 0
    mean = m.mean(axis=0)
    lo[const], hi[const] = mean[const], mean[const]
    return lo, hi


def bootstrap_ci(
    values: Sequence[float], n_boot: int = N_BOOT, seed: int = SEED, level: float = LEVEL
) -> tuple[float, float]:
    """95% percentile-bootstrap confidence interval of the mean of ``values`` (see :func:`bootstrap_band`)."""
    lo, hi = bootstrap_band(np.asarray(values, dtype=float)[:, None], n_boot, seed, level)
    return float(lo[0]), float(hi[0])


def steps_to_threshold(points: Points, threshold: float) -> int | None:
    """The first logged step whose value is >= ``threshold``; None if the run never reaches it."""
    return next((step for step, value in points if value >= threshold), None)


def median_steps(steps: Sequence[int | None]) -> float | None:
    """Median of the steps to threshold over all n runs, an unreached run counting as infinity; None
    when the median itself is unreached (more than half, or with an even n half, never reached it)."""
    xs = [math.inf if s is None else float(s) for s in steps]
    if not xs:
        return None
    med = float(np.median(xs))
    return None if math.isinf(med) else med


def default_threshold(final_means: dict[str, float]) -> tuple[float, str]:
    """90% of the best final mean (best - 10% of |best| when it is negative) and where it came from."""
    best_group = max(final_means, key=lambda g: final_means[g])
    best = final_means[best_group]
    value = best - (1 - DEFAULT_FRACTION) * abs(best)
    return value, f"default: 90% of the best final mean ({fmt(best)}, {best_group})"


# --- the report's numbers (pure) --------------------------------------------------------------------------


def _none_if_inf(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def summarize_group(runs: Sequence[RunSeries], threshold: float) -> dict[str, Any]:
    """The numbers of one group of runs (one algo in one env)."""
    finals = [final_value(r.points) for r in runs]
    steps = [steps_to_threshold(r.points, threshold) for r in runs]
    ci95 = list(bootstrap_ci(finals)) if len(runs) > 1 else None  # no interval from one seed
    grid, matrix = align_curves([r.points for r in runs])
    curve: dict[str, list[Any]] = {"steps": grid, "mean": [], "ci_low": [], "ci_high": []}
    if grid:
        band_lo, band_hi = bootstrap_band(matrix)
        curve.update(mean=matrix.mean(axis=0).tolist(), ci_low=band_lo.tolist(), ci_high=band_hi.tolist())
    return {
        "seeds": len(runs),
        "runs": [
            {
                "run_id": r.run_id,
                "run_name": r.run_name,
                "seed": r.seed,
                "final_step": r.points[-1][0],
                "final_value": f,
                "steps_to_threshold": s,
            }
            for r, f, s in zip(runs, finals, steps)
        ],
        "final_mean": float(np.mean(finals)),
        "iqm": iqm(finals),
        "ci95": ci95,
        "final_steps": [min(r.points[-1][0] for r in runs), max(r.points[-1][0] for r in runs)],
        "reached": sum(s is not None for s in steps),
        "median_steps_to_threshold": _none_if_inf(median_steps(steps)),
        "curve": curve,
    }


def build_report(
    series: Sequence[RunSeries],
    metric: str,
    thresholds: dict[str, float] | None = None,
    group_by: str = "algo",
    title: str | None = None,
) -> dict[str, Any]:
    """All numbers of the report (JSON-able): per env, its threshold and a summary per group. Of a seed
    that a group has more than once, only the latest run counts (:func:`one_run_per_seed`)."""
    given = len(series)
    series, repeats = one_run_per_seed(series)
    by_env: dict[str, dict[str, list[RunSeries]]] = defaultdict(lambda: defaultdict(list))
    for s in series:
        by_env[s.env][s.group].append(s)
    thresholds = thresholds or {}
    envs: dict[str, Any] = {}
    for env in sorted(by_env):
        groups = by_env[env]
        if env in thresholds:
            threshold, source = float(thresholds[env]), "--threshold"
        else:
            threshold, source = default_threshold(
                {g: float(np.mean([final_value(r.points) for r in rs])) for g, rs in groups.items()}
            )
        envs[env] = {
            "threshold": threshold,
            "threshold_source": source,
            "figure": figure_name(env),
            "groups": {g: summarize_group(groups[g], threshold) for g in sorted(groups)},
        }
        for r in repeats:
            if r["env"] == env:
                envs[env]["groups"][r["group"]]["repeated_runs"] = (
                    envs[env]["groups"][r["group"]].get("repeated_runs", 0) + len(r["left_out"])
                )
    return {
        "title": title or f"{metric} report",
        "metric": metric,
        "group_by": group_by,
        "runs": given,
        "runs_used": len(series),
        "repeated_seeds": repeats,
        "bootstrap": {"resamples": N_BOOT, "seed": SEED, "level": LEVEL, "method": "percentile"},
        "unused_thresholds": sorted(set(thresholds) - set(envs)),
        "envs": envs,
    }


# --- rendering --------------------------------------------------------------------------------------------


def figure_name(env: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", env) + ".png"


def fmt_steps(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{int(x):,}" if float(x).is_integer() else f"{x:,.1f}"


def table_rows(env_data: dict[str, Any], group_by: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows (strings) of one env's table."""
    header = [
        group_by,
        "seeds",
        "final mean",
        "IQM",
        "95% CI of mean",
        "median steps to threshold",
        "reached",
        "final t_env",
    ]
    rows = []
    for g, d in env_data["groups"].items():
        a, b = d["final_steps"]
        repeated = d.get("repeated_runs", 0)
        rows.append(
            [
                g,
                f"{d['seeds']} ({d['seeds'] + repeated} runs)" if repeated else str(d["seeds"]),
                fmt(d["final_mean"]),
                fmt(d["iqm"]),
                "-" if d["ci95"] is None else f"[{fmt(d['ci95'][0])}, {fmt(d['ci95'][1])}]",
                fmt_steps(d["median_steps_to_threshold"]),
                f"{d['reached']}/{d['seeds']}",
                f"{a:,}" if a == b else f"{a:,}-{b:,}",
            ]
        )
    return header, rows


def threshold_line(env_data: dict[str, Any]) -> str:
    return f"threshold {fmt(env_data['threshold'])} ({env_data['threshold_source']})"


def notes(data: dict[str, Any]) -> str:
    b = data["bootstrap"]
    return (
        f"Final value: the value at a run's last logged step. IQM: mean of the sorted final values "
        f"without floor(n/4) from each end. CI: {b['level']:.0%} percentile bootstrap of the mean "
        f"({b['resamples']} resamples, seed {b['seed']}) over a group's seeds ('-' with one seed). Seeds: "
        f"distinct seeds; of a seed run more than once only the latest run counts. Steps to threshold: the "
        f"first logged t_env with a value >= the threshold; the median is over all seeds (unreached = "
        f"infinity, '-')."
    )


def runs_line(data: dict[str, Any]) -> str:
    line = f"{data['runs']} runs"
    left = data["runs"] - data.get("runs_used", data["runs"])
    if left:
        line += f" ({left} of them repeat a seed of their group and are left out of the statistics)"
    return line


def render_markdown(data: dict[str, Any]) -> str:
    out = [
        f"# {data['title']}",
        "",
        f"Metric `{data['metric']}`, {runs_line(data)}, grouped by `{data['group_by']}`.",
        "",
        notes(data),
        "",
    ]
    for env, d in data["envs"].items():
        header, rows = table_rows(d, data["group_by"])
        repeats = [f"- {repeat_line(r)}" for r in data.get("repeated_seeds", []) if r["env"] == env]
        out += [
            f"## {env}",
            "",
            f"{threshold_line(d)}.",
            "",
            f"![{env}]({d['figure']})",
            "",
            "| " + " | ".join(header) + " |",
            "|---|" + "---:|" * (len(header) - 1),
        ]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        out.append("")
        if repeats:
            out += ["Repeated seeds:", "", *repeats, ""]
    return "\n".join(out)


HTML_STYLE = """body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:.3em .6em}
td{text-align:right}td:first-child{text-align:left}img{max-width:100%}.note{color:#555}"""


def render_html(data: dict[str, Any], out_dir: Path) -> str:
    e = html.escape
    out = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(data['title'])}</title>"
        f"<style>{HTML_STYLE}</style></head><body>",
        f"<h1>{e(data['title'])}</h1>",
        f"<p>Metric <code>{e(data['metric'])}</code>, {e(runs_line(data))}, grouped by "
        f"<code>{e(data['group_by'])}</code>.</p>",
        f"<p class='note'>{e(notes(data))}</p>",
    ]
    for env, d in data["envs"].items():
        header, rows = table_rows(d, data["group_by"])
        out += [f"<h2>{e(env)}</h2>", f"<p>{e(threshold_line(d))}.</p>"]
        png = out_dir / d["figure"]
        if png.is_file():
            b64 = base64.b64encode(png.read_bytes()).decode("ascii")
            out.append(f"<img alt='{e(env)}' src='data:image/png;base64,{b64}'>")
        out.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
        out += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows]
        out.append("</table>")
        repeats = [repeat_line(r) for r in data.get("repeated_seeds", []) if r["env"] == env]
        if repeats:
            out.append("<p class='note'>Repeated seeds:</p><ul class='note'>"
                       + "".join(f"<li>{e(x)}</li>" for x in repeats) + "</ul>")
    out.append("</body></html>")
    return "\n".join(out)


def render_text(data: dict[str, Any]) -> str:
    """A short fixed-width summary for the terminal."""
    lines = []
    for env, d in data["envs"].items():
        header, rows = table_rows(d, data["group_by"])
        header, rows = header[:7], [r[:7] for r in rows]
        header[5] = "steps to thr"
        widths = [max(len(c) for c in col) for col in zip(header, *rows)]
        lines.append(f"{env}: {threshold_line(d)}")
        for r in [header, *rows]:
            lines.append(
                "  "
                + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
            )
    return "\n".join(lines)


def plot_env(env: str, env_data: dict[str, Any], metric: str, colors: dict[str, Any], path: Path) -> Path:
    """Mean curve and 95% bootstrap band of each group of one env."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for g, d in env_data["groups"].items():
        c = d["curve"]
        if not c["steps"]:
            continue
        style = "-o" if len(c["steps"]) == 1 else "-"
        ax.plot(c["steps"], c["mean"], style, ms=3, color=colors[g], label=f"{g} (n={d['seeds']})")
        ax.fill_between(c["steps"], c["ci_low"], c["ci_high"], color=colors[g], alpha=0.2, linewidth=0)
    ax.axhline(env_data["threshold"], color="gray", linestyle="--", linewidth=1, label="threshold")
    ax.set_xlabel("t_env")
    ax.set_ylabel(metric)
    ax.set_title(f"{env}: mean and 95% bootstrap CI")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# --- MLflow -----------------------------------------------------------------------------------------------


def _uri(client: Any) -> str:
    return str(getattr(client, "tracking_uri", "the MLflow store"))


def _experiment_ids(client: Any) -> list[str]:
    ids: list[str] = []
    token = None
    while True:
        page = retry(client.search_experiments, page_token=token)
        ids += [e.experiment_id for e in page]
        token = page.token
        if not token:
            return ids


def select_runs(
    client: Any,
    experiment: str | None = None,
    parent: str | None = None,
    filter_string: str | None = None,
    status: str = "FINISHED",
) -> list[Any]:
    """The runs to report on (oldest first): those of ``experiment`` (default 'hymarl'), or with
    ``parent`` the children of that run in any experiment; with ``status`` ('ALL' or '': any) and
    ``filter_string`` ANDed; without sweep parents (tag mode=sweep) and evaluations (mode=evaluate).
    Raises ReportError for an unknown experiment or parent run or an invalid filter."""
    from mlflow.exceptions import MlflowException

    clauses = []
    if parent:
        try:
            retry(client.get_run, parent)
        except MlflowException as exc:
            raise ReportError(f"no MLflow run with id {parent!r} in {_uri(client)}") from exc
        clauses.append(f"tags.`mlflow.parentRunId` = '{parent}'")
        exp_ids = _experiment_ids(client)
    else:
        name = experiment or "hymarl"
        exp = retry(client.get_experiment_by_name, name)
        if exp is None:
            raise ReportError(f"no MLflow experiment named {name!r} in {_uri(client)}")
        exp_ids = [exp.experiment_id]
    if status and status.upper() != "ALL":
        clauses.append(f"attributes.status = '{status.upper()}'")
    if filter_string:
        clauses.append(filter_string)
    query = " and ".join(clauses)
    runs: list[Any] = []
    token = None
    try:
        while True:
            page = retry(
                client.search_runs,
                exp_ids,
                query,
                max_results=1000,
                page_token=token,
                order_by=["attributes.start_time ASC"],
            )
            runs += list(page)
            token = page.token
            if not token:
                break
    except MlflowException as exc:
        raise ReportError(f"cannot search runs with filter {query!r}: {exc.message}") from exc
    return [r for r in runs if r.data.tags.get("mode") not in ("sweep", "evaluate")]


def fetch_series(client: Any, runs: Sequence[Any], metric: str, group_by: str = "algo") -> list[RunSeries]:
    """The metric history of each run (runs that never logged it are left out)."""
    out = []
    for r in runs:
        points = history_points(retry(client.get_metric_history, r.info.run_id, metric))
        if points:
            tags = r.data.tags
            out.append(
                RunSeries(
                    r.info.run_id,
                    r.info.run_name or "",
                    tags.get("env", "?"),
                    tags.get(group_by, "?"),
                    tags.get("seed", "?"),
                    points,
                    int(r.info.start_time or 0),
                )
            )
    return out


def write_report(
    client: Any,
    runs: Sequence[Any],
    out_dir: Path,
    metric: str = "test_return_mean",
    thresholds: dict[str, float] | None = None,
    group_by: str = "algo",
    title: str | None = None,
    published: str | None = None,
    benchmark: str | None = None,
) -> Path:
    """Write the figures, report.md, report.html and report.json of ``runs`` to ``out_dir``; returns
    the path of report.md. With ``published`` (runner/benchmarks/<name>.yaml) also benchmark.md and
    benchmark.json: ours beside the paper's numbers. Raises ReportError when no run logged ``metric``."""
    if not runs:
        raise ReportError("no runs to report on")
    pub = None
    if published:  # an unknown name fails before anything is written
        from runner.benchmarks import PublishedError, load_published

        try:
            pub = load_published(published)
        except PublishedError as exc:
            raise ReportError(str(exc)) from None
    series = fetch_series(client, runs, metric, group_by)
    if not series:
        raise ReportError(f"none of the {len(runs)} selected runs logged the metric {metric!r}")
    data = build_report(series, metric, thresholds, group_by, title)
    data["skipped_runs"] = sorted({r.info.run_id for r in runs} - {s.run_id for s in series})
    series = one_run_per_seed(series)[0]  # the benchmark table counts seeds too
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    all_groups = sorted({g for d in data["envs"].values() for g in d["groups"]})
    palette = [f"C{i % 10}" for i in range(len(all_groups))]
    colors = dict(zip(all_groups, palette))
    for env, d in data["envs"].items():
        plot_env(env, d, metric, colors, out_dir / d["figure"])
    (out_dir / "report.json").write_text(json.dumps(data, indent=1) + "\n")
    md = out_dir / "report.md"
    md.write_text(render_markdown(data))
    (out_dir / "report.html").write_text(render_html(data, out_dir))
    if pub is not None:
        from runner.benchmarks import write as write_benchmark

        write_benchmark(series, pub, out_dir, benchmark)
    return md


def log_report(client: Any, run_id: str, out_dir: Path) -> None:
    """Log report.md/.html/.json and the figures they show as artifacts of ``run_id`` under ``report/``."""
    out_dir = Path(out_dir)
    data = json.loads((out_dir / "report.json").read_text())
    names = [*FILES, *(d["figure"] for d in data["envs"].values())]
    for name in names:
        if (out_dir / name).is_file():
            retry(client.log_artifact, run_id, str(out_dir / name), "report")


# --- CLI --------------------------------------------------------------------------------------------------


def threshold_arg(text: str) -> tuple[str, float]:
    env, sep, value = text.rpartition("=")
    try:
        if not sep or not env:
            raise ValueError
        return env, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ENV=VALUE with a number VALUE, got {text!r}") from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m runner.tools report", description=__doc__.split("\n")[0])
    p.add_argument("--experiment", default="hymarl", help="MLflow experiment name (ignored with --parent)")
    p.add_argument("--parent", help="report on the child runs of this (sweep) run, and log it there")
    p.add_argument("--filter", dest="filter_string", help="MLflow search filter string, ANDed")
    p.add_argument("--metric", default="test_return_mean", help="metric to aggregate (step = t_env)")
    p.add_argument("--status", default="FINISHED", help="only runs with this status (ALL: any)")
    p.add_argument("--out", type=Path, help="output folder (default outputs/report[/<parent id>])")
    p.add_argument(
        "--threshold",
        type=threshold_arg,
        nargs="+",
        action="extend",
        default=[],
        metavar="ENV=VALUE",
        help="steps-to-threshold level of an env (default: 90%% of the best)",
    )
    p.add_argument(
        "--group-by", default="algo", help="tag that names the lines of a plot and rows of a table"
    )
    p.add_argument("--title", help="report title")
    p.add_argument("--tracking-uri", help="the MLflow store (default: $MLFLOW_TRACKING_URI, else "
                   "sqlite:///outputs/mlflow.db); a SQLite file that does not exist is refused")
    p.add_argument(
        "--published",
        help="also put the runs beside a paper's published numbers (runner/benchmarks/<NAME>.yaml, "
        "e.g. papoudakis2021): benchmark.md/.json",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from runner.tools import open_store

    client = open_store(args.tracking_uri)
    if client is None:
        return 2
    out = args.out or Path("outputs") / "report" / (args.parent or "")
    title = args.title or (
        f"Sweep {args.parent}: {args.metric}"
        if args.parent
        else f"Experiment {args.experiment}: {args.metric}"
    )
    try:
        runs = select_runs(client, args.experiment, args.parent, args.filter_string, args.status)
        if not runs:
            where = f"children of run {args.parent!r}" if args.parent else f"experiment {args.experiment!r}"
            extra = f" matching {args.filter_string!r}" if args.filter_string else ""
            which = "" if args.status.upper() == "ALL" else f"{args.status.upper()} "
            raise ReportError(f"no {which}runs in {where}{extra} in {_uri(client)}")
        md = write_report(client, runs, out, args.metric, dict(args.threshold), args.group_by, title,
                          published=args.published)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    data = json.loads((out / "report.json").read_text())
    if data["unused_thresholds"]:
        print(
            f"warning: --threshold for envs not in the report: {', '.join(data['unused_thresholds'])}",
            file=sys.stderr,
        )
    if data["skipped_runs"]:
        print(
            f"warning: {len(data['skipped_runs'])} runs never logged {args.metric!r}; left out",
            file=sys.stderr,
        )
    for r in data["repeated_seeds"]:
        print(f"warning: {repeat_line(r)}", file=sys.stderr)
    if args.parent:
        log_report(client, args.parent, out)
    print(
        f"wrote {md} (+ report.html, report.json, {len(data['envs'])} figures) from {data['runs']} runs"
        + (f"; logged to run {args.parent} under report/" if args.parent else "")
    )
    print(render_text(data))
    if args.published:
        print(f"benchmark table beside {args.published}: {out / 'benchmark.md'}")
    return 0
