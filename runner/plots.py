"""Figures: the learning curve of one run (written at the end of training), and metrics of MLflow runs (``python -m runner.plots``); matplotlib, headless."""

from __future__ import annotations

from pathlib import Path
from typing import Any


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


def main(argv: list[str] | None = None) -> None:
    """``python -m runner.plots RUN_ID --metric travel_time_machines_mean --metric travel_time_humans_mean
    --out fig.png``: metrics of MLflow runs against t_env, one line per run and metric."""
    import argparse
    import sys

    from runner.errors import ConfigError
    from runner.tracking import default_tracking_uri, open_existing

    ap = argparse.ArgumentParser(prog="python -m runner.plots", description=(main.__doc__ or "").splitlines()[0])
    ap.add_argument("runs", nargs="+", help="MLflow run ids")
    ap.add_argument("--metric", action="append", required=True, help="metric to plot (repeat for more)")
    ap.add_argument("--out", type=Path, required=True, help="PNG file to write")
    ap.add_argument("--title", default="")
    ap.add_argument("--xlabel", default="t_env")
    ap.add_argument("--ylabel", default="")
    ap.add_argument("--tracking-uri", default=None, help="default: MLFLOW_TRACKING_URI or outputs/mlflow.db")
    args = ap.parse_args(argv)
    try:  # a mistyped path must not create an empty store
        client = open_existing(args.tracking_uri or default_tracking_uri())
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    series = {}
    for run_id in args.runs:
        run = client.get_run(run_id)
        for m in args.metric:
            hist = sorted((h.step, h.value) for h in client.get_metric_history(run_id, m))
            if not hist:
                raise SystemExit(f"run {run_id} ({run.info.run_name}) has no metric {m!r}")
            label = m if len(args.runs) == 1 else f"{run.info.run_name}: {m}"
            series[label] = hist
    print(metrics_figure(series, args.title, args.xlabel, args.ylabel or ", ".join(args.metric), args.out))


if __name__ == "__main__":
    main()
