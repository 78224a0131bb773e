"""The contracts between hymarl's components, in one place: start here to add one.

A run is built from one option of each config group (``env``, ``agent``, ``mixer``, ``controller``,
``learner``, ``runner``, ``buffer``) plus its loggers. Each kind of component has a base class
below whose methods are either the contract (raise ``NotImplementedError`` until implemented) or a
no-op default, so a component overrides only what it does and nothing probes another with
``hasattr``:

- :class:`Component`: what every registered part declares: ``provides`` and ``requires``
  (capabilities, below) and ``check_config(cfg)``, which sees the component's own config node only
  and returns error strings naming key and value (cross-component rules live in
  :func:`check_parts`).
- :class:`RolloutHooks`: what a controller or learner may add to the env loop: extra per-episode
  buffer fields, work at episode start, extra test phases, per-episode stats.
- :class:`Controller`, :class:`Learner`, :class:`Runner`, :class:`Buffer`, :class:`Logger`.
- Envs (``envs/base.py``: ``VecEnv`` for natively batched envs, ``envs/adapter.py``: ``AdapterEnv``
  for envs copied into worker processes), agent networks (``modules/agents``) and mixers
  (``modules/mixers``) sit below ``runner`` and declare the same ``provides``/``requires`` class
  attributes with the names below (agents also ``recurrent``, mixers ``joint``).

**Capabilities** are short strings. A part lists what it provides and what it requires of the
others; :func:`check_parts` checks the combination once, from the config, before anything is built
or any run exists, and names the parts: ``controller=maven needs a latent-conditioned agent:
agent=noise_gru (got agent='gru')``. The actor-critic family adds ``ON_POLICY``/``CONTINUOUS``
providers and requirers without touching the loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # annotations only: env worker processes import this module without torch
    import torch

    from envs.base import Observation
    from runner.buffers.episode import EpisodeBatch, FieldSpec


# -- capabilities -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Capability:
    name: str
    group: str
    """The config group whose options provide it (where the error looks for alternatives)."""
    what: str
    """How an error names it: '<part> needs <what>: <providers> (got ...)'."""


DISCRETE = Capability("discrete", "env", "discrete actions")
CONTINUOUS = Capability("continuous", "env", "continuous actions")
STATE = Capability("state", "env", "an env with a global state")
BOUNDED = Capability("bounded_actions", "env", "bounded continuous actions (a Box with finite low and high)")
OFF_POLICY = Capability("off_policy", "buffer", "a replay buffer of stored episodes (off-policy data)")
ON_POLICY = Capability("on_policy", "buffer", "the episodes of the latest rollout only (on-policy data)")
SEQUENCES = Capability("sequences", "buffer", "whole episodes from the buffer (a recurrent network)")
LATENT = Capability("latent", "controller", "a latent z drawn per episode")
CONDITIONED = Capability("conditioned", "agent", "a latent-conditioned agent")
STOCHASTIC = Capability("stochastic_policy", "controller", "a stochastic policy")  # outputs: a distribution's parameters
DETERMINISTIC = Capability("deterministic_policy", "controller", "deterministic actors")  # outputs: actions
AGENT_GROUPS = Capability("agent_groups", "controller", "a controller that acts per agent group")
JOINT_MIXER = Capability("joint_mixer", "mixer", "a mixer of the agents' Q-values into a joint Q_tot")
NO_MIXER = Capability("no_mixer", "mixer", "no mixer (it learns its own joint value networks)")
DUELING_MIXER = Capability("dueling_mixer", "mixer", "QPLEX's duplex dueling mixer")
ACTION_INPUTS = Capability("action_inputs", "learner", "a learner that gives the mixer the joint action and the agents' max Q")

CAPABILITIES = {c.name: c for c in (DISCRETE, CONTINUOUS, STATE, BOUNDED, OFF_POLICY, ON_POLICY, SEQUENCES, LATENT,
                                    CONDITIONED, STOCHASTIC, DETERMINISTIC, AGENT_GROUPS, JOINT_MIXER, NO_MIXER,
                                    DUELING_MIXER, ACTION_INPUTS)}
# what only an env's spec can tell (EnvSpec.provides): checked again when the env is built
SPEC_CAPABILITIES = frozenset({DISCRETE.name, CONTINUOUS.name, STATE.name, BOUNDED.name})
GROUPS = ("env", "learner", "mixer", "controller", "agent", "runner", "buffer")  # the order errors are reported in


class Component:
    """What every registered part declares. ``provides``/``requires`` hold capability names."""

    provides: ClassVar[frozenset[str]] = frozenset()
    requires: ClassVar[frozenset[str]] = frozenset()

    @staticmethod
    def check_config(cfg: Any) -> list[str]:
        """Errors of this component's own config node (``cfg`` is that node, not the root)."""
        return []


