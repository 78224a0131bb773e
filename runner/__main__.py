"""``python -m runner +algo=qmix +env=twostep`` -- the Hydra app."""

from __future__ import annotations

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


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def app(cfg: DictConfig) -> None:
    from runner import experiment

    hc = HydraConfig.get()
    try:
        missing = [g for g in ("algo", "env") if not hc.runtime.choices.get(g)]
        if missing and (cfg.resume or cfg.checkpoint):
            cfg = config_from_checkpoint(cfg)
        else:
            check_required_groups(hc.runtime.choices)
        result = experiment.run(cfg, Path(hc.runtime.output_dir), list(hc.overrides.task))
    except ConfigError as exc:
        _remove_if_empty(Path(hc.runtime.output_dir))
        print(f"Error: {exc}", file=sys.stderr)
        sys.exit(2)
    except NonFiniteLossError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        sys.exit(1)
    if result.exit_code:
        sys.exit(result.exit_code)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
