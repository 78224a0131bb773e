"""Build every component from the config, through the registries, in dependency order."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from envs.base import EnvSpec, VecEnv
from runner import registry
from runner.buffers.episode import base_scheme
from runner.logging.base import Loggers


def typed(node: Any, reg: registry.Registry[Any], name: str | None = None) -> Any:
    """The node as an instance of the config dataclass its component registered.

    Works for nodes Hydra typed at composition and for plain ones (a checkpoint's saved config).
    Interpolations are resolved in the whole config first (e.g. controller.epsilon_anneal_time's
    default reads env.epsilon_anneal_time), not in the group's node alone.
    """
    cls = reg.config_class(name or node["name"])
    plain = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    if cls is None:
        return plain
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), plain))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        from runner.config import ConfigError

        raise ConfigError(f"device={name!r} is invalid: CUDA is not available on this machine (use device=cpu or auto)")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Components:
    spec: EnvSpec
    controller: Any
    learner: Any
    buffer: Any
    runner: Any
    loggers: Loggers
    device: torch.device

    @property
    def env(self) -> VecEnv:
        return self.runner.env


def build(cfg: DictConfig, device: torch.device) -> Components:
    """env -> controller -> learner -> buffer (scheme incl. the components' extra fields) -> runner."""
    env_cfg = typed(cfg.env, registry.ENVS)
    if cfg.get("groups") is not None and hasattr(env_cfg, "agent_returns"):
        env_cfg.agent_returns = True  # per-group returns from the agents' own rewards
    env_cls = registry.ENVS.get(env_cfg.name)
    runner_cfg = typed(cfg.runner, registry.RUNNERS)
    runner_cls = registry.RUNNERS.get(runner_cfg.name)
    env = runner_cls.make_env(runner_cfg, env_cls, env_cfg, cfg.seed, device)
    try:
        return _build_on(cfg, env, runner_cls, device)
    except BaseException:
        env.close()  # env copies may be processes: never leave them behind a refused config
        raise


def _build_on(cfg: DictConfig, env: VecEnv, runner_cls: Any, device: torch.device) -> Components:
    spec = env.spec

    if cfg.get("groups") is not None:
        from runner.controllers.grouped import GroupedController
        from runner.groups import resolve

        groups = resolve(cfg.groups, spec, f"env '{cfg.env.label}'")
        controller = GroupedController(
            groups, typed(cfg.controller, registry.CONTROLLERS), typed(cfg.agent, registry.AGENTS), spec, device
        )
    else:
        controller = registry.CONTROLLERS.get(cfg.controller.name)(
            typed(cfg.controller, registry.CONTROLLERS), typed(cfg.agent, registry.AGENTS), spec, device
        )
    learner = registry.LEARNERS.get(cfg.learner.name)(
        typed(cfg.learner, registry.LEARNERS), controller, typed(cfg.mixer, registry.MIXERS), spec, device
    )

    scheme = base_scheme(spec)
    hooks = []
    for component in (controller, learner):
        if hasattr(component, "extra_scheme"):
            scheme.update(component.extra_scheme())
        if hasattr(component, "on_episode_start"):
            hooks.append(component)

    buf_cfg = typed(cfg.buffer, registry.BUFFERS)
    buf_device = device if buf_cfg.device == "auto" else torch.device("cpu")
    buffer = registry.BUFFERS.get(buf_cfg.name)(buf_cfg, scheme, spec.episode_limit, buf_device)
    runner = runner_cls(env, scheme, controller, device, hooks)
    loggers = Loggers(
        [registry.LOGGERS.get(name)(typed(node, registry.LOGGERS, name)) for name, node in (cfg.logger or {}).items()]
    )
    return Components(spec, controller, learner, buffer, runner, loggers, device)
