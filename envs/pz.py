"""Any PettingZoo ParallelEnv, through a ``_target_`` factory in the env yaml (no code change).

.. code-block:: yaml

    # conf/env/my_env.yaml
    defaults: [/schema/env@_here_: pettingzoo, _self_]
    name: pettingzoo
    label: my_env
    factory:
      _target_: mpe2.simple_spread_v3.parallel_env   # any callable returning a ParallelEnv
      N: 3
      continuous_actions: false

The adapter contract (dead agents, masks, state, padding, truncation, rewards, infos, seeding) is
handled by :class:`envs.adapter.StandardEnv`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING, OmegaConf

from envs.adapter import AdapterConfig, AdapterEnv, check_adapter_config
from envs.aec import AEC_MODES, AECAsParallel, is_aec
from runner.errors import ConfigError
from runner.registry import ENVS

INSTALL_HINT = "install the env extras: pip install -e '.[envs]'"


@dataclass
class PettingZooConfig(AdapterConfig):
    factory: Any = MISSING
    """The env factory: ``_target_`` (dotted path of a callable returning a ParallelEnv or an
    AEC env) plus its keyword arguments."""
    aec: str = "turn"
    """How an AEC env is driven (envs/aec.py): turn (one agent acts per step, the others wait)
    or joint (every live agent acts once per step, in the env's order). ParallelEnvs ignore it."""
    time_limit: str = "env"
    """PettingZoo envs flag truncation themselves (see AdapterConfig.time_limit)."""


def plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def locate(path: str) -> Any:
    """The object at a dotted path (module attributes included), or ImportError saying why not."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError as exc:
            if exc.name is not None and not ".".join(parts[:i]).startswith(exc.name):
                raise  # the module exists but one of its own imports is missing
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                raise ImportError(f"module '{obj.__name__}' has no attribute '{attr}'")
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(f"No module named '{parts[0]}'", name=parts[0])


def _import_error(what: str, target: str, exc: ImportError) -> str:
    hint = f": {INSTALL_HINT}" if isinstance(exc, ModuleNotFoundError) else ""
    return f"{what}._target_={target} cannot be imported ({exc}){hint}"


def build_factory(spec: Any, what: str) -> Any:
    """Call ``spec['_target_'](**rest)``."""
    spec = dict(plain(spec))
    target = spec.pop("_target_")
    try:
        fn = locate(target)
    except ImportError as exc:
        raise ConfigError(_import_error(what, target, exc)) from exc
    return fn(**spec)


def check_factory(spec: Any, what: str) -> list[str]:
    spec = plain(spec)
    if not isinstance(spec, dict) or not isinstance(spec.get("_target_"), str):
        return [f"{what}={spec} is invalid: must be a mapping with _target_ (the dotted path of the env factory)"]
    try:
        fn = locate(spec["_target_"])
    except ImportError as exc:
        return [_import_error(what, spec["_target_"], exc)]
    if not callable(fn):
        return [f"{what}._target_={spec['_target_']} is not callable"]
    return []


@ENVS.register("pettingzoo", config=PettingZooConfig)
class PettingZooEnv(AdapterEnv):
    """A PettingZoo ParallelEnv made by ``env.factory``."""

    @classmethod
    def make_parallel(cls, cfg: Any) -> Any:
        env = build_factory(cfg.factory, "env.factory")
        if is_aec(env):
            return AECAsParallel(env, cfg.aec)
        return env

    @classmethod
    def label(cls, cfg: Any) -> str:
        return f"env '{cfg.label}' ({plain(cfg.factory).get('_target_')})"

    @classmethod
    def check_config(cls, cfg: Any) -> list[str]:
        errs = check_adapter_config(cfg) + check_factory(cfg.factory, "env.factory")
        if cfg.aec not in AEC_MODES:
            errs.append(f"env.aec={cfg.aec} is invalid: must be one of {', '.join(AEC_MODES)}")
        return errs
