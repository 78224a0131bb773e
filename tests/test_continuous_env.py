"""Continuous (Gymnasium ``Box``) action spaces through the env adapters.

Real mpe2 envs with ``continuous_actions: true`` (the ``pz_*_continuous`` presets) and a tiny
ParallelEnv with Box spaces that records what it is sent (``tests/fakes/box_env.py``): the spec
(dims, bounds, availability, capabilities), clipping into the bounds, ``env.action_bounds`` for
unbounded spaces, refused spaces and values, the same results in this process and in worker
processes, and a value-based algorithm refused before any MLflow run exists.
"""

from __future__ import annotations

import functools
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from envs.adapter import StandardEnv, make_copy
from envs.vector import SubprocVecEnv, SyncVecEnv
from runner import registry
from runner.build import build, typed
from runner.config import ConfigError, validate
from tests.conftest import compose, runs_of, train

BOX = "tests.fakes.box_env.box_env"
"""The fake Box env's factory, as a config names it (worker processes import it by this path)."""
BOX_LABEL = f"env 'pettingzoo' ({BOX})"
CPU = torch.device("cpu")


def _env_cfg(*overrides: str) -> tuple[Any, Any]:
    cfg = compose("+algo=qmix", *overrides)
    return registry.ENVS.get(cfg.env.name), typed(cfg.env, registry.ENVS)


def _single(*overrides: str) -> StandardEnv:
    env_cls, env_cfg = _env_cfg(*overrides)
    return env_cls.make_single(env_cfg, 0)


def _box(kind: str = "bounded", *extra: str) -> tuple[str, ...]:
    """Overrides for the fake Box env through the pettingzoo adapter."""
    return ("+env=pettingzoo", f"env.factory={{_target_: {BOX}, kind: {kind}}}", *extra)


def _exact(msg: str) -> str:
    return f"^{re.escape(msg)}$"


# -- the spec ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("preset", "agents", "dims"), [
    ("pz_simple_spread_continuous", ("agent_0", "agent_1", "agent_2"), (5, 5, 5)),
    ("pz_simple_speaker_listener_continuous", ("speaker_0", "listener_0"), (3, 5)),
])
def test_the_continuous_presets_describe_their_box_actions(preset: str, agents: tuple[str, ...],
                                                           dims: tuple[int, ...]) -> None:
    validate(compose("+algo=qmix", f"+env={preset}"))
    env = _single(f"+env={preset}")
    try:
        spec = env.spec
        assert spec.continuous and spec.bounded
        assert spec.agent_ids == agents and spec.n_actions == 5 and spec.agent_n_actions == dims
        # mpe2 1.1.1: every action is a Box(0, 1, (d,)); padded dims are -1/1
        assert spec.action_low == tuple((0.0,) * d + (-1.0,) * (5 - d) for d in dims)
        assert spec.action_high == tuple((1.0,) * 5 for _ in dims)
        assert spec.provides() == {"continuous", "bounded_actions", "state"}
        avail = env.reset().avail
        assert avail.tolist() == [[j < d for j in range(5)] for d in dims]
        tr = env.step(np.full((len(agents), 5), 0.5, np.float32))
        assert tr.arrays.avail.tolist() == avail.tolist() and math.isfinite(tr.reward)
    finally:
        env.close()


# -- what the env receives --------------------------------------------------------------------------
def test_actions_out_of_bounds_are_clipped_and_sent_in_the_spaces_shape() -> None:
    env = _single(*_box("bounded"))
    try:
        spec = env.spec  # agent_0: Box(-1, 2, (2,)); agent_1: Box(0, 1, (1, 3))
        assert (spec.n_actions, spec.agent_n_actions) == (3, (2, 3))
        assert spec.action_low == ((-1.0, -1.0, -1.0), (0.0, 0.0, 0.0))
        assert spec.action_high == ((2.0, 2.0, 1.0), (1.0, 1.0, 1.0))
        assert env.reset().avail.tolist() == [[True, True, False], [True, True, True]]
        env.step(np.array([[-5.0, 0.5, 9.0], [1.5, -0.25, 0.75]]))  # float64, padding dim out of bounds
        sent = env.env.received[-1]
        assert sent["agent_0"].dtype == sent["agent_1"].dtype == np.float32
        assert sent["agent_0"].shape == (2,) and sent["agent_1"].shape == (1, 3)
        assert sent["agent_0"].tolist() == [-1.0, 0.5]  # the padding dim is not sent
        assert sent["agent_1"].tolist() == [[1.0, 0.0, 0.75]]
    finally:
        env.close()


