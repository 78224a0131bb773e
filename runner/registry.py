"""One small generic registry (name -> class), and one registry per kind of component.

A component registers itself with a decorator next to its definition, together with the
dataclass that types its config::

    @MIXERS.register("qmix", config=QMixConfig)
    class QMixer(nn.Module): ...

The config dataclass is stored in Hydra's ConfigStore as ``schema/<kind>/<name>`` so that
``conf/<kind>/<name>.yaml`` can start with ``defaults: [/schema/<kind>@_here_: <name>, _self_]``
and a typo in any key is a composition error. File name == registry key; a test checks both ways.

Each registry knows the packages that hold its built-in components and imports them on first
use, so adding a component is: one module, one yaml, one decorator.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from runner.errors import RegistryError as RegistryError  # re-exported: it lives in runner.errors

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, packages: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self._packages = packages
        self._loaded = False
        self._entries: dict[str, tuple[T, type | None]] = {}

    def register(self, name: str, config: type | None = None) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._entries and self._entries[name][0] is not obj:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = (obj, config)
            return obj

        return deco

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for pkg_name in self._packages:
            pkg = importlib.import_module(pkg_name)
            for mod in pkgutil.iter_modules(pkg.__path__):
                if not mod.name.startswith("_"):
                    importlib.import_module(f"{pkg_name}.{mod.name}")

    def get(self, name: str) -> T:
        self._load()
        if name not in self._entries:
            raise RegistryError(
                f"unknown {self.kind} '{name}'. Available {self.kind}s: {', '.join(sorted(self._entries))}"
            )
        return self._entries[name][0]

    def config_class(self, name: str) -> type | None:
        self.get(name)
        return self._entries[name][1]

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def items(self) -> Iterator[tuple[str, T, type | None]]:
        self._load()
        for name in sorted(self._entries):
            obj, cfg = self._entries[name]
            yield name, obj, cfg

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._entries


# One registry per kind. The key of each is the name of its config group in conf/.
ENVS: Registry[Any] = Registry("env", ("envs",))
AGENTS: Registry[Any] = Registry("agent", ("modules.agents",))
MIXERS: Registry[Any] = Registry("mixer", ("modules.mixers",))
CONTROLLERS: Registry[Any] = Registry("controller", ("runner.controllers",))
LEARNERS: Registry[Any] = Registry("learner", ("runner.learners",))
RUNNERS: Registry[Any] = Registry("runner", ("runner.rollout",))  # the `runner` config group: runner/rollout/
BUFFERS: Registry[Any] = Registry("buffer", ("runner.buffers",))
LOGGERS: Registry[Any] = Registry("logger", ("runner.logging",))

ALL: dict[str, Registry[Any]] = {
    r.kind: r for r in (ENVS, AGENTS, MIXERS, CONTROLLERS, LEARNERS, RUNNERS, BUFFERS, LOGGERS)
}
