"""``python -m runner +algo=qmix +env=twostep`` -- the Hydra app, the recipe of a run: the config
schemas registered, the run dir checked, the config composed by Hydra and checked (or a checkpoint's
own), :func:`runner.experiment.run`, and the exit code: 0, 2 (a config error: one line, no run),
1 (a failed run), 128+N (stopped by signal N). In a sweep (``-m``) each job runs here too; the plumbing
around a job (resume, skip, run dir) is :mod:`runner.tools.jobs`, the sweep's own :mod:`runner.tools.sweep`."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from runner.checkpoint import CheckpointWriteError
from runner.config import check_required_groups, register_schemas
from runner.errors import ConfigError
from runner.learners.base import NonFiniteLossError
from runner.paths import conf_dir
from runner.tools.jobs import (
    check_output_dir,
    config_from_checkpoint,
    objective,
    prepare_sweep_job,
    remove_if_empty,
    result_dir_differs,
)

register_schemas()

CONF_DIR = str(conf_dir())  # <repo>/conf, or the installed hymarl_conf package (runner.paths)


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def app(cfg: DictConfig) -> float | None:
    """One run; in a sweep (-m), one job: errors are raised (Hydra records the job as failed and the
    other jobs go on) instead of exiting, and the final test return is returned to the sweeper."""
    from hydra.types import RunMode

    from runner import experiment
    from runner.tools import sweep
    from runner.tracking import ownership

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    output_dir = Path(hc.runtime.output_dir)
    if multirun and not sweep.in_launcher_process():
        ownership.stop_when_orphaned()  # a job in a worker process stops (with a checkpoint) when its launcher dies
    try:
        missing = [g for g in ("algo", "env") if not hc.runtime.choices.get(g)]
        if missing and (cfg.resume or cfg.checkpoint):
            cfg = config_from_checkpoint(cfg)
        else:
            check_required_groups(hc.runtime.choices)
        tags: dict[str, str] = {}
        suffix = ""
        if multirun:
            if sweep.is_stopped(hc.sweep.dir):  # Ctrl-C/SIGTERM before this job started: a re-run runs it
                sweep.JOB_OUTCOME = "not_started"
                return math.nan
            if not sweep.in_launcher_process():  # parallel jobs share the terminal: log lines, no live bars
                with open_dict(cfg):
                    cfg.progress = False
            cfg, done = prepare_sweep_job(cfg, hc)
            if done is not None:
                return done.get("value")
            tags = sweep.job_tags(hc.sweep.dir, hc.job.num, list(hc.overrides.task))
            suffix = sweep.job_name_suffix(hc.sweep.dir, hc.job.num)
        try:
            result = experiment.run(cfg, output_dir, list(hc.overrides.task), extra_tags=tags, name_suffix=suffix)
        finally:
            if cfg.resume and result_dir_differs(cfg, output_dir):
                remove_if_empty(output_dir)  # the resume's files went into the resumed run's dir
    except ConfigError as exc:
        remove_if_empty(output_dir)
        if multirun:
            raise
        print(f"Error: {exc}", file=sys.stderr)
        sys.exit(2)
    except (NonFiniteLossError, CheckpointWriteError) as exc:  # the run is FAILED with this reason
        if multirun:
            raise
        print(f"Error: {exc}", file=sys.stderr)
        sys.exit(1)
    finally:
        if multirun:
            ownership.release(output_dir)
    if result.exit_code:
        if multirun:  # Ctrl-C stops the sweep; a re-run of the same sweep dir resumes from the checkpoint
            reason = f"stopped by a signal at t_env={result.t_env}; checkpoint {result.checkpoint}"
            if ownership.ORPHANED.is_set():
                reason = f"its launcher died; stopped at t_env={result.t_env}; checkpoint {result.checkpoint}"
            sweep.write_job_status(output_dir, "KILLED", reason, None)
            if ownership.ORPHANED.is_set():  # nobody to report to: end this worker process too
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(143)
            if sweep.in_launcher_process():
                sweep.STOPPED, sweep.STOP_SIGNAL = True, result.exit_code - 128
                raise KeyboardInterrupt
            # in a worker: the launcher collects the job as it is (its status is KILLED, written above)
            sweep.JOB_OUTCOME = "killed"
            return math.nan
        sys.exit(result.exit_code)
    return objective(result)


def main() -> None:
    from runner.tools import sweep

    check_output_dir(sys.argv[1:])
    try:
        app()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(128 + sweep.STOP_SIGNAL if sweep.STOPPED else 130)
    except SystemExit as exc:  # a sweep stopped by Ctrl-C/SIGTERM: Hydra exits 1 for the interrupted jobs
        if sweep.STOPPED and exc.code not in (0, None):
            sys.exit(128 + sweep.STOP_SIGNAL)
        raise


if __name__ == "__main__":
    main()