def test_a_nan_action_names_the_agent_and_a_wrong_shape_is_refused() -> None:
    env = _single(*_box("bounded"))
    try:
        env.reset()
        with pytest.raises(ValueError, match=_exact(f"{BOX_LABEL}: agent 'agent_1' was given a NaN action [0.5, nan, 0.0]")):
            env.step(np.array([[0.0, 0.0, 0.0], [0.5, np.nan, 0.0]], np.float32))
        with pytest.raises(ValueError, match=_exact(f"{BOX_LABEL}: continuous actions must have shape (2, 3) "
                                                    "(agents, action dims), got (2,)")):
            env.step(np.array([0, 1]))  # discrete-style actions
        assert env.env.received == []
    finally:
        env.close()


def test_a_mix_of_discrete_and_box_actions_is_refused() -> None:
    error = _exact(
        f"{BOX_LABEL} mixes Discrete and Box action spaces ('agent_0': Discrete(3), "
        "'agent_1': Box(0.0, 1.0, (3,), float32)); hymarl needs every agent's actions Discrete or every agent's Box"
    )
    with pytest.raises(ConfigError, match=error):
        _single(*_box("mixed"))
    env_cls, env_cfg = _env_cfg(*_box("mixed"))
    with pytest.raises(ConfigError, match=error):  # in worker processes too (a ConfigError, not a worker error)
        SubprocVecEnv(functools.partial(make_copy, env_cls, env_cfg, 0), 2, CPU, 2, preload=(env_cls.__module__,))


def test_action_bounds_bound_an_unbounded_box() -> None:
    inf = math.inf
    env = _single(*_box("unbounded"))  # agent_0: Box(-inf, inf, (2,)); agent_1: Box(0, inf, (3,))
    try:
        assert env.spec.continuous and not env.spec.bounded
        assert env.spec.provides() == {"continuous", "state"}  # state: the concatenated observations
        assert env.spec.action_low == ((-inf, -inf, -1.0), (0.0, 0.0, 0.0))
        assert env.spec.action_high == ((inf, inf, 1.0), (inf, inf, inf))
        env.reset()
        env.step(np.array([[5.0, -7.0, 0.0], [-1.0, 2.0, 30.0]]))
        sent = env.env.received[-1]  # only the finite bound (agent_1's low) clips
        assert sent["agent_0"].tolist() == [5.0, -7.0] and sent["agent_1"].tolist() == [0.0, 2.0, 30.0]
    finally:
        env.close()
    validate(compose("+algo=qmix", *_box("unbounded", "env.action_bounds=[-1, 1]")))
    env = _single(*_box("unbounded", "env.action_bounds=[-1, 1]"))
    try:
        assert env.spec.bounded and env.spec.provides() == {"continuous", "bounded_actions", "state"}
        assert env.spec.action_low == ((-1.0, -1.0, -1.0), (0.0, 0.0, 0.0))  # agent_1's finite low stays
        assert env.spec.action_high == ((1.0, 1.0, 1.0), (1.0, 1.0, 1.0))
        env.reset()
        env.step(np.array([[5.0, -7.0, 0.0], [-1.0, 0.5, 30.0]]))
        sent = env.env.received[-1]
        assert sent["agent_0"].tolist() == [1.0, -1.0] and sent["agent_1"].tolist() == [0.0, 0.5, 1.0]
    finally:
        env.close()


