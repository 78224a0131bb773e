"""The job side of ``python -m runner``: the plumbing around one run (or one job of a sweep) that the
app (:mod:`runner.__main__`) calls before and after :func:`runner.experiment.run`.

* before Hydra starts: :func:`check_output_dir` refuses a run dir that cannot be written;
* ``resume=``/``checkpoint=`` without ``+algo``/``+env``: :func:`config_from_checkpoint`;
* a job of a sweep run again (same sweep dir): :func:`prepare_sweep_job` skips it or resumes it;
* after the run: :func:`remove_if_empty` (a run refused before it started leaves no run dir),
  :func:`result_dir_differs` (a resume wrote into the resumed run's dir), :func:`objective` (what
  a sweep job returns to the sweeper).
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any, cast

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from runner.config import RESUME_MAY_DIFFER
from runner.errors import ConfigError
from runner.paths import conf_dir


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
    return with_schema_defaults(saved)


def with_schema_defaults(saved: DictConfig) -> DictConfig:
    """A checkpoint's config with the keys that its components' schemas gained since it was written,
    at their defaults (check_resume_config accepts exactly those as unchanged): every component node
    merged onto its registered config dataclass."""
    from runner import registry

    with open_dict(saved):
        for group, reg in registry.ALL.items():
            node = saved.get(group)
            if group == "logger" or not isinstance(node, DictConfig) or node.get("name") not in reg:
                continue
            cls = reg.config_class(node["name"])
            if cls is not None:
                saved[group] = OmegaConf.merge(OmegaConf.structured(cls), node)
    return saved


def remove_if_empty(run_dir: Path) -> None:
    """A run refused before it started leaves no run dir behind (only Hydra's own files were there)."""
    import shutil

    from runner.tracking import ownership

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


def objective(result) -> float | None:
    """What a job returns to the sweeper (optuna maximises it): the final greedy test return."""
    v = result.stats.get("test_return_mean")
    return float(v) if v is not None else None


def prepare_sweep_job(cfg: DictConfig, hc) -> tuple[DictConfig, dict | None]:
    """A job of a sweep that is run again (same sweep dir): skip it when it finished, resume it from
    its latest checkpoint when it did not. Returns (config, the finished job's status or None)."""
    from runner import checkpoint
    from runner.tools import sweep
    from runner.tracking import ownership

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


_NO_OUTPUT_DIR_FLAGS = {"-h", "--help", "--hydra-help", "--version", "-c", "--cfg", "-i", "--info",
                        "-sc", "--shell-completion", "-p", "--package"}  # Hydra flags that create no run dir


def check_output_dir(argv: list[str]) -> None:
    """Refuse, before Hydra creates it, a run dir (``-m``: sweep dir) that cannot be written: one line,
    exit code 2. Hydra's own failure is a traceback. The dir's fixed part (``outputs/runs`` of
    ``hydra.run.dir``, from the command line or conf/hydra/default.yaml) is created, as Hydra would,
    and a probe file is written and removed in it: a read-only mount, a missing permission, a file in
    the way or a full disk are found here."""
    import re

    import yaml

    from runner.tracking import storage

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
            pattern = str(yaml.safe_load((conf_dir() / "hydra" / "default.yaml").read_text())[key]["dir"])
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
