"""The adapter contract, handled once for every Python multi-agent env.

Any env that speaks PettingZoo's ParallelEnv API (PettingZoo envs themselves, and hymarl's shims
for Gymnasium multi-agent envs and SMACv2) is wrapped in a :class:`StandardEnv`, one env copy with
fixed-shape numpy arrays, which the vector envs of :mod:`envs.vector` step in this process or in
worker processes. What it takes care of:

- **Agents that die or leave** (absent from ``env.agents`` or from the observation dict): zero
  observation, and only ``dead_action`` available, so the learner sees fixed shapes and masks.
- **Action masks**: a dict observation ``{"observation": ..., "action_mask": ...}`` or
  ``infos[agent]["action_mask"]``; otherwise every action of the agent's space is available.
- **Global state**: ``env.state()`` when the env has one (``state=auto`` or ``env``), else the
  agents' flattened observations concatenated (``state=concat``).
- **Heterogeneous agents**: observations are flattened and zero-padded to the largest size, plus a
  one-hot of the agent's observation kind when the sizes differ (``obs_kind_flag``); action
  spaces are padded to the largest, with the extra actions masked out.
- **Continuous actions**: every agent has a ``Box`` action space (or every agent a ``Discrete``
  one). An action is a float vector padded to the largest flattened dimension; each live agent
  is sent its own dims, clipped into its bounds, in its space's shape. ``action_bounds`` gives
  unbounded dims a range.
- **Termination vs truncation**: an episode ends when every agent is done; it is truncated
  (bootstrapped) when the env says so. An episode that reaches ``episode_limit`` is cut there and
  counts as ``time_limit`` says, unless the env terminated it itself at that step (LBF and RWARE
  report their time limit as *done*: :class:`envs.gym_ma.GymParallel` makes that a truncation).
- **Rewards**: per-agent rewards are aggregated into the team reward (``reward=sum`` or ``mean``);
  with ``agent_returns`` each agent's own return is reported too (for per-group returns).
- **Infos**: the ``info_keys`` of the last step's infos become per-episode stats, logged as
  ``<key>_mean`` (``test_<key>_mean`` in test phases), e.g. SMAC's ``battle_won_mean``.
- **Seeding**: copy i is reset with ``seed + i`` once, then keeps its own RNG stream; the RNG
  state of envs with a numpy ``np_random`` is saved in checkpoints.

This module imports neither torch nor any env package: it runs inside env worker processes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import numpy as np
from omegaconf import ListConfig

from envs.base import EnvConfig, EnvSpec
from runner.contracts import BOUNDED, CONTINUOUS, DISCRETE, STATE
from runner.errors import ConfigError, check_range, invalid


@dataclass
class AdapterConfig(EnvConfig):
    """Options every adapted (non-native) env has."""

    episode_limit: Any = None
    """Max steps per episode (the buffer's time dimension). None: the limit the env declares
    (PettingZoo ``max_cycles``, Gymnasium ``max_episode_steps``, SMAC's ``episode_limit``)."""
    state: str = "auto"
    """Global state for the mixer: auto (env.state() if the env has one, else concat), env, concat."""
    reward: str = "sum"
    """How per-agent rewards become the team reward: sum or mean."""
    time_limit: str = "truncated"
    """How an episode that reaches episode_limit counts: truncated (bootstrapped; right for envs
    that report their time limit as done, like LBF and RWARE), terminated, or env (the env's own
    flags; truncated if cut by episode_limit before the env ended it)."""
    obs_norm: bool = False
    """Scale observations and the state to [0, 1] by their spaces' bounds (where finite)."""
    obs_kind_flag: bool = True
    """Agents with different observation sizes: append a one-hot of the agent's observation kind."""
    dead_action: int = 0
    """The one action available to an agent that is dead or has left (its action is not sent).
    Discrete actions only."""
    action_bounds: Any = None
    """Continuous actions: ``[low, high]`` replacing the infinite bounds of the agents' ``Box``
    action spaces (finite bounds stay), so that actors needing bounded actions can run the env.
    None: the spaces' own bounds."""
    info_keys: list[str] = field(default_factory=list)
    """Keys of the last step's infos logged per episode as <key>_mean (e.g. battle_won)."""
    agent_returns: bool = False
    """Also report each agent's own episode return (per-episode stats ``agent_return/<agent>``).
    Turned on when agent groups are configured: they become the per-group returns."""
    t_max: int = 200_000
    test_interval: int = 10_000
    log_interval: int = 10_000


STATE_MODES = ("auto", "env", "concat")
REWARD_MODES = ("sum", "mean")
TIME_LIMIT_MODES = ("truncated", "terminated", "env")


def check_adapter_config(cfg: Any) -> list[str]:
    """Checks shared by every adapted env (keys are under ``env.``)."""
    env, errs = cfg, []
    for key, allowed in (("state", STATE_MODES), ("reward", REWARD_MODES), ("time_limit", TIME_LIMIT_MODES)):
        if env[key] not in allowed:
            errs.append(f"env.{key}={env[key]} is invalid: must be one of {', '.join(allowed)}")
    if env.episode_limit is not None:
        check_range(errs, "env.episode_limit", env.episode_limit, 1, float("inf"))
    if env.dead_action < 0:
        errs.append(f"env.dead_action={env.dead_action} is invalid: must be >= 0")
    if env.action_bounds is not None:
        rule = _bounds_rule(env.action_bounds)
        if rule:
            errs.append(invalid("env.action_bounds", _plain(env.action_bounds), rule))
    return errs


def _plain(value: Any) -> Any:
    """An OmegaConf list as a plain list (for messages); anything else as it is."""
    return list(value) if isinstance(value, ListConfig) else value


def _bounds_rule(value: Any) -> str:
    """Why ``value`` is not a valid ``env.action_bounds`` (empty: it is valid)."""
    value = _plain(value)
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        return "must be a pair [low, high] of finite numbers"
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in value):
        return "low and high must be finite numbers"
    if not value[0] < value[1]:
        return "low must be below high"
    return ""


class AdapterEnv:
    """Base of the registered adapted envs. They are not batched natively: a runner builds copies
    with :meth:`make_single` and steps them in a vector env (:mod:`envs.vector`). The contract of a
    registered env class (see :mod:`runner.contracts`): ``natively_batched``, ``provides``,
    ``requires``, ``reports_agent_returns``, ``check_config(cfg)`` of its own config node and
    ``one_copy_per_process(cfg)``."""

    natively_batched: ClassVar[bool] = False
    # what an adapted env may provide; its spec tells which it does (EnvSpec.provides, checked at build)
    provides: ClassVar[frozenset[str]] = frozenset({DISCRETE.name, CONTINUOUS.name, BOUNDED.name, STATE.name})
    requires: ClassVar[frozenset[str]] = frozenset()
    reports_agent_returns: ClassVar[bool] = True
    """``env.agent_returns`` exists: with agent groups, each agent's own return is reported."""

    @classmethod
    def one_copy_per_process(cls, cfg: Any) -> tuple[str, str] | None:
        """(why, what else to do) when every copy needs a process of its own (e.g. libsumo); else None."""
        return None

    @classmethod
    def make_parallel(cls, cfg: Any) -> Any:
        """A fresh env speaking PettingZoo's ParallelEnv API."""
        raise NotImplementedError

    @classmethod
    def make_single(cls, cfg: Any, seed: int) -> StandardEnv:
        return StandardEnv(cls.make_parallel(cfg), cfg, seed, label=cls.label(cfg))

    @classmethod
    def label(cls, cfg: Any) -> str:
        return f"env '{cfg.name}'"

    @classmethod
    def check_config(cls, cfg: Any) -> list[str]:
        return check_adapter_config(cfg)


def make_copy(env_cls: Any, cfg: Any, seed: int, index: int) -> StandardEnv:
    """Env copy ``index`` (seeded with seed + index); picklable as a partial for worker processes."""
    return env_cls.make_single(cfg, seed + index)


Bounds = tuple[tuple[float, ...], ...]
"""Per agent, per action dim: one side of the continuous action bounds (as in EnvSpec)."""


class Arrays(NamedTuple):
    """One copy's observation, as fixed-shape arrays."""

    obs: np.ndarray  # [N, obs_dim] float32
    state: np.ndarray  # [state_dim] float32
    avail: np.ndarray  # [N, n_actions] bool


class Transition(NamedTuple):
    arrays: Arrays
    reward: float
    terminated: bool
    truncated: bool


def _space_parts(space: Any) -> tuple[Any, bool]:
    """(the observation space proper, whether observations carry an action mask)."""
    spaces = getattr(space, "spaces", None)
    if isinstance(spaces, dict) and "observation" in spaces:
        return spaces["observation"], "action_mask" in spaces
    return space, False


def _flat_size(space: Any) -> int:
    shape = getattr(space, "shape", None)
    if shape is None:
        raise ConfigError(f"observation space {space} has no shape: hymarl needs array observations")
    return int(np.prod(shape)) if len(shape) else 1


def _bounds_scale(space: Any) -> tuple[np.ndarray, np.ndarray]:
    """(offset, factor) mapping a Box's finite bounds to [0, 1]; identity where a bound is infinite."""
    size = _flat_size(space)
    low = np.broadcast_to(np.asarray(getattr(space, "low", -np.inf), np.float64), getattr(space, "shape", ())).reshape(-1)
    high = np.broadcast_to(np.asarray(getattr(space, "high", np.inf), np.float64), getattr(space, "shape", ())).reshape(-1)
    if low.size != size:
        low, high = np.full(size, -np.inf), np.full(size, np.inf)
    finite = np.isfinite(low) & np.isfinite(high) & (high > low)
    offset = np.where(finite, low, 0.0).astype(np.float32)
    factor = np.where(finite, 1.0 / np.where(finite, high - low, 1.0), 1.0).astype(np.float32)
    return offset, factor


def _is_discrete(space: Any) -> bool:
    return hasattr(space, "n") and getattr(space, "shape", None) in ((), None)


def _is_box(space: Any) -> bool:
    return all(hasattr(space, k) for k in ("low", "high", "shape")) and not hasattr(space, "n")


def _action_kind(spaces: list[Any], agents: tuple[str, ...], label: str) -> str:
    """'discrete' when every agent's action space is Discrete, 'box' when every one is a Box;
    anything else is refused (the runner's actions are one tensor of one kind for the team)."""
    for a, space in zip(agents, spaces):
        if not (_is_discrete(space) or _is_box(space)):
            raise ConfigError(f"{label}: agent '{a}' has action space {space}; hymarl needs Discrete or Box actions")
    kinds = {"discrete" if _is_discrete(s) else "box" for s in spaces}
    if len(kinds) > 1:
        each = ", ".join(f"'{a}': {s}" for a, s in zip(agents, spaces))
        raise ConfigError(f"{label} mixes Discrete and Box action spaces ({each}); hymarl needs every agent's "
                          "actions Discrete or every agent's Box")
    return kinds.pop()


def declared_episode_limit(env: Any) -> int | None:
    """The time limit an env declares, looked up where PettingZoo, Gymnasium and SMAC keep it."""
    seen, todo = set(), [env]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        for attr in ("episode_limit", "max_cycles", "_max_episode_steps", "max_episode_steps", "max_steps"):
            v = getattr(e, attr, None) if attr in _own_attrs(e) else None
            if isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0:
                return int(v)
        spec = getattr(e, "spec", None)
        v = getattr(spec, "max_episode_steps", None)
        if isinstance(v, int) and v > 0:
            return v
        for attr in ("aec_env", "env", "unwrapped"):
            todo.append(getattr(e, attr, None))
    return None


def _own_attrs(obj: Any) -> set[str]:
    """Attribute names set on the object or its class (not forwarded by a wrapper's __getattr__)."""
    names = set(getattr(obj, "__dict__", {}))
    for klass in type(obj).__mro__:
        names.update(vars(klass))
    return names


def _np_random(env: Any) -> Any:
    """The env's numpy Generator, if it keeps one where Gymnasium/PettingZoo do (or, like SISL,
    in the simulator that the unwrapped env keeps as ``env``)."""
    unwrapped = getattr(env, "unwrapped", None)
    for e in (unwrapped, getattr(getattr(env, "aec_env", None), "unwrapped", None), env, getattr(unwrapped, "env", None)):
        gen = getattr(e, "_np_random", None) or getattr(e, "np_random", None) if e is not None else None
        if isinstance(gen, np.random.Generator):
            return gen
    return None


class StandardEnv:
    """One copy of a ParallelEnv-API env, with hymarl's fixed shapes. Not thread-safe."""

    def __init__(self, env: Any, cfg: Any, seed: int, label: str = "env") -> None:
        self.env, self.cfg, self.seed, self.label = env, cfg, seed, label
        self.agents = tuple(env.possible_agents)
        n = len(self.agents)
        if n == 0:
            raise ConfigError(f"{label} has no agents (possible_agents is empty)")
        self.obs_sizes, self.n_actions, self.mask_in_obs = [], [], []
        self.obs_scale: list[tuple[np.ndarray, np.ndarray] | None] = []
        act_spaces = [env.action_space(a) for a in self.agents]
        self.continuous = _action_kind(act_spaces, self.agents, label) == "box"
        for a, act in zip(self.agents, act_spaces):
            space, has_mask = _space_parts(env.observation_space(a))
            self.obs_sizes.append(_flat_size(space))
            self.obs_scale.append(_bounds_scale(space) if cfg.obs_norm else None)
            self.mask_in_obs.append(has_mask)
            self.n_actions.append(_flat_size(act) if self.continuous else int(act.n))
        kinds = sorted(set(self.obs_sizes))
        self.kind = [kinds.index(s) for s in self.obs_sizes]
        self.flag_dim = len(kinds) if (cfg.obs_kind_flag and len(kinds) > 1) else 0
        self.obs_dim = max(self.obs_sizes) + self.flag_dim
        self.max_actions = max(self.n_actions)
        low: Bounds = ()
        high: Bounds = ()
        if self.continuous:
            low, high = self._action_bounds(act_spaces, cfg.action_bounds)
            self.act_shapes = [tuple(act.shape) for act in act_spaces]
            # clip bounds as arrays (inf where a dim is unbounded: np.clip leaves it alone)
            self.act_clip = [(np.asarray(lo[:d], np.float32), np.asarray(hi[:d], np.float32))
                             for lo, hi, d in zip(low, high, self.n_actions)]
        elif not 0 <= cfg.dead_action < min(self.n_actions):
            raise ConfigError(
                f"env.dead_action={cfg.dead_action} is invalid: {label} has agents with only "
                f"{min(self.n_actions)} actions"
            )

        self.env_state = cfg.state != "concat" and self._has_state()
        if cfg.state == "env" and not self.env_state:
            raise ConfigError(f"env.state=env is invalid: {label} has no state() (use state=auto or concat)")
        self.state_dim = _flat_size(env.state_space) if self.env_state else sum(self.obs_sizes)
        self.state_scale = _bounds_scale(env.state_space) if (cfg.obs_norm and self.env_state) else None

        limit = cfg.episode_limit if cfg.episode_limit is not None else declared_episode_limit(env)
        if limit is None:
            raise ConfigError(
                f"env.episode_limit is required for {label}: the env does not declare a time limit "
                "(set env.episode_limit=<max steps per episode>)"
            )
        self.limit = int(limit)
        self.spec = EnvSpec(n, self.max_actions, self.obs_dim, self.state_dim, self.limit, self.agents,
                            tuple(self.obs_sizes), tuple(self.n_actions), self.continuous, low, high)

        self._obs = np.zeros((n, self.obs_dim), np.float32)
        self._avail = np.zeros((n, self.max_actions), bool)
        self._state = np.zeros(self.state_dim, np.float32)
        for i, k in enumerate(self.kind):
            if self.flag_dim:
                self._obs[i, max(self.obs_sizes) + k] = 1.0
        self._full_rows = np.arange(self.max_actions)[None, :] < np.array(self.n_actions)[:, None]
        # continuous: a dead agent's row stays its own dims (its action is not sent), so actions keep their shape
        self._dead_rows = self._full_rows if self.continuous else np.broadcast_to(
            np.arange(self.max_actions) == cfg.dead_action, self._full_rows.shape)
        self._same_size = len(kinds) == 1
        self.t = 0
        self.done = True
        self.seeded = False
        self.pending_rng: Any = None
        self.stats: dict[str, float] = {}
        self._agent_index = {a: i for i, a in enumerate(self.agents)}
        self._agent_ret = np.zeros(n, np.float64)

    def _action_bounds(self, spaces: list[Any], override: Any) -> tuple[Bounds, Bounds]:
        """(low, high) per agent, flattened and padded to n_actions with -1/1; ``env.action_bounds``
        replaces the infinite bounds."""
        lows, highs = [], []
        for a, space, d in zip(self.agents, spaces, self.n_actions):
            lo = np.broadcast_to(np.asarray(space.low, np.float64), space.shape).reshape(-1)
            hi = np.broadcast_to(np.asarray(space.high, np.float64), space.shape).reshape(-1)
            if override is not None:
                lo = np.where(np.isinf(lo), float(override[0]), lo)
                hi = np.where(np.isinf(hi), float(override[1]), hi)
                bad = np.flatnonzero(~(lo < hi))
                if bad.size:
                    j = int(bad[0])
                    raise ConfigError(invalid("env.action_bounds", _plain(override),
                                              f"agent '{a}' of {self.label} would have action dim {j} "
                                              f"in [{lo[j]}, {hi[j]}], an empty range"))
            pad = self.max_actions - d
            lows.append(tuple(map(float, lo)) + (-1.0,) * pad)
            highs.append(tuple(map(float, hi)) + (1.0,) * pad)
        return tuple(lows), tuple(highs)

    def _has_state(self) -> bool:
        try:
            space = self.env.state_space
        except (AttributeError, NotImplementedError):
            return False
        return space is not None

    # -- episode -------------------------------------------------------------------------------
    def reset(self) -> Arrays:
        if not self.seeded:  # (an RNG state saved before the first reset is this seed's)
            obs, infos = self.env.reset(seed=self.seed)
            self.seeded, self.pending_rng = True, None
        elif self.pending_rng is not None:
            obs, infos = self._reset_with_rng()
        else:
            obs, infos = self.env.reset()
        self.t, self.done, self.stats = 0, False, {}
        self._agent_ret[:] = 0.0
        return self._observe(obs, infos)

    def step(self, actions: np.ndarray) -> Transition:
        """Apply the joint action: [N] action indices, or [N, n_actions] floats with continuous actions."""
        if self.done:  # the vector contract: an ended copy repeats its last observation, reward 0
            return Transition(self._arrays(), 0.0, False, False)
        live = set(self.env.agents)
        if self.continuous:
            sent = self._continuous_actions(actions, live)
        else:
            acts = np.asarray(actions).tolist()
            avail = self._avail
            for i, x in enumerate(acts):
                if not avail[i, x]:
                    raise ValueError(f"{self.label}: agent '{self.agents[i]}' was given unavailable action {x}")
            sent = {a: x for a, x in zip(self.agents, acts) if a in live}
        obs, rewards, terms, truncs, infos = self.env.step(sent)
        self.t += 1
        values = [float(r) for r in rewards.values()]
        if self.cfg.agent_returns:
            for a, r in rewards.items():
                if a in self._agent_index:
                    self._agent_ret[self._agent_index[a]] += float(r)
        reward = (sum(values) if self.cfg.reward == "sum" else sum(values) / len(values)) if values else 0.0
        remaining = set(self.env.agents)
        ended = not remaining or all(terms.get(a) or truncs.get(a) for a in remaining)
        truncated = ended and any(truncs.get(a) for a in sent) and not all(terms.get(a) for a in sent)
        if self.t >= self.limit:
            if self.cfg.time_limit != "env":  # LBF/RWARE report their time limit as done
                ended, truncated = True, self.cfg.time_limit == "truncated"
            elif not ended:  # cut by episode_limit before the env's own limit: a truncation
                ended, truncated = True, True
        arrays = self._observe(obs, infos, remaining, ended)
        if ended:
            self.done = True
            self.stats = self._episode_stats(infos)
        return Transition(arrays, reward, ended and not truncated, ended and truncated)

    def _continuous_actions(self, actions: np.ndarray, live: set[str]) -> dict[str, np.ndarray]:
        """Each live agent's own action dims, clipped into its bounds, in its space's shape."""
        acts = np.asarray(actions, dtype=np.float32)
        if acts.shape != self._avail.shape:
            raise ValueError(f"{self.label}: continuous actions must have shape {self._avail.shape} "
                             f"(agents, action dims), got {acts.shape}")
        sent = {}
        for i, a in enumerate(self.agents):
            if a not in live:
                continue
            x = acts[i, : self.n_actions[i]]
            if np.isnan(x).any():
                raise ValueError(f"{self.label}: agent '{a}' was given a NaN action {x.tolist()}")
            lo, hi = self.act_clip[i]
            sent[a] = np.clip(x, lo, hi).reshape(self.act_shapes[i])
        return sent

    def _observe(self, obs: dict[str, Any], infos: dict[str, Any], live: set[str] | None = None,
                 ended: bool = False) -> Arrays:
        if live is None:
            live = set(self.env.agents)
        obs_buf, avail, dead = self._obs, self._avail, self.cfg.dead_action
        cont = self.continuous
        for i, a in enumerate(self.agents):
            o = obs.get(a)
            size = self.obs_sizes[i]
            # at the episode's end PettingZoo has emptied env.agents, but the final observations
            # (and their masks, which a truncated episode bootstraps from) still count
            if o is None or not (ended or a in live):
                obs_buf[i, :size] = 0.0  # padding and kind flags never change
                avail[i] = self._dead_rows[i]
                continue
            mask = None
            if self.mask_in_obs[i] and isinstance(o, dict):
                mask, o = o.get("action_mask"), o["observation"]
            elif not cont:  # a Box has no actions to mask
                info = infos.get(a)
                if info and "action_mask" in info:
                    mask = info["action_mask"]
            flat = np.asarray(o, dtype=np.float32).reshape(-1)
            scale = self.obs_scale[i]
            if scale is not None:
                lo, inv = scale
                flat = (flat - lo) * inv
            obs_buf[i, :size] = flat
            if mask is None or cont:
                avail[i] = self._full_rows[i]
            else:
                m = np.asarray(mask).reshape(-1)[: self.n_actions[i]].astype(bool)
                avail[i] = False
                avail[i, : self.n_actions[i]] = m
                if not m.any():  # nothing available: the agent can only wait
                    avail[i, dead] = True
        if self.env_state:
            state = np.asarray(self.env.state(), dtype=np.float32).reshape(-1)
            if self.state_scale is not None:
                state = (state - self.state_scale[0]) * self.state_scale[1]
            self._state[:] = state
        elif self._same_size:
            self._state[:] = self._obs[:, : self.obs_sizes[0]].reshape(-1)
        else:
            self._state[:] = np.concatenate([self._obs[i, :size] for i, size in enumerate(self.obs_sizes)])
        return self._arrays()

    def _arrays(self) -> Arrays:
        return Arrays(self._obs.copy(), self._state.copy(), self._avail.copy())

    def _episode_stats(self, infos: dict[str, Any]) -> dict[str, float]:
        out = {}
        for key in self.cfg.info_keys:
            vals = [float(d[key]) for d in infos.values() if isinstance(d, dict) and key in d]
            out[key] = float(np.mean(vals)) if vals else 0.0
        if self.cfg.agent_returns:
            out.update({f"agent_return/{a}": float(r) for a, r in zip(self.agents, self._agent_ret)})
        return out

    def episode_stats(self) -> dict[str, float]:
        keys = list(self.cfg.info_keys)
        if self.cfg.agent_returns:
            keys += [f"agent_return/{a}" for a in self.agents]
        return {k: self.stats.get(k, 0.0) for k in keys}

    # -- RNG (checkpoints) ------------------------------------------------------------------------
    def get_rng_state(self) -> Any:
        gen = _np_random(self.env)
        return {"seeded": self.seeded, "np_random": gen.bit_generator.state if gen is not None else None}

    def set_rng_state(self, state: Any) -> None:
        if state is None:
            return
        self.seeded = bool(state["seeded"])
        self.pending_rng = state["np_random"]

    def _reset_with_rng(self) -> tuple[Any, Any]:
        """Restore a saved RNG stream: one seeded reset creates the generator, then its state is
        overwritten and the episode is generated by a second reset from the restored stream."""
        self.env.reset(seed=self.seed)
        gen = _np_random(self.env)
        if gen is not None:
            gen.bit_generator.state = self.pending_rng
        self.pending_rng = None
        return self.env.reset()

    def close(self) -> None:
        self.env.close()