def test_action_bounds_that_leave_a_dim_no_range_are_refused() -> None:
    with pytest.raises(ConfigError, match=_exact(
        f"env.action_bounds=[-3, -2] is invalid: agent 'agent_1' of {BOX_LABEL} would have action dim 0 "
        "in [0.0, -2.0], an empty range"
    )):
        _single(*_box("unbounded", "env.action_bounds=[-3, -2]"))


@pytest.mark.parametrize(("value", "error"), [
    ("[1, -1]", "env.action_bounds=[1, -1] is invalid: low must be below high"),
    ("[0.5, 0.5]", "env.action_bounds=[0.5, 0.5] is invalid: low must be below high"),
    ("[0, inf]", "env.action_bounds=[0, inf] is invalid: low and high must be finite numbers"),
    ("[low, 1]", "env.action_bounds=['low', 1] is invalid: low and high must be finite numbers"),
    ("[-1]", "env.action_bounds=[-1] is invalid: must be a pair [low, high] of finite numbers"),
    ("[-1, 0, 1]", "env.action_bounds=[-1, 0, 1] is invalid: must be a pair [low, high] of finite numbers"),
    ("1", "env.action_bounds=1 is invalid: must be a pair [low, high] of finite numbers"),
])
def test_bad_action_bounds_are_refused_by_validate(value: str, error: str) -> None:
    with pytest.raises(ConfigError, match=_exact(f"invalid config:\n  {error}")):
        validate(compose("+algo=qmix", "+env=pz_simple_spread_continuous", f"env.action_bounds={value}"))


# -- vector envs ------------------------------------------------------------------------------------
def test_sync_and_subproc_vector_envs_agree_on_continuous_actions() -> None:
    env_cls, env_cfg = _env_cfg("+env=pz_simple_spread_continuous")
    factory = functools.partial(make_copy, env_cls, env_cfg, 3)
    sync = SyncVecEnv(factory, 3, CPU)
    sub = SubprocVecEnv(factory, 3, CPU, 2, preload=(env_cls.__module__,))
    try:
        assert sub.arrays["actions"].dtype == np.float32 and sub.arrays["actions"].shape == (3, 3, 5)
        assert sync.spec == sub.spec and sync.spec.continuous
        gen = torch.Generator().manual_seed(0)
        first = [sync.reset(), sub.reset()]
        assert all(torch.equal(x, y) for x, y in zip(*first))
        for t in range(sync.spec.episode_limit):
            # float64 on purpose, some out of [0, 1]: both vector envs send float32, clipped
            acts = torch.rand(3, 3, 5, generator=gen, dtype=torch.float64) * 1.4 - 0.2
            a, b = sync.step(acts), sub.step(acts)
            assert all(torch.equal(x, y) for x, y in zip(a.observation, b.observation)), t
            assert torch.equal(a.reward, b.reward) and torch.equal(a.terminated, b.terminated), t
            assert torch.equal(a.truncated, b.truncated), t
        assert bool(a.truncated.all())
    finally:
        sync.close()
        sub.close()


# -- refused before a run ---------------------------------------------------------------------------
REFUSAL = ("controller=basic needs discrete actions: env 'pz_simple_spread_continuous' has continuous (Box) "
           "actions of up to 5 dims")


def test_a_discrete_algorithm_is_refused_on_continuous_actions_when_built() -> None:
    cfg = compose("+algo=qmix", "+env=pz_simple_spread_continuous", "logger=[]")
    validate(cfg)  # only the env's spec tells: refused when the env is built
    with pytest.raises(ConfigError) as err:
        build(cfg, CPU)
    assert str(err.value).startswith(REFUSAL), str(err.value)


def test_a_discrete_algorithm_on_continuous_actions_creates_no_run(tmp_path: Path, store: MlflowClient,
                                                                   exp_name: str) -> None:
    with pytest.raises(ConfigError) as err:
        train(tmp_path, "+algo=qmix", "+env=pz_simple_spread_continuous", "runner=parallel", "runner.n_envs=2",
              "runner.n_workers=1", f"logger.mlflow.experiment_name={exp_name}")
    assert str(err.value).startswith(REFUSAL), str(err.value)
    assert runs_of(store, exp_name) == []
