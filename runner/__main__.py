"""``python -m runner +algo=qmix +env=twostep`` -- the Hydra app."""

from __future__ import annotations

import contextlib
import math
import os
import sys
from pathlib import Path
from typing import Any, cast

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from runner.checkpoint import CheckpointWriteError
from runner.config import RESUME_MAY_DIFFER, check_required_groups, register_schemas
from runner.errors import ConfigError
from runner.learners.base import NonFiniteLossError
from runner.paths import conf_dir

register_schemas()

CONF_DIR = str(conf_dir())  # <repo>/conf, or the installed hymarl_conf package (runner.paths)


def _overridden_keys() -> set[str]:
    """Top-level keys the user set on the command line (as Hydra parsed them)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(HydraConfig.get().overrides.task))
    return {o.key_or_group.split(".")[0] for o in parsed}


def config_from_checkpoint(cfg: DictConfig) -> DictConfig:
    """resume=/checkpoint= without +algo/+env: the checkpoint's own config, plus the user's
    overrides of the keys that may change (t_max, logging, evaluate, ...)."""
    from runner import checkpoint

    path = cfg.resume or cfg.checkpoint
    _, data = checkpoint.load(path)
    saved = OmegaConf.create(data["config"])
    may_change = set(RESUME_MAY_DIFFER) | {"evaluate", "hydra"}
    user_keys = _overridden_keys()
    ignored = sorted(user_keys - may_change)
    if ignored:
        raise ConfigError(
            f"{'resume' if cfg.resume else 'checkpoint'}={path} without +algo/+env runs the checkpoint's own config, "
            f"so these overrides cannot apply: {', '.join(ignored)}. Give the full command "
            "(+algo=... +env=... and your overrides) to run with a different config."
        )
    keep = (may_change - {"hydra"}) & user_keys
    with open_dict(saved):
        for key in keep:
            saved[key] = cfg[key]
    return saved


def _remove_if_empty(run_dir: Path) -> None:
    """A run refused before it started leaves no run dir behind (only Hydra's own files were there)."""
    import shutil

    from runner import ownership

    holder = ownership.owner(run_dir) if run_dir.is_dir() else None
    if holder and holder.get("pid") != os.getpid():
        return  # another process's run dir (refused as busy): not ours to remove
    if run_dir.is_dir() and all(p.name in (".hydra", ownership.LOCK_FILE) or p.suffix == ".log" for p in run_dir.iterdir()):
        shutil.rmtree(run_dir, ignore_errors=True)
        with contextlib.suppress(OSError):  # the date folder, when this was its only run
            run_dir.parent.rmdir()


def result_dir_differs(cfg: DictConfig, output_dir: Path) -> bool:
    """A resume runs in the resumed run's dir, not in the new dir Hydra made for the command."""
    from runner import checkpoint

    try:
        return checkpoint.run_dir_of(checkpoint.resolve(cfg.resume)).resolve() != output_dir.resolve()
    except ConfigError:
        return True


def _objective(result) -> float | None:
    """What a job returns to the sweeper (optuna maximises it): the final greedy test return."""
    v = result.stats.get("test_return_mean")
    return float(v) if v is not None else None


def prepare_sweep_job(cfg: DictConfig, hc) -> tuple[DictConfig, dict | None]:
    """A job of a sweep that is run again (same sweep dir): skip it when it finished, resume it from
    its latest checkpoint when it did not. Returns (config, the finished job's status or None)."""
    from runner import checkpoint, ownership, sweep

    job_dir = Path(hc.runtime.output_dir)
    cb = OmegaConf.select(hc, "callbacks.mlflow_sweep", default=None)
    if cb is None or not cb.get("resume", True) or cfg.resume or cfg.checkpoint or cfg.evaluate:
        return cfg, None
    # a job of an earlier launch of this sweep may still hold its dir (stopping after its launcher died)
    ownership.wait_acquire(job_dir, f"[sweep] job {hc.job.num} is still held by {{owner}}: waiting for it to end",
                           stop=lambda: sweep.STOPPED)
    if not any((job_dir / "checkpoints").glob("step_*.pt")):
        return cfg, None
    prev = sweep.previous_job(job_dir)
    ckpt_path, data = checkpoint.load(job_dir)
    current = cast("dict[str, Any]", OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    checkpoint.check_resume_config(data["config"], current, ckpt_path)
    if prev and prev["status"] == "FINISHED" and data["loop"]["t_env"] >= cfg.t_max:
        print(f"[sweep] job {hc.job.num} finished in an earlier run of this sweep ({job_dir}): skipped")
        return cfg, prev
    print(f"[sweep] job {hc.job.num} resumes from {ckpt_path} (t_env={data['loop']['t_env']:,})")
    with open_dict(cfg):
        cfg.resume = str(job_dir)
    return cfg, None


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def app(cfg: DictConfig) -> float | None:
    """One run; in a sweep (-m), one job: errors are raised (Hydra records the job as failed and the
    other jobs go on) instead of exiting, and the final test return is returned to the sweeper."""
    from hydra.types import RunMode

    from runner import experiment, ownership, sweep

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
                _remove_if_empty(output_dir)  # the resume's files went into the resumed run's dir
    except ConfigError as exc:
        _remove_if_empty(output_dir)
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
    return _objective(result)


_NO_OUTPUT_DIR_FLAGS = {"-h", "--help", "--hydra-help", "--version", "-c", "--cfg", "-i", "--info",
                        "-sc", "--shell-completion", "-p", "--package"}  # Hydra flags that create no run dir


def _check_output_dir(argv: list[str]) -> None:
    """Refuse, before Hydra creates it, a run dir (``-m``: sweep dir) that cannot be written: one line,
    exit code 2. Hydra's own failure is a traceback. The dir's fixed part (``outputs/runs`` of
    ``hydra.run.dir``, from the command line or conf/hydra/default.yaml) is created, as Hydra would,
    and a probe file is written and removed in it: a read-only mount, a missing permission, a file in
    the way or a full disk are found here."""
    import re

    import yaml

    from runner import storage

    if _NO_OUTPUT_DIR_FLAGS & set(argv):
        return
    key = "sweep" if {"-m", "--multirun"} & set(argv) else "run"
    pattern = None
    for arg in argv:  # the last override wins, as in Hydra
        m = re.fullmatch(rf"\+{{0,2}}hydra\.{key}\.dir=(.*)", arg)
        if m:
            pattern = m.group(1).strip("'\"")
    if pattern is None:
        try:
            pattern = str(yaml.safe_load((Path(CONF_DIR) / "hydra" / "default.yaml").read_text())[key]["dir"])
        except (OSError, KeyError, TypeError, yaml.YAMLError):
            return
    fixed = pattern.split("${", 1)[0]
    if "${" in pattern and not fixed.endswith("/"):
        fixed = str(Path(fixed).parent) if "/" in fixed else ""
    d = Path(fixed or ".")
    try:
        storage.check_writable_dir(d)
    except OSError as exc:
        fix = "Free some space" if storage.space_reason(exc) else "Make it writable"
        print(f"Error: cannot create the {key} dir: {storage.describe(exc, d)}. "
              f"{fix} or give hydra.{key}.dir=<a writable dir>", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    from runner import sweep

    _check_output_dir(sys.argv[1:])
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
