"""Agent groups and policy mapping: which agents share a network, and where each group's actions
come from.

``groups`` in the config maps group names to agents and a policy source::

    groups:
      learners: [agent_0, agent_1]          # shorthand: a list (or one pattern) of agent ids
      others:
        agents: "agent_2"                   # ids, fnmatch patterns ("speaker_*") or "all"
        policy: random                      # learn (default) | random | frozen | {_target_: ...}
      veterans:
        agents: ["listener_*"]
        policy: frozen
        checkpoint: outputs/runs/<date>/<time>   # a run dir or a .pt checkpoint
        source_group: listener              # the group in that run (default: the same name)
      rest:
        default: true                       # takes every agent no other group lists

``groups: all`` (one shared network, the default without ``groups``) and ``groups: per_agent``
(one network per agent) are shorthands. Learning groups may override controller and agent
options (``controller: {epsilon_finish: 0.1}``, ``agent: {hidden_dim: 32}``).

Groups are checked twice: their structure in :func:`check_config` (with the rest of the config),
and against the env's agent ids in :func:`resolve` once the env exists. Both run before any
MLflow run is created.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from envs.base import EnvSpec

SHORTHANDS = ("all", "per_agent")
POLICIES = ("learn", "random", "frozen")
GROUP_KEYS = ("agents", "policy", "default", "checkpoint", "source_group", "controller", "agent")


@dataclass(frozen=True)
class Group:
    """A resolved group: its agents (in env order) and the shapes its networks need."""

    name: str
    agents: tuple[str, ...]
    index: tuple[int, ...]  # positions of the agents in the env's agent order
    policy: str  # learn, random, scripted or frozen
    obs_dim: int
    n_actions: int
    node: dict[str, Any]  # the group's (normalised, plain) config

    @property
    def learns(self) -> bool:
        return self.policy == "learn"


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def normalise(groups: Any) -> dict[str, dict[str, Any]] | str | None:
    """The groups config as plain dicts ``{name: {agents, policy, ...}}`` (or a shorthand string)."""
    groups = _plain(groups)
    if groups is None or isinstance(groups, str):
        return groups
    out = {}
    for name, node in groups.items():
        if isinstance(node, (list, str)):
            node = {"agents": node}
        out[str(name)] = dict(node) if isinstance(node, dict) else node
    return out


def policy_kind(policy: Any) -> str:
    if isinstance(policy, dict):
        return "scripted"
    return "learn" if policy is None else str(policy)


def describe(raw: Any) -> str:
    """A short description for run tags and reports, e.g. ``speaker=frozen listener=learn``."""
    groups = normalise(raw)
    if groups is None or isinstance(groups, str):
        return str(groups)
    return " ".join(f"{n}={policy_kind(g.get('policy', 'learn'))}" if isinstance(g, dict) else n for n, g in groups.items())


def check_config(cfg: Any) -> list[str]:
    """Structural checks of ``groups`` (agent ids are checked in :func:`resolve`)."""
    raw = cfg.get("groups")
    if raw is None:
        return []
    from runner.contracts import AGENT_GROUPS
    from runner.registry import CONTROLLERS

    name = cfg.controller.name
    if name in CONTROLLERS and AGENT_GROUPS.name not in CONTROLLERS.get(name).provides:
        return [
            f"groups are not supported with controller '{name}': it acts for the whole team "
            "(use controller=basic, e.g. +algo=qmix)"
        ]
    groups = normalise(raw)
    if isinstance(groups, str):
        if groups not in SHORTHANDS:
            return [f"groups={groups!r} is invalid: must be all, per_agent or a mapping of group names to agents"]
        return []
    if not isinstance(groups, dict) or not groups:
        return [f"groups={raw} is invalid: must be all, per_agent or a mapping of group names to agents"]
    errs: list[str] = []
    defaults = [n for n, g in groups.items() if isinstance(g, dict) and g.get("default")]
    if len(defaults) > 1:
        errs.append(f"groups {', '.join(map(repr, defaults))} are all marked default: true (at most one group may be)")
    learning = 0
    for name, g in groups.items():
        key = f"groups.{name}"
        if not isinstance(g, dict):
            errs.append(f"{key}={g} is invalid: must be a list of agents or a mapping with 'agents' and 'policy'")
            continue
        unknown = sorted(set(g) - set(GROUP_KEYS))
        if unknown:
            errs.append(f"{key} has unknown key(s) {', '.join(unknown)}. Known keys: {', '.join(GROUP_KEYS)}")
        agents = g.get("agents")
        if agents is None and not g.get("default"):
            errs.append(f"{key}.agents is required: a list of agent ids or patterns (or set default: true)")
        elif agents is not None and not (isinstance(agents, str) or (isinstance(agents, list) and all(isinstance(a, str) for a in agents))):
            errs.append(f"{key}.agents={agents} is invalid: must be an agent id, a pattern or a list of them")
        policy = g.get("policy", "learn")
        kind = policy_kind(policy)
        if kind == "scripted":
            errs.extend(_check_scripted(key, policy))
        elif kind not in POLICIES:
            errs.append(
                f"{key}.policy={policy!r} is invalid: must be learn, random, frozen or a scripted policy "
                "given as {_target_: module.Class, ...}"
            )
        learning += kind == "learn"
        if kind == "frozen":
            ckpt = g.get("checkpoint")
            if not ckpt:
                errs.append(f"{key}.checkpoint is required with policy frozen: a run dir or a .pt file of an earlier run")
            elif not Path(str(ckpt)).exists():
                errs.append(f"{key}.checkpoint={ckpt} is invalid: no such file or directory")
        elif g.get("checkpoint") is not None or g.get("source_group") is not None:
            errs.append(f"{key}.checkpoint/source_group only apply to policy frozen (this group's policy is {kind})")
        for sub in ("controller", "agent"):
            if g.get(sub) is None:
                continue
            if kind != "learn":
                errs.append(f"{key}.{sub} overrides only apply to learning groups (this group's policy is {kind})")
            elif not isinstance(g[sub], dict):
                errs.append(f"{key}.{sub}={g[sub]} is invalid: must be a mapping of {sub} options")
            else:
                errs.extend(_check_overrides(cfg, key, sub, g[sub]))
    if learning == 0:
        errs.append("groups: no group learns (every group has a fixed or frozen policy): give at least one group policy: learn")
    return errs


def _check_scripted(key: str, policy: dict[str, Any]) -> list[str]:
    target = policy.get("_target_")
    if not target:
        return [f"{key}.policy={policy} is invalid: a scripted policy needs _target_ (module.Class or module.function)"]
    from hydra.utils import get_object

    try:
        get_object(str(target))
    except Exception as exc:  # ImportError, AttributeError, ...: hydra wraps them
        return [f"{key}.policy._target_={target} cannot be imported: {str(exc).splitlines()[0]}"]
    return []


def _check_overrides(cfg: Any, key: str, sub: str, overrides: dict[str, Any]) -> list[str]:
    known = set(cfg[sub].keys())
    bad = sorted(set(overrides) - known - {"name"})
    if bad:
        return [f"{key}.{sub} has unknown key(s) {', '.join(bad)}. Known keys: {', '.join(sorted(known - {'name'}))}"]
    if "name" in overrides and overrides["name"] != cfg[sub].name:
        return [f"{key}.{sub}.name={overrides['name']} is invalid: groups share the run's {sub} ({cfg[sub].name}); override its options only"]
    return []


def _match(pattern: str, ids: tuple[str, ...]) -> list[str]:
    if pattern == "all":
        return list(ids)
    if any(c in pattern for c in "*?["):
        return [a for a in ids if fnmatch.fnmatchcase(a, pattern)]
    return [pattern] if pattern in ids else []


def whole_team(spec: EnvSpec) -> Group:
    """The one group of a run without ``groups``: every agent, one shared network, the env's
    (padded) observation and action sizes, so agents of different shapes may share it."""
    return Group("all", spec.agent_ids, tuple(range(spec.n_agents)), "learn", spec.obs_dim, spec.n_actions,
                 {"agents": "all"})


def resolve(raw: Any, spec: EnvSpec, env_label: str = "the env") -> list[Group]:
    """Groups of the env's agents, in config order. Raises ConfigError for an agent in two groups,
    an agent in none (without a default group), an id or pattern that matches nothing, and a
    group whose agents have different observation or action sizes."""
    from runner.errors import ConfigError

    ids = spec.agent_ids
    groups = normalise(raw)
    if groups is None or groups == "all":
        groups = {"all": {"agents": "all"}}
    elif groups == "per_agent":
        groups = {a: {"agents": [a]} for a in ids}
    elif isinstance(groups, str):
        raise ConfigError(f"groups={groups!r} is invalid: must be 'all', 'per_agent' or a mapping of group names")
    errs: list[str] = []
    owner: dict[str, str] = {}
    members: dict[str, list[str]] = {}
    known = ", ".join(ids)
    for name, g in groups.items():
        patterns = g.get("agents")
        patterns = [] if patterns is None else [patterns] if isinstance(patterns, str) else list(patterns)
        found: list[str] = []
        for p in patterns:
            hit = _match(p, ids)
            if not hit:
                what = "matches no agent" if any(c in p for c in "*?[") else "is not an agent"
                errs.append(f"groups.{name}.agents: '{p}' {what} of {env_label} (agents: {known})")
            found += [a for a in hit if a not in found]
        for a in found:
            if a in owner:
                errs.append(f"agent '{a}' is in two groups: '{owner[a]}' and '{name}' (an agent belongs to one group)")
            else:
                owner[a] = name
        members[name] = found
    default = next((n for n, g in groups.items() if g.get("default")), None)
    left = [a for a in ids if a not in owner]
    if left and default is not None:
        members[default] += left
        owner.update({a: default for a in left})
    elif left:
        errs.append(
            f"agent(s) {', '.join(left)} of {env_label} are in no group: list them in a group, "
            "or mark one group default: true"
        )
    out = []
    for name, g in groups.items():
        agents = [a for a in ids if owner.get(a) == name]  # env order
        if not agents:
            if not errs:
                errs.append(f"groups.{name} has no agents")
            continue
        index = tuple(ids.index(a) for a in agents)
        obs = {a: spec.obs_dim_of(i) for a, i in zip(agents, index)}
        acts = {a: spec.n_actions_of(i) for a, i in zip(agents, index)}
        if len(set(obs.values())) > 1 or len(set(acts.values())) > 1:
            shapes = ", ".join(f"{a}: obs {obs[a]}, {acts[a]} actions" for a in agents)
            errs.append(f"groups.{name} mixes agents of different shapes ({shapes}): a group's agents share one network; split them into groups")
            continue
        out.append(Group(name, tuple(agents), index, policy_kind(g.get("policy", "learn")),
                         obs[agents[0]], acts[agents[0]], g))
    if errs:
        raise ConfigError("invalid agent groups:\n  " + "\n  ".join(errs))
    return out
