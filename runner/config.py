"""Config schemas, their registration in Hydra's ConfigStore, and the checks Hydra cannot express.

Hydra composes ``conf/config.yaml`` against :class:`Config`; every group option is typed by the
dataclass its component registered (see :mod:`runner.registry`). Unknown keys and wrongly typed
values are therefore composition errors. :func:`validate` adds the cross-field and range checks,
and runs before any MLflow run is created.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from runner import registry
from runner.contracts import GROUPS, check_parts

# ConfigError and check_range live in the leaf module runner.errors; re-exported here.
from runner.errors import ConfigError as ConfigError
from runner.errors import check_range as check_range
from runner.errors import fmt_value as _fmt
from runner.errors import invalid

REQUIRED_GROUPS = ("algo", "env")


@dataclass
class Config:
    """Top-level config. Groups (env, learner, ...) are typed by their option's schema."""

    algo_name: str = MISSING
    """Name of the algorithm preset (set by conf/algo/*.yaml); used in tags and run names."""
    seed: int = 0
    """Seed of torch, numpy, random and every env copy. Same seed + config -> same metrics (CPU)."""
    t_max: int = "${env.t_max}"  # type: ignore[assignment]
    """Train env steps (summed over env copies). Default: the env's recommended budget."""
    test_interval: int = "${env.test_interval}"  # type: ignore[assignment]
    """Env steps between greedy test phases (one also runs before training)."""
    test_nepisodes: int = 32
    """Greedy test episodes per test phase."""
    log_interval: int = "${env.log_interval}"  # type: ignore[assignment]
    """Env steps between logs of training stats (return_mean, loss, ...)."""
    save_interval: int = 0
    """Env steps between periodic checkpoints; 0 = by wall-clock time only (save_interval_s)."""
    save_interval_s: float = 600.0
    """Wall-clock seconds of training between periodic checkpoints (a kill -9 loses at most this
    much); 0 = by env steps only. Checkpoints are also written at the end and on Ctrl-C/SIGTERM."""
    checkpoint_keep: int = 3
    """How many of the newest checkpoints of a run are kept."""
    checkpoint_buffer: bool = True
    """Store the replay buffer in checkpoints (needed for an exact resume)."""
    evaluate: bool = False
    """Only run test_nepisodes greedy episodes from `checkpoint` and log them."""
    checkpoint: Any = None
    """Checkpoint to load: a .pt file or a run dir (its latest checkpoint)."""
    resume: Any = None
    """Run dir of an earlier run to continue in the same MLflow run."""
    device: str = "auto"
    """auto (CUDA when present), cpu, cuda, cuda:N."""
    progress: bool = True
    """Show a progress bar."""
    torch_threads: int = 1
    """torch intra-op threads; 1 is fastest for the small networks of MARL on CPU. 0 = torch's default."""
    run_name: Any = None
    """MLflow run name; default <algo>-<env>-s<seed>."""

    benchmark: Any = None
    """Set by ``+benchmark=<name>`` (conf/benchmark/): {name, published}, published naming runner/benchmarks/<published>.yaml. Runs are tagged
    ``benchmark=<name>`` and the sweep's report puts them beside the published values."""
    groups: Any = None
    """Agent groups and their policies (runner/groups.py): None or all (one shared network), per_agent,
    or {name: [agents]} / {name: {agents, policy: learn|random|frozen|{_target_}, ...}}."""
    env: Any = MISSING
    learner: Any = MISSING
    mixer: Any = MISSING
    controller: Any = MISSING
    agent: Any = MISSING
    runner: Any = MISSING
    buffer: Any = MISSING
    logger: Any = field(default_factory=dict)


# Keys that may differ between a run and its resume: they change bookkeeping, not the experiment.
RESUME_MAY_DIFFER = (
    "t_max",
    "test_interval",
    "test_nepisodes",
    "log_interval",
    "save_interval",
    "save_interval_s",
    "checkpoint_keep",
    "checkpoint_buffer",
    "resume",
    "checkpoint",
    "progress",
    "torch_threads",
    "device",
    "run_name",
    "logger",
    "benchmark",
)


def register_schemas() -> None:
    """Store the root schema and every component's config dataclass in Hydra's ConfigStore."""
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    for kind, reg in registry.ALL.items():
        for name, _obj, cfg_cls in reg.items():
            if cfg_cls is not None:
                cs.store(group=f"schema/{kind}", name=name, node=cfg_cls)


def available_options(group: str) -> list[str]:
    from runner.paths import conf_dir

    conf = conf_dir() / group
    return sorted(p.stem for p in conf.glob("*.yaml"))


def check_required_groups(choices: dict[str, Any]) -> None:
    """Fail with the available options when +algo or +env is missing."""
    missing = [g for g in REQUIRED_GROUPS if not choices.get(g)]
    if missing:
        lines = []
        for g in missing:
            lines.append(f"missing +{g}=<option>. Available options in '{g}': {', '.join(available_options(g))}")
        example = "python -m runner +algo=qmix +env=twostep"
        raise ConfigError("\n".join(lines) + f"\nExample: {example}  (or +experiment=<preset>)")


