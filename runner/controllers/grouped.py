"""The team: a controller per agent group (see :mod:`runner.groups`), behind the one-controller
interface. Every run goes through it: a run without ``groups`` is the one group ``all`` of
:func:`runner.groups.whole_team` (every agent, one shared network).

Every learning group has its own controller from the controller registry (``controller=basic`` or
``maven``; parameters shared inside the group, separate across groups; with the group's own
observation and action sizes). Fixed groups act randomly or by a scripted policy, frozen groups
act greedily with a network loaded from an earlier run's checkpoint. The learner trains ``agent``
and mixes the Q-values of the learning agents only (``learn_idx``): the other agents are part of
the environment.

``agent`` is the learning groups' networks by group name (an ``nn.ModuleDict``) when ``groups`` is
configured, and the one network itself without it: the layout of the learner's checkpoints, which
is unchanged from before the team was the only path. The team of one group that learns every agent
hands the whole batch to its controller (no view, no scatter): the default path costs one call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import torch
from omegaconf import OmegaConf
from torch import nn

from envs.base import EnvSpec, Observation
from runner.buffers.episode import EpisodeBatch, FieldSpec
from runner.contracts import AGENT_GROUPS, Controller
from runner.groups import Group
from runner.policies import ScriptedPolicy
from runner.registry import CONTROLLERS


class GroupView:
    """The part of an episode batch that one group sees: its agents, its observation and action sizes."""

    def __init__(self, batch: EpisodeBatch, sel: Any, obs_dim: int, n_actions: int, continuous: bool = False) -> None:
        self._batch, self._sel, self._obs, self._act, self._cont = batch, sel, obs_dim, n_actions, continuous

    batch_size = property(lambda self: self._batch.batch_size)
    max_t = property(lambda self: self._batch.max_t)
    device = property(lambda self: self._batch.device)

    def __getitem__(self, key: str) -> torch.Tensor:
        v = self._batch[key]
        if key == "obs":
            return v[..., self._sel, : self._obs]
        if key == "avail_actions":
            return v[..., self._sel, : self._act]
        if key == "actions":
            return v[..., self._sel, : self._act] if self._cont else v[..., self._sel]
        return v


def _selector(index: tuple[int, ...], device: torch.device) -> Any:
    """A slice for contiguous agents (a view, no copy), else an index tensor."""
    if list(index) == list(range(index[0], index[0] + len(index))):
        return slice(index[0], index[0] + len(index))
    return torch.tensor(index, dtype=torch.long, device=device)


def group_spec(spec: EnvSpec, g: Group) -> EnvSpec:
    if not spec.continuous:
        return EnvSpec(len(g.agents), g.n_actions, g.obs_dim, spec.state_dim, spec.episode_limit, g.agents)
    low = tuple(spec.action_low[i][: g.n_actions] for i in g.index)
    high = tuple(spec.action_high[i][: g.n_actions] for i in g.index)
    return EnvSpec(len(g.agents), g.n_actions, g.obs_dim, spec.state_dim, spec.episode_limit, g.agents,
                   continuous=True, action_low=low, action_high=high)


def _with_overrides(base: Any, overrides: dict[str, Any] | None) -> Any:
    if not overrides:
        return base
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(base), overrides))


class GroupedController(nn.Module, Controller):
    def __init__(self, groups: list[Group], ctrl_cfg: Any, agent_cfg: Any, spec: EnvSpec, device: torch.device,
                 by_group: bool = True) -> None:
        super().__init__()
        self.groups, self.spec, self.cfg = groups, spec, ctrl_cfg
        self.nets: Any = nn.ModuleDict()  # learning and frozen groups' controllers by group name
        self.scripted: dict[str, Any] = {}
        self.sel = {g.name: _selector(g.index, device) for g in groups}
        g0 = groups[0]
        # one learning group of every agent, in order, at the env's sizes: its controller sees the whole batch
        self.whole = (len(groups) == 1 and g0.learns and g0.index == tuple(range(spec.n_agents))
                      and g0.obs_dim == spec.obs_dim and g0.n_actions == spec.n_actions)
        for g in groups:
            sub = spec if self.whole else group_spec(spec, g)
            if g.learns:
                c_cfg = _with_overrides(ctrl_cfg, g.node.get("controller"))
                a_cfg = _with_overrides(agent_cfg, g.node.get("agent"))
                self.nets[g.name] = CONTROLLERS.get(c_cfg.name)(c_cfg, a_cfg, sub, device)
            elif g.policy == "frozen":
                self.nets[g.name] = load_frozen(g, sub, device)
            elif g.policy == "scripted":
                from hydra.utils import instantiate

                self.scripted[g.name] = ScriptedPolicy.wrap(instantiate(g.node["policy"]))
        self.learning = [g for g in groups if g.learns]
        self.by_group = by_group
        if by_group:  # the learner's trainable network: one entry per learning group
            self.agent = nn.ModuleDict({g.name: cast(nn.Module, self.nets[g.name].agent) for g in self.learning})
        else:
            assert self.whole, "without groups the team is the one learning group of every agent"
            self.agent = self.nets[g0.name].agent
        learn_idx = sorted(i for g in self.learning for i in g.index)
        self.n_learning = len(learn_idx)
        # the learning agents' rows, where not every agent learns (None: all of them, in order)
        self.learn_idx = None if learn_idx == list(range(spec.n_agents)) else torch.tensor(learn_idx, dtype=torch.long, device=device)
        # each learning group's positions among the learning agents, for per-group stats (none
        # with a single group: they would repeat the team's)
        self.per_group_stats = len(groups) > 1
        self.learn_positions = (
            {g.name: [learn_idx.index(i) for i in g.index] for g in self.learning} if self.per_group_stats else {}
        )
        self.supports_q_tables = all(self.nets[g.name].supports_q_tables for g in self.learning)
        # the whole team's controller, in a tuple (not a second registered submodule): one attribute
        # lookup per step on the default path instead of nn.Module's __getattr__ and a ModuleDict item
        self.only: tuple[Any, ...] = (self.nets[g0.name],) if self.whole else ()
        self.to(device)

    def member(self) -> Any:
        """The controller of the one learning group (e.g. MAVEN's learner trains its latent policy)."""
        if len(self.learning) != 1:
            raise ValueError(f"the team has {len(self.learning)} learning groups, not one")
        return self.nets[self.learning[0].name]

    def _agent_of(self, agent: nn.Module | None, g: Group) -> nn.Module | None:
        """The network of group g within `agent` (the learner's target copy of ``self.agent``)."""
        if agent is None or not self.by_group:
            return agent
        return cast(nn.ModuleDict, agent)[g.name]

    # -- the rollout hooks: every learning or frozen group's controller -----------------------------
    def extra_scheme(self) -> dict[str, FieldSpec]:
        out: dict[str, FieldSpec] = {}
        for net in self.nets.values():
            out.update(net.extra_scheme())
        return out

    def on_episode_start(self, batch: EpisodeBatch, observation: Observation, test_mode: bool) -> None:
        for net in self.nets.values():  # the whole batch (controllers with per-episode work act for the team)
            net.on_episode_start(batch, observation, test_mode)

    def test_variants(self) -> list[tuple[str, int | None]]:
        return [v for net in self.nets.values() for v in net.test_variants()]

    def set_test_variant(self, suffix: str) -> None:
        for net in self.nets.values():
            net.set_test_variant(suffix)

    def _view(self, batch: EpisodeBatch, g: Group) -> GroupView:
        return GroupView(batch, self.sel[g.name], g.obs_dim, g.n_actions, self.spec.continuous)

    # -- acting -------------------------------------------------------------------------------
    def init_hidden(self, batch_size: int) -> None:
        if self.only:
            self.only[0].init_hidden(batch_size)
            return
        for net in self.nets.values():
            net.init_hidden(batch_size)
        for pol in self.scripted.values():
            pol.reset(batch_size)

    def epsilon(self, t_env: int) -> float:
        return self.nets[self.learning[0].name].epsilon(t_env)

    def exploration_stats(self, t_env: int) -> dict[str, float]:
        return self.nets[self.learning[0].name].exploration_stats(t_env)

    def action_log_std(self, agent: nn.Module | None = None) -> torch.Tensor:
        """[N, A]: each learning group's Gaussian log std in its agents' rows (zeros elsewhere)."""
        if self.only:
            return self.only[0].action_log_std(self._agent_of(agent, self.groups[0]))
        per = {g.name: self.nets[g.name].action_log_std(self._agent_of(agent, g)) for g in self.learning}
        first = next(iter(per.values()))
        return self._scatter(per, (), first)

    def select_actions(self, batch: EpisodeBatch, t: int, t_env: int, test_mode: bool) -> torch.Tensor:
        if self.only:  # no second no_grad context per step: the controller's own method has one
            return self.only[0].select_actions(batch, t, t_env, test_mode)
        with torch.no_grad():
            return self._select_by_group(batch, t, t_env, test_mode)

    def _select_by_group(self, batch: EpisodeBatch, t: int, t_env: int, test_mode: bool) -> torch.Tensor:
        B, spec = batch.batch_size, self.spec
        if spec.continuous:
            actions = torch.zeros(B, spec.n_agents, spec.n_actions, device=batch.device)
        else:
            actions = torch.zeros(B, spec.n_agents, dtype=torch.long, device=batch.device)
        for g in self.groups:
            view = self._view(batch, g)
            if g.name in self.nets:
                a = self.nets[g.name].select_actions(view, t, t_env, test_mode or g.policy == "frozen")
            else:
                avail = view["avail_actions"][:, t]
                if g.policy == "random":
                    a = self._random(g, avail)
                else:
                    a = self._scripted(g, view["obs"][:, t], avail, t)
            if spec.continuous:
                actions[:, self.sel[g.name], : a.shape[-1]] = a
            else:
                actions[:, self.sel[g.name]] = a
        return actions

    def _random(self, g: Group, avail: torch.Tensor) -> torch.Tensor:
        """Uniformly random available actions; continuous: uniform within the bounds (a standard
        normal in unbounded dims)."""
        if not self.spec.continuous:
            return (torch.rand(avail.shape, device=avail.device) * avail).argmax(-1)
        idx = list(g.index)
        low = torch.tensor([self.spec.action_low[i] for i in idx], device=avail.device)[:, : avail.shape[-1]]
        high = torch.tensor([self.spec.action_high[i] for i in idx], device=avail.device)[:, : avail.shape[-1]]
        finite = torch.isfinite(low) & torch.isfinite(high)
        u = torch.rand(avail.shape, device=avail.device)
        uniform = torch.where(finite, low, 0.0) + u * torch.where(finite, high - low, 0.0)
        return torch.where(finite, uniform, torch.randn_like(u)) * avail

    def _scripted(self, g: Group, obs: torch.Tensor, avail: torch.Tensor, t: int) -> torch.Tensor:
        a = self.scripted[g.name](obs, avail, t)
        a = torch.as_tensor(a, device=avail.device)
        if self.spec.continuous:
            if tuple(a.shape) != tuple(avail.shape) or not a.dtype.is_floating_point:
                raise ValueError(
                    f"scripted policy of group '{g.name}' returned {tuple(a.shape)} {a.dtype} actions; "
                    f"expected float actions of shape {tuple(avail.shape)} (batch, agents in the group, action dims)"
                )
            return a.float() * avail
        if tuple(a.shape) != tuple(avail.shape[:2]) or a.dtype.is_floating_point:
            raise ValueError(
                f"scripted policy of group '{g.name}' returned {tuple(a.shape)} {a.dtype} actions; "
                f"expected integer actions of shape {tuple(avail.shape[:2])} (batch, agents in the group)"
            )
        a = a.long()
        ok = (a >= 0) & (a < avail.shape[-1])
        if not bool(ok.all()) or not bool(avail.gather(-1, a.clamp(0, avail.shape[-1] - 1).unsqueeze(-1)).all()):
            raise ValueError(f"scripted policy of group '{g.name}' chose an unavailable action at step {t}")
        return a

    # -- learning -------------------------------------------------------------------------------
    def _scatter(self, per_group: dict[str, torch.Tensor], lead: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """Q-values [*lead, N, A] of every agent (zeros for agents that do not learn)."""
        q = like.new_zeros(*lead, self.spec.n_agents, self.spec.n_actions)
        for g in self.learning:
            q[..., self.sel[g.name], : g.n_actions] = per_group[g.name]
        return q

    def forward_seq(self, batch: EpisodeBatch, agent: nn.Module | None = None, cut: torch.Tensor | None = None) -> torch.Tensor:
        """Q-values [B, T+1, N, A] of every step (rows of non-learning agents are zero)."""
        if self.only:
            return self.only[0].forward_seq(batch, agent=self._agent_of(agent, self.groups[0]), cut=cut)
        qs = {g.name: self.nets[g.name].forward_seq(self._view(batch, g), agent=self._agent_of(agent, g), cut=cut)
              for g in self.learning}
        first = next(iter(qs.values()))
        return self._scatter(qs, tuple(first.shape[:2]), first)

    @torch.no_grad()
    def q_values(self, obs: torch.Tensor, agent: nn.Module | None = None) -> torch.Tensor:
        """Q-values [M, N, A] for M standalone observations [M, N, O] (zeros for non-learning agents)."""
        if self.only:
            return self.only[0].q_values(obs, self._agent_of(agent, self.groups[0]))
        qs = {}
        for g in self.learning:
            o = obs[..., self.sel[g.name], : g.obs_dim]
            qs[g.name] = self.nets[g.name].q_values(o, self._agent_of(agent, g))
        first = next(iter(qs.values()))
        return self._scatter(qs, tuple(first.shape[:1]), first)

    # -- per-group returns --------------------------------------------------------------------------
    def rollout_stats(self, returns: torch.Tensor, env_stats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Adds return_<group> ([B]): the sum of the group's agents' own returns where the env
        reports them (``agent_return/<agent>``), else the team return (a shared team reward).
        The per-agent entries are removed."""
        per_agent = {k.split("/", 1)[1]: env_stats.pop(k) for k in list(env_stats) if k.startswith("agent_return/")}
        for g in self.groups if self.per_group_stats else ():
            if all(a in per_agent for a in g.agents):
                env_stats[f"return_{g.name}"] = torch.stack([per_agent[a].float() for a in g.agents]).sum(0)
            else:
                env_stats[f"return_{g.name}"] = returns.detach().clone()
        return env_stats


def load_frozen(g: Group, sub: EnvSpec, device: torch.device) -> Any:
    """Group g's greedy controller with the network of ``source_group`` in an earlier run's checkpoint."""
    from runner import checkpoint
    from runner.config import typed
    from runner.errors import ConfigError
    from runner.registry import AGENTS

    key = f"groups.{g.name}.checkpoint"
    path, data = checkpoint.load(str(g.node["checkpoint"]))
    src_cfg = OmegaConf.create(data["config"])
    weights = data["learner"]["modules"]["agent"]
    src_groups = src_cfg.get("groups")
    source = g.node.get("source_group")
    if src_groups is None:
        if source is not None:
            raise ConfigError(f"{key}={path}: that run has no agent groups, so source_group={source!r} does not exist (leave it unset)")
    else:
        from runner.groups import normalise

        learned = list(dict.fromkeys(k.split(".", 1)[0] for k in weights))  # its learning groups, in order
        if source is None:
            source = g.name if g.name in learned or len(learned) != 1 else learned[0]
        if source not in learned:
            raise ConfigError(
                f"{key}={path}: group {source!r} did not learn in that run (its learning groups: "
                f"{', '.join(learned)}); set groups.{g.name}.source_group"
            )
        prefix = f"{source}."
        weights = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
        groups = normalise(src_groups)
        node = groups.get(source, {}) if isinstance(groups, dict) else {}
        src_cfg = OmegaConf.merge(src_cfg, {k: node[k] for k in ("controller", "agent") if node.get(k)})
    ctrl_name = src_cfg.controller.name
    if ctrl_name not in CONTROLLERS or AGENT_GROUPS.name not in CONTROLLERS.get(ctrl_name).provides:
        per_group = ", ".join(n for n, c, _ in CONTROLLERS.items() if AGENT_GROUPS.name in c.provides)
        raise ConfigError(f"{key}={path}: its controller is '{ctrl_name}', which acts for the whole team; frozen groups "
                          f"need the network of a per-group controller ({per_group})")
    # the network acts with its own controller (greedy: a Q-network's argmax, a policy's mode, an actor's action)
    net = CONTROLLERS.get(ctrl_name)(typed(src_cfg.controller, CONTROLLERS), typed(src_cfg.agent, AGENTS), sub, device)
    try:
        net.agent.load_state_dict(weights)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:400]
        raise ConfigError(
            f"{key}={path} does not fit group '{g.name}' ({len(g.agents)} agents, obs {g.obs_dim}, "
            f"{g.n_actions} actions): {detail}"
        ) from None
    net.requires_grad_(False)
    net.eval()
    net.source = Path(path)
    return net