# -- the env loop's hooks -------------------------------------------------------------------------
class RolloutHooks:
    """What a controller or learner may add to the runner's loop; every default does nothing."""

    def extra_scheme(self) -> dict[str, FieldSpec]:
        """More per-step or per-episode fields of the episode batch (e.g. MAVEN's latent ``noise``)."""
        return {}

    def on_episode_start(self, batch: EpisodeBatch, observation: Observation, test_mode: bool) -> None:
        """Called after every reset with the first observation of every env copy."""

    def test_variants(self) -> list[tuple[str, int | None]]:
        """More test phases: (suffix, episodes or None for test_nepisodes); their stats are logged as
        test_*<suffix>, after :meth:`set_test_variant` (suffix) is called on every hook."""
        return []

    def set_test_variant(self, suffix: str) -> None:
        """The test phase about to run ('' = the plain one, and after the last variant)."""

    def rollout_stats(self, returns: torch.Tensor, env_stats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-episode stats ([B] each) of a rollout, given its returns: add or remove entries."""
        return env_stats


class Controller(Component, RolloutHooks):
    """Builds agent inputs, runs the agent network, selects actions; gives the learner Q-values.

    The learner trains ``agent`` (a module). ``learn_idx``: the agents whose values are learned (None:
    all of them, in order); ``learn_positions``: each learning group's positions among them, for
    per-group stats (empty: no per-group stats)."""

    agent: Any
    supports_q_tables: bool = False
    learn_idx: torch.Tensor | None = None
    learn_positions: dict[str, list[int]] = {}  # noqa: RUF012 (read-only default)

    def init_hidden(self, batch_size: int) -> None:
        raise NotImplementedError

    def epsilon(self, t_env: int) -> float:
        """The exploration rate of epsilon-greedy acting."""
        raise NotImplementedError

    def exploration_stats(self, t_env: int) -> dict[str, float]:
        """The exploration stats logged with the train stats (stochastic policies: none; their
        learner logs the entropy; deterministic actors: the noise scale)."""
        return {"epsilon": self.epsilon(t_env)}

    def select_actions(self, batch: EpisodeBatch, t: int, t_env: int, test_mode: bool) -> torch.Tensor:
        raise NotImplementedError

    def forward_seq(self, batch: EpisodeBatch, agent: Any = None, cut: torch.Tensor | None = None) -> torch.Tensor:
        """Values [B, T+1, N, A] of every step of a batch (with ``agent``: e.g. a target network).
        ``cut`` [B] (recurrent agents): the hidden state entering step cut[b] of episode b is detached,
        so gradients of later steps stop there (truncated backpropagation through time in chunks)."""
        raise NotImplementedError

    def q_values(self, obs: torch.Tensor, agent: Any = None) -> torch.Tensor:
        """Values [M, N, A] of M standalone first-step observations [M, N, O]."""
        raise NotImplementedError

    def action_log_std(self, agent: Any = None) -> torch.Tensor:
        """A Gaussian policy's log standard deviation [N, A] of every agent's action dims (continuous
        actions; the mean comes from :meth:`forward_seq`)."""
        raise NotImplementedError


class Learner(Component, RolloutHooks):
    """Trains the controller's ``agent`` (and its own modules) from sampled batches."""

    def updates_due(self, steps: int, episodes: int) -> int:
        """How many updates (each on a fresh sample of ``batch_size``) follow a rollout of ``steps``
        env steps and ``episodes`` episodes, once the buffer can be sampled. Default: one per rollout
        (PyMARL's loop); a learner that learns every k env steps counts them here and checkpoints its
        count."""
        return 1

    def train(self, batch: EpisodeBatch, t_env: int, episodes: int = 1) -> dict[str, float]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any], weights_only: bool = False) -> None:
        raise NotImplementedError

    def q_table(self, obs: torch.Tensor, state: torch.Tensor, avail: torch.Tensor) -> dict[str, Any] | None:
        """Learned values at one state for the end-of-run Q tables (None: this learner has none)."""
        return None


