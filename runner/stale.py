"""``python -m runner.stale``: find the runs left RUNNING by a process that died without setting a
final status (``kill -9``, the OOM killer, a power cut) and mark them KILLED, with the reason and
where to resume in their ``error`` tag.

A run is stale when, on this host, its run dir (or sweep dir) is no longer locked by its process,
or, for a run from another host, its ``heartbeat`` tag (refreshed about once a minute by a live
run) is older than ``--older-than`` seconds. See :mod:`runner.ownership`.

    python -m runner.stale                      # every experiment of the default store
    python -m runner.stale --experiment hymarl --dry-run
    python -m runner.stale --tracking-uri http://127.0.0.1:5000 --older-than 1800
"""

from __future__ import annotations

import argparse
import sys

from runner.errors import ConfigError


def main(argv: list[str] | None = None) -> int:
    from runner import ownership, tracking

    p = argparse.ArgumentParser(prog="python -m runner.stale", description=__doc__.split("\n\n")[0])
    p.add_argument("--tracking-uri", default=None, help="the store (default: $MLFLOW_TRACKING_URI or outputs/mlflow.db)")
    p.add_argument("--experiment", action="append", default=None, help="only this experiment (repeatable)")
    p.add_argument("--older-than", type=float, default=ownership.STALE_AFTER_S,
                   help="seconds without a heartbeat after which a run from another host is stale (default %(default).0f)")
    p.add_argument("--dry-run", action="store_true", help="list the stale runs, change nothing")
    args = p.parse_args(argv)
    uri = args.tracking_uri or tracking.default_tracking_uri()
    try:
        client = tracking.open_existing(uri)
        if args.experiment:
            exps = []
            for name in args.experiment:
                exp = client.get_experiment_by_name(name)
                if exp is None:
                    raise ConfigError(f"no experiment named {name!r} in {uri}")
                exps.append(exp)
        else:
            exps = client.search_experiments()
    except ConfigError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    total = 0
    for exp in exps:
        runs = tracking.retry(client.search_runs, [exp.experiment_id], filter_string="attributes.status = 'RUNNING'",
                              max_results=10000)
        for run, reason in ownership.close_stale(client, runs, max_age_s=args.older_than, dry_run=args.dry_run):
            total += 1
            verb = "would mark" if args.dry_run else "marked"
            print(f"{verb} KILLED: run {run.info.run_id} ({run.info.run_name}, experiment {exp.name!r}): {reason}")
    print(f"{total} stale run{'' if total == 1 else 's'}{' found' if args.dry_run else ' closed'} in {uri}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
