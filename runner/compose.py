"""Compose a config from Python (tests, benchmark, notebooks) exactly as the CLI would."""

from __future__ import annotations

from collections.abc import Sequence

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from runner.config import register_schemas
from runner.paths import conf_dir


def compose_config(overrides: Sequence[str]) -> DictConfig:
    """E.g. compose_config(["+algo=qmix", "+env=twostep", "t_max=1000"])."""
    register_schemas()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))
