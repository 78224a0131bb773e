"""``python -m runner.tools plot``: metrics of MLflow runs against t_env in one figure
(:func:`runner.curves.metrics_figure`; matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

from runner.curves import metrics_figure


def main(argv: list[str] | None = None) -> None:
    """``python -m runner.tools plot RUN_ID --metric travel_time_machines_mean --metric travel_time_humans_mean
    --out fig.png``: metrics of MLflow runs against t_env, one line per run and metric."""
    import argparse

    from runner.tools import open_store

    ap = argparse.ArgumentParser(prog="python -m runner.tools plot", description=(main.__doc__ or "").splitlines()[0])
    ap.add_argument("runs", nargs="+", help="MLflow run ids")
    ap.add_argument("--metric", action="append", required=True, help="metric to plot (repeat for more)")
    ap.add_argument("--out", type=Path, required=True, help="PNG file to write")
    ap.add_argument("--title", default="")
    ap.add_argument("--xlabel", default="t_env")
    ap.add_argument("--ylabel", default="")
    ap.add_argument("--tracking-uri", default=None, help="default: MLFLOW_TRACKING_URI or outputs/mlflow.db")
    args = ap.parse_args(argv)
    client = open_store(args.tracking_uri)
    if client is None:
        raise SystemExit(2)
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
