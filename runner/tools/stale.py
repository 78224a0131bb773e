"""``python -m runner.tools stale``: find the runs left RUNNING by a process that died without setting a
final status (``kill -9``, the OOM killer, a power cut) and mark them KILLED, with the reason and
where to resume in their ``error`` tag.

A run is stale when, on this host, its run dir (or sweep dir) is no longer locked by its process,
or, for a run from another host, its ``heartbeat`` tag (refreshed about once a minute by a live
run) is older than ``--older-than`` seconds. See :mod:`runner.tracking.ownership`.

    python -m runner.tools stale                      # every experiment of the default store
    python -m runner.tools stale --experiment hymarl --dry-run
    python -m runner.tools stale --tracking-uri http://127.0.0.1:5000 --older-than 1800

:func:`close_stale` also runs when a sweep is run again (on its children left RUNNING).
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path
from typing import Any

from runner.errors import ConfigError
from runner.tracking import ownership, store


def stale_reason(run: Any, now: float | None = None, max_age_s: float = ownership.STALE_AFTER_S) -> str | None:
    """The evidence that the RUNNING ``run``'s owner is gone, or None when it may be alive."""
    now = time.time() if now is None else now
    tags = run.data.tags
    host, pid = tags.get("owner_host"), tags.get("owner_pid")
    run_dir = tags.get("sweep_dir") if tags.get("mode") == "sweep" else tags.get("run_dir")
    if host == socket.gethostname() or (host is None and run_dir and Path(run_dir).is_dir()):
        if run_dir and (Path(run_dir) / ownership.LOCK_FILE).is_file():
            return None if ownership.owner(run_dir) is not None else f"{run_dir} is no longer locked by it"
        if pid and pid.isdigit() and not ownership.pid_alive(int(pid)):
            return f"pid {pid} no longer exists"
    beat = tags.get("heartbeat")
    last = float(beat) if beat and beat.replace(".", "", 1).isdigit() else run.info.start_time / 1000
    if now - last > max_age_s:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last))
        return f"no heartbeat since {when} ({(now - last) / 60:.0f} min ago)"
    return None


def resume_hint(run: Any) -> str:
    """Where the stale run can continue from (its latest checkpoint), or why it cannot."""
    from runner import checkpoint

    tags = run.data.tags
    if tags.get("mode") == "sweep":
        return f"run the same sweep again (hydra.sweep.dir={tags.get('sweep_dir')}) to resume its jobs"
    run_dir = tags.get("run_dir")
    if not run_dir or not Path(run_dir).is_dir():
        return "its run dir is not on this machine"
    try:
        ckpt = checkpoint.resolve(run_dir)
    except checkpoint.CheckpointError:
        return "it wrote no checkpoint (save_interval / save_interval_s), so it cannot be resumed"
    return f"latest checkpoint {ckpt}; continue with: python -m runner resume={run_dir}"


def close_stale(client: Any, runs: list[Any], max_age_s: float = ownership.STALE_AFTER_S, dry_run: bool = False,
                status: str = "KILLED") -> list[tuple[Any, str]]:
    """Mark each RUNNING run of ``runs`` whose owner is gone ``status`` (KILLED), with the reason and
    where to resume in its ``error`` tag. Returns [(run, reason)] of the stale ones."""
    out = []
    for run in runs:
        if run.info.status != "RUNNING":
            continue
        reason = stale_reason(run, max_age_s=max_age_s)
        if reason is None:
            continue
        text = (f"stale: its process ({ownership.run_owner(run)}) ended without setting a final status (SIGKILL, "
                f"the OOM killer, a power cut?): {reason}; {resume_hint(run)}")
        out.append((run, text))
        if dry_run:
            continue
        store.retry(client.set_tag, run.info.run_id, "error", text[:5000])
        store.retry(client.set_terminated, run.info.run_id, status=status)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m runner.tools stale", description=__doc__.split("\n\n")[0])
    p.add_argument("--tracking-uri", default=None, help="the store (default: $MLFLOW_TRACKING_URI or outputs/mlflow.db)")
    p.add_argument("--experiment", action="append", default=None, help="only this experiment (repeatable)")
    p.add_argument("--older-than", type=float, default=ownership.STALE_AFTER_S,
                   help="seconds without a heartbeat after which a run from another host is stale (default %(default).0f)")
    p.add_argument("--dry-run", action="store_true", help="list the stale runs, change nothing")
    args = p.parse_args(argv)
    uri = args.tracking_uri or store.default_tracking_uri()
    try:
        client = store.open_existing(uri)
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
        runs = store.retry(client.search_runs, [exp.experiment_id], filter_string="attributes.status = 'RUNNING'",
                           max_results=10000)
        for run, reason in close_stale(client, runs, max_age_s=args.older_than, dry_run=args.dry_run):
            total += 1
            verb = "would mark" if args.dry_run else "marked"
            print(f"{verb} KILLED: run {run.info.run_id} ({run.info.run_name}, experiment {exp.name!r}): {reason}")
    print(f"{total} stale run{'' if total == 1 else 's'}{' found' if args.dry_run else ' closed'} in {uri}")
    return 0
