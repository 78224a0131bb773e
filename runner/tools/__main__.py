"""``python -m runner.tools <command> [options]``: the tools over runs and MLflow stores.

commands:
  report       curves and statistics tables of MLflow runs -> outputs/report/ (make report)
  stats        median, IQR and mean of a metric over runs at given t_env steps: a markdown table
  plot         metrics of MLflow runs against t_env, one line per run and metric: a PNG
  bench        throughput benchmark -> outputs/bench/, the table in docs/performance.md (make bench)
  send-unsent  send what a run could not send to its tracking server (its mlflow_unsent.json)
  stale        mark runs KILLED whose process died without setting a final status

``python -m runner.tools <command> --help`` shows the options of a command. report, stats, plot and
stale read the store of ``--tracking-uri`` (default: $MLFLOW_TRACKING_URI, else outputs/mlflow.db).
"""

from __future__ import annotations

import sys


def _report(argv: list[str]) -> int | None:
    from runner.tools import report

    return report.main(argv)


def _stats(argv: list[str]) -> int | None:
    from runner.tools import stats

    stats.main(argv)  # exits non-zero itself on an error
    return 0


def _plot(argv: list[str]) -> int | None:
    from runner.tools import plots

    plots.main(argv)  # exits non-zero itself on an error
    return 0


def _bench(argv: list[str]) -> int | None:
    from runner.tools import bench

    bench.main(argv)  # exits non-zero itself on an error
    return 0


def _send_unsent(argv: list[str]) -> int | None:
    from runner.tools import unsent

    return unsent.main(argv)


def _stale(argv: list[str]) -> int | None:
    from runner.tools import stale

    return stale.main(argv)


COMMANDS = {"report": _report, "stats": _stats, "plot": _plot, "bench": _bench, "send-unsent": _send_unsent,
            "stale": _stale}  # each imports its module only when run: mlflow, matplotlib and torch cost seconds


def main(argv: list[str] | None = None) -> int:
    """Run ``<command>`` with the rest of ``argv``; its exit code (a command that returns None: 0)."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(__doc__.strip().replace("``", "`"), file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    command = COMMANDS.get(args[0])
    if command is None:
        print(f"error: unknown command {args[0]!r}: one of {', '.join(COMMANDS)} "
              "(python -m runner.tools --help)", file=sys.stderr)
        return 2
    return command(args[1:]) or 0


if __name__ == "__main__":
    raise SystemExit(main())
