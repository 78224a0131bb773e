"""``python -m runner +algo=qmix +env=twostep`` -- the Hydra app."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from runner.config import RESUME_MAY_DIFFER, ConfigError, check_required_groups, register_schemas
from runner.learners.base import NonFiniteLossError

register_schemas()

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


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

    if run_dir.is_dir() and all(p.name == ".hydra" or p.suffix == ".log" for p in run_dir.iterdir()):
        shutil.rmtree(run_dir, ignore_errors=True)
        with contextlib.suppress(OSError):  # the date folder, when this was its only run
            run_dir.parent.rmdir()


def _objective(result) -> float | None:
    """What a job returns to the sweeper (optuna maximises it): the final greedy test return."""
    v = result.stats.get("test_return_mean")
    return float(v) if v is not None else None


def prepare_sweep_job(cfg: DictConfig, hc) -> tuple[DictConfig, dict | None]:
    """A job of a sweep that is run again (same sweep dir): skip it when it finished, resume it from
    its latest checkpoint when it did not. Returns (config, the finished job's status or None)."""
    from runner import checkpoint, sweep

    job_dir = Path(hc.runtime.output_dir)
    cb = OmegaConf.select(hc, "callbacks.mlflow_sweep", default=None)
    if cb is None or not cb.get("resume", True) or cfg.resume or cfg.checkpoint or cfg.evaluate:
        return cfg, None
    if not any((job_dir / "checkpoints").glob("step_*.pt")):
        return cfg, None
    prev = sweep.previous_job(job_dir)
    ckpt_path, data = checkpoint.load(job_dir)
    checkpoint.check_resume_config(data["config"], OmegaConf.to_container(cfg, resolve=True), ckpt_path)
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

    from runner import experiment, sweep

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    try:
        missing = [g for g in ("algo", "env") if not hc.runtime.choices.get(g)]
        if missing and (cfg.resume or cfg.checkpoint):
            cfg = config_from_checkpoint(cfg)
        else:
            check_required_groups(hc.runtime.choices)
        tags: dict[str, str] = {}
        suffix = ""
        if multirun:
            sweep.check_not_stopped(hc.sweep.dir)
            if not sweep.in_launcher_process():  # parallel jobs share the terminal: log lines, no live bars
                with open_dict(cfg):
                    cfg.progress = False
            cfg, done = prepare_sweep_job(cfg, hc)
            if done is not None:
                return done.get("value")
            tags = sweep.job_tags(hc.sweep.dir, hc.job.num, list(hc.overrides.task))
            suffix = sweep.job_name_suffix(hc.sweep.dir, hc.job.num)
        result = experiment.run(cfg, Path(hc.runtime.output_dir), list(hc.overrides.task), extra_tags=tags,
                                name_suffix=suffix)
    except ConfigError as exc:
        _remove_if_empty(Path(hc.runtime.output_dir))
        if multirun:
            raise
        print(f"Error: {exc}", file=sys.stderr)
        sys.exit(2)
    except NonFiniteLossError as exc:
        if multirun:
            raise
        print(f"Error: {exc}", file=sys.stderr)
        sys.exit(1)
    if result.exit_code:
        if multirun:  # Ctrl-C stops the sweep; a re-run of the same sweep dir resumes from the checkpoint
            reason = f"stopped by a signal at t_env={result.t_env}; checkpoint {result.checkpoint}"
            sweep.write_job_status(Path(hc.runtime.output_dir), "KILLED", reason, None)
            if sweep.in_launcher_process():
                raise KeyboardInterrupt
            raise sweep.JobInterrupted(reason)  # in a worker: the launcher collects it, no new job starts
        sys.exit(result.exit_code)
    return _objective(result)


def main() -> None:
    from runner import sweep

    try:
        app()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except SystemExit as exc:  # a sweep stopped by Ctrl-C: Hydra exits 1 for the interrupted jobs
        if sweep.STOPPED and exc.code not in (0, None):
            sys.exit(130)
        raise


if __name__ == "__main__":
    main()