def validate(cfg: DictConfig) -> None:
    """Range and cross-field checks. Raises ConfigError naming the key and the value."""
    errors: list[str] = []

    def need(cond: bool, key: str, value: Any, rule: str) -> None:
        if not cond:
            errors.append(invalid(key, value, rule))

    known = {f.name for f in fields(Config)}
    for key in map(str, cfg):
        if key not in known:
            errors.append(f"unknown top-level key '{key}'. Known keys: {', '.join(sorted(known))}")
    for group in ("env", "learner", "mixer", "controller", "agent", "runner", "buffer"):
        if OmegaConf.is_missing(cfg, group):
            errors.append(f"config group '{group}' is not set")
    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(errors))

    for group in ("env", "learner", "mixer", "controller", "agent", "runner", "buffer"):
        name = cfg[group].get("name")
        reg = registry.ALL[group]
        if name not in reg:
            errors.append(f"{group}.name={_fmt(name)} is not a registered {group}: {', '.join(reg.names())}")
        else:
            errors.extend(_unknown_keys(group, cfg[group], reg.config_class(name), f"{group} '{name}'"))
    for lname in cfg.logger or {}:
        if lname not in registry.LOGGERS:
            errors.append(f"logger '{lname}' is not registered: {', '.join(registry.LOGGERS.names())}")
        else:
            errors.extend(_unknown_keys(f"logger.{lname}", cfg.logger[lname], registry.LOGGERS.config_class(lname), f"logger '{lname}'"))
    for key in sorted(OmegaConf.missing_keys(cfg)):
        errors.append(f"{key} is required: set {key}=<value> (the chosen options leave it unset)")
    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(errors))

    need(cfg.t_max > 0, "t_max", cfg.t_max, "must be > 0")
    need(cfg.test_interval > 0, "test_interval", cfg.test_interval, "must be > 0")
    need(cfg.log_interval > 0, "log_interval", cfg.log_interval, "must be > 0")
    need(cfg.test_nepisodes >= 1, "test_nepisodes", cfg.test_nepisodes, "must be >= 1")
    need(cfg.torch_threads >= 0, "torch_threads", cfg.torch_threads, "must be >= 0 (0 = torch's default)")
    need(cfg.save_interval >= 0, "save_interval", cfg.save_interval, "must be >= 0 (0 = by wall-clock time only)")
    need(cfg.save_interval_s >= 0, "save_interval_s", cfg.save_interval_s, "must be >= 0 (0 = by env steps only)")
    need(cfg.checkpoint_keep >= 1, "checkpoint_keep", cfg.checkpoint_keep, "must be >= 1")
    need(
        cfg.device == "auto" or cfg.device == "cpu" or str(cfg.device).startswith("cuda"),
        "device",
        cfg.device,
        "must be auto, cpu, cuda or cuda:N",
    )
    if cfg.evaluate:
        need(cfg.checkpoint is not None, "checkpoint", cfg.checkpoint, "evaluate=true needs checkpoint=<path>")
    need(
        not (cfg.resume and cfg.evaluate),
        "resume",
        cfg.resume,
        "cannot be combined with evaluate=true (use checkpoint=)",
    )

    if cfg.get("benchmark") is not None:
        errors.extend(_check_benchmark(cfg.benchmark))

    from runner.groups import check_config as check_groups

    errors.extend(check_groups(cfg))
    # A component checks its own config node (runner.contracts.Component.check_config) ...
    for group in GROUPS:
        errors.extend(registry.ALL[group].get(cfg[group].name).check_config(cfg[group]))
    for lname in cfg.logger or {}:  # e.g. an optional package missing, a tracking server down
        errors.extend(registry.LOGGERS.get(lname).check_config(cfg.logger[lname]))
    # ... and the rules between components live here: declared capabilities, then sizes.
    errors.extend(check_combination(cfg))
    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(errors))


def check_combination(cfg: DictConfig) -> list[str]:
    """The chosen parts fit together: every capability one requires, another provides (see
    :mod:`runner.contracts`); a sampled batch and a rollout fit in the buffer; an env whose copies
    each need a process of their own gets one worker per copy."""
    chosen = {group: (cfg[group].name, registry.ALL[group].get(cfg[group].name)) for group in GROUPS}
    errors = check_parts(chosen, registry.ALL)
    size = cfg.buffer.get("buffer_size")
    if size is not None and size >= 1:
        if cfg.learner.get("batch_size", 0) > size:
            errors.append(invalid("learner.batch_size", cfg.learner.batch_size, f"larger than buffer.buffer_size={size}"))
        n = cfg.runner.get("n_envs", 1)
        if n > size and cfg.runner.name != "episode":
            errors.append(invalid("runner.n_envs", n, f"larger than buffer.buffer_size={size}"))
    one_each = chosen["env"][1].one_copy_per_process(cfg.env)
    n, workers = cfg.runner.get("n_envs", 1), cfg.runner.get("n_workers")
    if one_each is not None and cfg.runner.name != "episode" and n > 1 and workers is not None and workers != n:
        why, instead = one_each
        errors.append(f"runner.n_workers={workers} is invalid with {why}, so each of the runner.n_envs={n} copies "
                      f"needs its own worker (n_workers={n}, or null), {instead}")
    return errors


def _check_benchmark(bench: Any) -> list[str]:
    from runner.benchmarks import available

    if not isinstance(bench, (dict, DictConfig)) or not bench.get("name"):
        return [f"benchmark={bench!r} is invalid: set it with +benchmark=<name> ({', '.join(available_options('benchmark'))})"]
    pub = bench.get("published")
    if pub is not None and pub not in available():
        return [f"benchmark.published={pub!r} is invalid: published results available: {', '.join(available())}"]
    return []


def _unknown_keys(prefix: str, node: Any, cls: type | None, what: str) -> list[str]:
    """Keys added with +group.key=... that the component's schema does not have."""
    if cls is None or not isinstance(node, (dict, DictConfig)):
        return []
    known = {f.name for f in fields(cls)}
    return [
        f"unknown key '{prefix}.{k!s}' for {what}. Valid keys: {', '.join(sorted(known))}"
        for k in node
        if k not in known
    ]


def to_object(node: DictConfig) -> Any:
    """A typed dataclass instance from a structured config node."""
    return OmegaConf.to_object(node)


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
