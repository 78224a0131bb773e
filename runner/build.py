"""Build every component from the config, through the registries, in dependency order."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from envs.adapter import make_copy
from envs.base import EnvSpec, VecEnv
from runner import registry
from runner.buffers.episode import FieldSpec, base_scheme
from runner.config import typed
from runner.contracts import (
    BOUNDED,
    CAPABILITIES,
    CONTINUOUS,
    DISCRETE,
    GROUPS,
    SPEC_CAPABILITIES,
    STATE,
    Buffer,
    Learner,
    RolloutHooks,
)
from runner.controllers.grouped import GroupedController
from runner.errors import ConfigError
from runner.groups import resolve, whole_team
from runner.logging.base import Loggers
from runner.logging.console import console
from runner.rollout.parallel import ParallelRunner


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} is invalid: CUDA is not available on this machine (use device=cpu or auto)")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Components:
    spec: EnvSpec
    controller: GroupedController
    learner: Learner
    buffer: Buffer
    runner: ParallelRunner
    loggers: Loggers
    device: torch.device

    @property
    def env(self) -> VecEnv:
        return self.runner.env


# -- memory of the episode storage ------------------------------------------------------------------
# Setups from these sizes up say what they are doing before they start (they take seconds to minutes);
# smaller ones print nothing and cost nothing extra.
MANY_COPIES = 1000  # env copies of a Python env: a line before creating them, and an early memory check
MANY_BYTES = 1e9  # bytes of episode storage: a line before allocating it
GB = 1e9


def episode_bytes(scheme: dict[str, FieldSpec], max_t: int) -> int:
    """Bytes of one stored episode: every field over max_t + 1 slots (episode_const fields once)."""
    total = 0
    for f in scheme.values():
        size = math.prod(f.shape) * torch.empty((), dtype=f.dtype).element_size()
        total += size if f.episode_const else size * (max_t + 1)
    return total


def available_memory(device: torch.device) -> tuple[int, str] | None:
    """Bytes that can still be allocated on ``device`` and where that number comes from: CUDA's free
    memory, or MemAvailable of /proc/meminfo for the CPU. None where it cannot be known (then no
    memory check is made)."""
    if device.type == "cuda":
        try:
            free, _total = torch.cuda.mem_get_info(device)
        except (RuntimeError, AssertionError):
            return None
        return int(free), f"free on {device}"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo"
    except (OSError, ValueError, IndexError):
        pass
    return None


@dataclass
class StorageEstimate:
    """Episode storage that a config allocates: the replay buffer and one rollout batch."""

    buffer_episodes: int
    buffer_device: torch.device
    copies: int
    device: torch.device
    max_t: int
    per_episode: int
    per_entry: int = 0
    """Bytes of one buffer entry (0: one episode, ``per_episode``; a transition buffer's entry is smaller)."""

    @property
    def buffer_bytes(self) -> int:
        return self.buffer_episodes * (self.per_entry or self.per_episode)

    @property
    def batch_bytes(self) -> int:
        return self.copies * self.per_episode

    def by_device(self) -> dict[torch.device, int]:
        need: dict[torch.device, int] = {}
        for dev, n in ((self.buffer_device, self.buffer_bytes), (self.device, self.batch_bytes)):
            need[dev] = need.get(dev, 0) + n
        return need


def storage_estimate(cfg: DictConfig, scheme: dict[str, FieldSpec], spec: EnvSpec, copies: int,
                     device: torch.device) -> StorageEstimate:
    buf_device = device if cfg.buffer.get("device", "auto") == "auto" else torch.device("cpu")
    slots = registry.BUFFERS.get(cfg.buffer.name).slots_per_entry(spec.episode_limit)
    return StorageEstimate(int(cfg.buffer.get("buffer_size", 0)), buf_device, copies, device, spec.episode_limit,
                           episode_bytes(scheme, spec.episode_limit), episode_bytes(scheme, slots - 1))


def check_memory(cfg: DictConfig, est: StorageEstimate) -> None:
    """Refuse (ConfigError, before anything is allocated and before any run exists) a replay buffer and
    rollout batch that need more memory than their device has available. The env copies, the networks
    and checkpoints come on top and are not counted: this catches what cannot fit at all."""
    for dev, need in est.by_device().items():
        avail = available_memory(dev)
        if avail is None or need <= avail[0]:
            continue
        on_dev_buffer, on_dev_batch = est.buffer_device == dev, est.device == dev and est.copies > 1
        keys, parts = [], []
        if on_dev_buffer:
            keys.append("buffer.buffer_size")
            parts.append(f"the replay buffer needs about {est.buffer_bytes / GB:.2f} GB ({est.buffer_episodes:,} "
                         f"episodes of {est.max_t + 1} steps x {est.per_episode // (est.max_t + 1):,} bytes)")
        if on_dev_batch:  # the episode runner's batch of one episode is too small to name
            keys.append("runner.n_envs")
            parts.append(f"a rollout batch of runner.n_envs={est.copies} env copies {est.batch_bytes / GB:.2f} GB")
        if "episode_limit" in cfg.env:
            keys.append("env.episode_limit")
        keys = keys or ["buffer.buffer_size"]
        lead = f"buffer.buffer_size={est.buffer_episodes}" if on_dev_buffer else f"runner.n_envs={est.copies}"
        total = f": {need / GB:.2f} GB" if len(parts) > 1 else ""
        lower = ", ".join(keys[:-1]) + f" or {keys[-1]}" if len(keys) > 1 else keys[0]
        cpu_hint = " (or set buffer.device=cpu)" if dev.type == "cuda" and on_dev_buffer else ""
        raise ConfigError(
            f"{lead} is invalid: {' and '.join(parts)}{total}, more than the {avail[0] / GB:.2f} GB of memory "
            f"available on {dev} ({avail[1]}). Lower {lower}{cpu_hint}"
        )


def say(line: str) -> None:
    """One line on the console (stderr) about a long setup step, never wrapped."""
    console.print(line, highlight=False, soft_wrap=True, markup=False)


def _probe_spec(env_cls: Any, env_cfg: Any, seed: int) -> EnvSpec:
    """The spec of copy 0, built in this process (only before creating many copies)."""
    env = make_copy(env_cls, env_cfg, seed, 0)
    try:
        return env.spec
    finally:
        env.close()


def build(cfg: DictConfig, device: torch.device) -> Components:
    """env -> controller -> learner -> buffer (scheme incl. the components' extra fields) -> runner."""
    env_cfg = typed(cfg.env, registry.ENVS)
    env_cls = registry.ENVS.get(env_cfg.name)
    if cfg.get("groups") is not None and env_cls.reports_agent_returns:
        env_cfg.agent_returns = True  # per-group returns from the agents' own rewards
    runner_cfg = typed(cfg.runner, registry.RUNNERS)
    runner_cls = registry.RUNNERS.get(runner_cfg.name)
    copies = runner_cls.copies(runner_cfg)
    if copies >= MANY_COPIES and not env_cls.natively_batched:  # Python env copies: seconds to minutes
        spec = _probe_spec(env_cls, env_cfg, cfg.seed)  # refuse what cannot fit before creating them
        check_memory(cfg, storage_estimate(cfg, base_scheme(spec), spec, copies, device))
        workers = runner_cls.workers(runner_cfg, copies)
        where = f"{workers} worker process{'es' if workers != 1 else ''}" if workers else "this process"
        say(f"creating {copies:,} env copies in {where} (every rollout, test phases included, steps all of them: "
            f"up to {copies * spec.episode_limit:,} env steps each) ...")
    env = runner_cls.make_env(runner_cfg, env_cls, env_cfg, cfg.seed, device)
    try:
        return _build_on(cfg, env, runner_cls, device)
    except BaseException:
        env.close()  # env copies may be processes: never leave them behind a refused config
        raise


def check_spec(cfg: DictConfig, spec: EnvSpec) -> None:
    """What the chosen parts require of the env that only its spec tells: a global state, discrete or
    continuous actions, finite action bounds (:data:`runner.contracts.SPEC_CAPABILITIES`)."""
    have = spec.provides()
    errors, missing = [], set()
    for cap_name in sorted(SPEC_CAPABILITIES - have):
        cap = CAPABILITIES[cap_name]
        need = [f"{group}={cfg[group].name}" for group in GROUPS
                if cap_name in registry.ALL[group].get(cfg[group].name).requires]
        if need:
            errors.append("; ".join(f"{part} needs {cap.what}" for part in need))
            missing.add(cap_name)
    if not errors:
        return
    label = cfg.env.get("label") or cfg.env.name
    facts = [f"state_dim {spec.state_dim}"] if STATE.name in missing else []
    hint = ""
    if missing & {DISCRETE.name, CONTINUOUS.name, BOUNDED.name}:
        if spec.continuous:
            bounds = "" if spec.bounded else " with unbounded dims (set env.action_bounds=[low, high])"
            facts.append(f"continuous (Box) actions of up to {spec.n_actions} dims{bounds}")
        else:
            facts.append(f"{spec.n_actions} discrete actions")
        hint = algorithms_for(have)
    raise ConfigError("; ".join(errors) + f": env '{label}' has {' and '.join(facts)}"
                      + (f" (algorithms that can run it: {hint})" if hint else ""))


def algorithms_for(have: frozenset[str]) -> str:
    """The algo presets (conf/algo) whose parts need nothing of an env beyond ``have``: e.g. the
    algorithms a continuous-action env can run."""
    from omegaconf import OmegaConf

    from runner.paths import conf_dir

    def defaults(path: Any) -> list[Any]:
        return OmegaConf.to_container(OmegaConf.load(path)).get("defaults", [])  # type: ignore[union-attr]

    root = {k: v for item in defaults(conf_dir() / "config.yaml")
            for k, v in (item.items() if isinstance(item, dict) else ()) if k in registry.ALL}
    names = []
    for path in sorted((conf_dir() / "algo").glob("*.yaml")):
        parts = dict(root)
        for item in defaults(path):
            for key, value in (item.items() if isinstance(item, dict) else ()):
                if key.startswith("override /"):
                    parts[key.split("/", 1)[1]] = value
        needs = set()
        for group, option in parts.items():
            if group in registry.ALL and isinstance(option, str) and option in registry.ALL[group]:
                needs |= registry.ALL[group].get(option).requires
        if not (needs & SPEC_CAPABILITIES) - have:
            names.append(path.stem)
    return ", ".join(f"+algo={n}" for n in names)


def _build_on(cfg: DictConfig, env: VecEnv, runner_cls: Any, device: torch.device) -> Components:
    spec = env.spec
    check_spec(cfg, spec)
    # the team of agent groups; without `groups`: the one group of every agent (runner.groups.whole_team)
    explicit = cfg.get("groups") is not None
    groups = resolve(cfg.groups, spec, f"env '{cfg.env.label}'") if explicit else [whole_team(spec)]
    controller = GroupedController(
        groups, typed(cfg.controller, registry.CONTROLLERS), typed(cfg.agent, registry.AGENTS), spec, device,
        by_group=explicit,
    )
    learner = registry.LEARNERS.get(cfg.learner.name)(
        typed(cfg.learner, registry.LEARNERS), controller, typed(cfg.mixer, registry.MIXERS), spec, device
    )

    scheme = base_scheme(spec)
    hooks: list[RolloutHooks] = [controller, learner]
    for hook in hooks:
        scheme.update(hook.extra_scheme())

    buf_cfg = typed(cfg.buffer, registry.BUFFERS)
    buf_device = device if buf_cfg.device == "auto" else torch.device("cpu")
    est = storage_estimate(cfg, scheme, spec, env.n_envs, device)
    check_memory(cfg, est)
    if est.buffer_bytes + est.batch_bytes >= MANY_BYTES:
        say(f"allocating the replay buffer: {est.buffer_episodes:,} episodes of up to {spec.episode_limit} steps, "
            f"{est.buffer_bytes / GB:.2f} GB on {buf_device} (each rollout batch of {env.n_envs:,} copies: "
            f"{est.batch_bytes / GB:.2f} GB on {device}) ...")
    buffer = registry.BUFFERS.get(buf_cfg.name)(buf_cfg, scheme, spec.episode_limit, buf_device)
    runner = runner_cls(env, scheme, controller, device, hooks)
    loggers = Loggers(
        [registry.LOGGERS.get(name)(typed(node, registry.LOGGERS, name)) for name, node in (cfg.logger or {}).items()]
    )
    return Components(spec, controller, learner, buffer, runner, loggers, device)