class Buffer(Component):
    @classmethod
    def slots_per_entry(cls, max_t: int) -> int:
        """Time slots of one stored entry (memory estimates): a whole episode and its bootstrap slot by
        default; a buffer of single transitions stores 2."""
        return max_t + 1

    def insert(self, batch: EpisodeBatch) -> None:
        raise NotImplementedError

    def can_sample(self, n: int) -> bool:
        raise NotImplementedError

    def sample(self, n: int) -> EpisodeBatch:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise NotImplementedError


class Runner(Component):
    """Owns the env copies and the env loop. ``should_abort`` (set by the experiment) is asked
    before every env step; True abandons the rollout."""

    should_abort: Callable[[], bool] | None = None

    @staticmethod
    def copies(cfg: Any) -> int:
        raise NotImplementedError

    @staticmethod
    def workers(cfg: Any, n: int) -> int:
        raise NotImplementedError

    def run(self, t_env: int, test_mode: bool = False) -> Any:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


@dataclass
class RunInfo:
    """What a logger needs to open a run."""

    config: dict[str, Any]  # resolved config
    tags: dict[str, str]
    run_name: str
    run_dir: Path
    hydra_dir: Path | None
    resume_state: dict[str, Any] = field(default_factory=dict)  # from a checkpoint: reopen that run
    t_env_start: int = 0


class Logger(Component):
    """Loggers listen, they never drive; every method is optional for a backend."""

    def start(self, info: RunInfo) -> None:
        pass

    def log_stat(self, key: str, value: float, t_env: int) -> None:
        pass

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        pass

    def end_round(self, t_env: int) -> None:
        """Every stat of one log round at ``t_env`` has been logged (the train stats of a log
        interval): e.g. the console prints its line here. No key order is implied."""

    def flush(self) -> None:
        pass

    def state(self) -> dict[str, Any]:
        """What a checkpoint must keep to continue this run on resume."""
        return {}

    def describe(self) -> str | None:
        """One line for the end-of-run summary (e.g. where to find the run)."""
        return None

    def finish(self, status: str, error: str | None = None) -> None:
        """status: FINISHED, FAILED or KILLED."""


# -- the combination check ------------------------------------------------------------------------
MAX_ALTERNATIVES = 6


def check_parts(chosen: dict[str, tuple[str, Any]], registries: dict[str, Any]) -> list[str]:
    """Every capability a chosen part requires is provided by another chosen part.

    ``chosen``: group -> (option name, registered class); ``registries``: group -> its registry (to
    name the options that would provide a missing capability). One error per missing capability.
    """
    provided = {cap for _name, cls in chosen.values() for cap in cls.provides}
    errors = []
    for group in GROUPS:
        if group not in chosen:
            continue
        name, cls = chosen[group]
        for cap_name in sorted(cls.requires - provided):
            cap = CAPABILITIES[cap_name]
            alternatives = [n for n, part, _cfg in registries[cap.group].items() if cap_name in part.provides]
            shown = ", ".join(f"{cap.group}={n}" for n in alternatives[:MAX_ALTERNATIVES])
            if len(alternatives) > MAX_ALTERNATIVES:
                shown += ", ..."
            got = chosen[cap.group][0] if cap.group in chosen else None
            errors.append(f"{group}={name} needs {cap.what}: {shown or 'no registered ' + cap.group + ' provides it'} "
                          f"(got {cap.group}={got!r})")
    return errors
