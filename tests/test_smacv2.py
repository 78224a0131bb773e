"""SMACv2 through the adapter, on a fake smacv2 package (tests/fakes/smacv2; no StarCraft II here):
shapes, masks, termination vs truncation, episode stats, seeding, config errors, a QMIX run. The
last test runs only where the real smacv2 and StarCraft II are installed."""

from __future__ import annotations

import copy
import functools
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from envs.adapter import StandardEnv, make_copy
from envs.smacv2 import SMACv2Env, SMACv2ParallelEnv, missing_requirements
from envs.vector import SubprocVecEnv
from runner.build import typed
from runner.config import ConfigError, validate
from runner.registry import ENVS
from tests.conftest import compose, runs_of, train

FAKES = Path(__file__).resolve().parent / "fakes"
PRESETS = [f"smacv2_{race}_{size}" for race in ("protoss", "terran", "zerg") for size in ("5v5", "10v10")]
QMIX = ("+algo=qmix",)
STOP, EAST = 1, 4


def _forget_smacv2() -> None:
    """Drop imported smacv2 modules (fake or real), so that the next import looks again."""
    for name in [n for n in sys.modules if n == "smacv2" or n.startswith("smacv2.")]:
        del sys.modules[name]


@pytest.fixture
def sc2_dir(tmp_path: Path) -> Path:
    """An empty 'StarCraft II install' with the SMAC maps folder (what check_config looks for)."""
    path = tmp_path / "StarCraftII"
    (path / "Maps" / "SMAC_Maps").mkdir(parents=True)
    return path


@pytest.fixture
def fake_smacv2(monkeypatch: pytest.MonkeyPatch, sc2_dir: Path):
    """The fake smacv2 importable here and in env worker processes, and SC2PATH set."""
    _forget_smacv2()
    monkeypatch.syspath_prepend(str(FAKES))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(FAKES), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("SC2PATH", str(sc2_dir))
    yield
    _forget_smacv2()


def _cfg(preset: str = "smacv2_protoss_5v5", *overrides: str, **fields):
    """The preset's env config (the typed dataclass the runner builds envs from)."""
    cfg = compose(*QMIX, f"+env={preset}", *overrides)
    for key, value in fields.items():
        cfg.env[key] = value
    return typed(cfg.env, ENVS)


def _one_on_five(**team_gen) -> dict:
    """5 stalkers against 1 at SMAC's fixed start positions (no start_positions distribution)."""
    team = {"dist_type": "weighted_teams", "unit_types": ["stalker"], "weights": [1.0], "observe": True, **team_gen}
    return {"n_units": 5, "n_enemies": 1, "team_gen": team}


def _attack_else_east(avail: np.ndarray) -> np.ndarray:
    acts = []
    for row in avail:
        attacks = np.flatnonzero(row[6:])
        acts.append(6 + attacks[0] if len(attacks) else EAST if row[EAST] else STOP if row[STOP] else 0)
    return np.array(acts)


def _stop(avail: np.ndarray) -> np.ndarray:
    return np.where(avail[:, STOP], STOP, 0)


def _episode(env: StandardEnv, policy, max_steps: int = 1000) -> list:
    arrays, transitions = env.reset(), []
    for _ in range(max_steps):
        tr = env.step(policy(arrays.avail))
        transitions.append(tr)
        arrays = tr.arrays
        if tr.terminated or tr.truncated:
            break
    return transitions


def _wrapper(env: StandardEnv):
    return env.env.env  # StandardEnv -> SMACv2ParallelEnv -> StarCraftCapabilityEnvWrapper


# -- configs -------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes_and_validates(fake_smacv2, preset: str) -> None:
    cfg = compose(*QMIX, f"+env={preset}")
    race, size = preset.split("_")[1:]
    n = int(size.split("v")[0])
    cap = OmegaConf.to_container(cfg.env.capability_config)
    assert (cfg.env.name, cfg.env.label, cfg.env.map_name) == ("smacv2", preset, f"10gen_{race}")
    assert (cap["n_units"], cap["n_enemies"], cap["start_positions"]["dist_type"]) == (n, n, "surrounded_and_reflect")
    assert cap["team_gen"]["weights"] == ([0.45, 0.1, 0.45] if race == "zerg" else [0.45, 0.45, 0.1])
    assert (cfg.env.reward, list(cfg.env.info_keys)) == ("mean", ["battle_won", "dead_allies", "dead_enemies"])
    assert (cfg.t_max, cfg.test_interval, cfg.log_interval) == (10_050_000, 10_000, 10_000)
    assert cfg.env.episode_limit is None
    validate(cfg)


def test_missing_smacv2_and_starcraft_is_one_exact_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _forget_smacv2()
    if importlib.util.find_spec("smacv2") is not None:
        pytest.skip("smacv2 is installed here")
    monkeypatch.setenv("SC2PATH", str(tmp_path / "sc2"))
    with pytest.raises(ConfigError) as e:
        validate(compose(*QMIX, "+env=smacv2_protoss_5v5"))
    assert str(e.value) == (
        "invalid config:\n  env 'smacv2' cannot run on this machine: the Python package smacv2 is not "
        f"importable; StarCraft II was not found at {tmp_path / 'sc2'} (from SC2PATH). To install: pip install "
        "-e '.[smacv2]' (or pip install git+https://github.com/oxwhirl/smacv2.git gymnasium); download "
        "StarCraft II 4.10 for Linux (SC2.4.10.zip, https://github.com/Blizzard/s2client-proto#downloads) "
        "and unzip it to ~/StarCraftII, or anywhere and set SC2PATH to that folder; copy the SMAC maps (the "
        "SMAC_Maps folder of https://github.com/oxwhirl/smacv2, smacv2/env/starcraft2/maps/SMAC_Maps) to "
        "$SC2PATH/Maps/SMAC_Maps."
    )


def test_missing_smacv2_refuses_the_run_before_it_is_created(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, store, exp_name: str
) -> None:
    _forget_smacv2()
    if importlib.util.find_spec("smacv2") is not None:
        pytest.skip("smacv2 is installed here")
    monkeypatch.delenv("SC2PATH", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ConfigError) as e:
        train(tmp_path / "run", *QMIX, "+env=smacv2_zerg_5v5", f"logger.mlflow.experiment_name={exp_name}")
    assert (
        "the Python package smacv2 is not importable; StarCraft II was not found at "
        f"{tmp_path / 'StarCraftII'} (SC2PATH is not set). To install: pip install -e '.[smacv2]'"
    ) in str(e.value)
    assert runs_of(store, exp_name) == []


def test_missing_starcraft_or_maps_with_smacv2_installed(fake_smacv2, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SC2PATH", str(tmp_path / "nowhere"))
    assert missing_requirements() == [f"StarCraft II was not found at {tmp_path / 'nowhere'} (from SC2PATH)"]
    (tmp_path / "nowhere").mkdir()
    assert missing_requirements() == [f"the SMAC maps were not found at {tmp_path / 'nowhere' / 'Maps' / 'SMAC_Maps'}"]
    with pytest.raises(ConfigError, match="cannot run on this machine: the SMAC maps were not found at"):
        validate(compose(*QMIX, "+env=smacv2_protoss_5v5"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("env.capability_config.n_units=0", "env.capability_config.n_units=0 is invalid: must be an integer >= 1"),
        ("env.capability_config.n_enemies=-2", "env.capability_config.n_enemies=-2 is invalid: must be an integer >= 1"),
        (
            "env.capability_config.team_gen.weights=[0.5,0.5]",
            "env.capability_config.team_gen.weights=[0.5, 0.5] is invalid: must have one weight per unit type "
            "(3 unit_types: stalker, zealot, colossus)",
        ),
        (
            "env.capability_config.team_gen.weights=[0.5,0.5,0.5]",
            "env.capability_config.team_gen.weights=[0.5, 0.5, 0.5] is invalid: must be >= 0 and sum to 1",
        ),
        (
            "+env.capability_config.team_gen.exception_unit_types=[medivac]",
            "env.capability_config.team_gen.exception_unit_types=['medivac'] is invalid: must be some of "
            "unit_types (stalker, zealot, colossus)",
        ),
        (
            "+env.extra_kwargs.seed=3",
            "env.extra_kwargs.seed is invalid: the seed is the top-level seed (copy i gets seed + i)",
        ),
    ],
)
def test_capability_config_errors_name_key_and_value(fake_smacv2, override: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        validate(compose(*QMIX, "+env=smacv2_protoss_5v5", override))
    assert f"\n  {message}" in str(e.value)


def test_an_empty_capability_config_is_explained(fake_smacv2) -> None:
    cfg = compose(*QMIX, "+env=smacv2_protoss_5v5")
    cfg.env.capability_config = {}
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    assert str(e.value) == (
        "invalid config:\n  env.capability_config={} is invalid: must be a dict with n_units, n_enemies and the "
        "scenario distributions (team_gen, start_positions, ...), as in conf/env/smacv2_*.yaml"
    )


# -- the adapter -----------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", PRESETS)
def test_shapes_come_from_get_env_info(fake_smacv2, preset: str) -> None:
    env = SMACv2Env.make_single(_cfg(preset), seed=0)
    info = _wrapper(env).get_env_info()
    n = info["n_agents"]
    assert env.spec.agent_ids == tuple(f"agent_{i}" for i in range(n))
    assert (env.spec.n_agents, env.spec.n_actions, env.spec.obs_dim, env.spec.state_dim, env.spec.episode_limit) == (
        n, info["n_actions"], info["obs_shape"], info["state_shape"], info["episode_limit"]
    )
    arrays = env.reset()
    assert arrays.obs.shape == (n, info["obs_shape"]) and arrays.state.shape == (info["state_shape"],)
    assert arrays.avail.shape == (n, info["n_actions"]) and arrays.avail[:, STOP].all()
    assert not arrays.avail[:, 0].any()  # a live unit cannot no-op
    np.testing.assert_array_equal(arrays.state, _wrapper(env).get_state())
    env.close()


def test_published_protoss_5v5_sizes(fake_smacv2) -> None:
    # SMACv2's sizes: obs = 4 move + 5 x 9 enemy + 4 x 9 ally + 7 own; state = 5 x 8 + 5 x 7 + 5 x 11 last actions
    env = SMACv2Env.make_single(_cfg("smacv2_protoss_5v5"), seed=0)
    assert (env.spec.n_agents, env.spec.n_actions, env.spec.obs_dim, env.spec.state_dim) == (5, 11, 92, 130)
    assert (env.spec.episode_limit, env.limit) == (200, 200)


def test_making_an_env_does_not_launch_starcraft(fake_smacv2, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SC2PATH", str(tmp_path / "not-installed"))
    env = SMACv2Env.make_single(_cfg(), seed=0)  # spaces come from get_env_info: no game needed
    assert env.spec.obs_dim == 92
    with pytest.raises(RuntimeError, match="Expected to find StarCraft II installed at"):
        env.reset()


def test_dead_agents_stay_with_only_the_no_op(fake_smacv2) -> None:
    env = SMACv2Env.make_single(_cfg(), seed=3)
    arrays = env.reset()
    while True:  # allies that only stop get killed one by one
        tr = env.step(_stop(arrays.avail))
        arrays = tr.arrays
        dead = np.flatnonzero(arrays.avail[:, 0])
        if len(dead) or tr.terminated or tr.truncated:
            break
    assert len(dead) and not tr.terminated and not tr.truncated
    i = dead[0]
    assert arrays.avail[i].tolist() == [True] + [False] * (env.spec.n_actions - 1)
    assert not arrays.obs[i].any()
    assert env.env.agents == env.env.possible_agents  # the dead stay until the episode ends
    with pytest.raises(ValueError, match=f"agent 'agent_{i}' was given unavailable action 1"):
        env.step(np.full(env.spec.n_agents, STOP))
    with pytest.raises(AssertionError, match=f"Agent {i} cannot perform action 1"):
        _wrapper(env).step([STOP] * env.spec.n_agents)  # what the fake (and smacv2) do with it
    acts = _stop(arrays.avail)
    acts[i] = 0
    env.step(acts)


def test_a_won_battle_terminates_and_logs_battle_won(fake_smacv2) -> None:
    env = SMACv2Env.make_single(_cfg(capability_config=_one_on_five()), seed=0)
    transitions = _episode(env, _attack_else_east)
    last = transitions[-1]
    assert last.terminated and not last.truncated and len(transitions) < env.limit
    stats = env.episode_stats()
    assert (stats["battle_won"], stats["dead_enemies"]) == (1.0, 1.0) and stats["dead_allies"] < 5
    assert sum(t.reward for t in transitions) > 0
    assert env.env.agents == []


def test_a_lost_battle_terminates_without_battle_won(fake_smacv2) -> None:
    env = SMACv2Env.make_single(_cfg(), seed=1)
    transitions = _episode(env, _stop)
    assert transitions[-1].terminated and not transitions[-1].truncated
    assert env.episode_stats()["battle_won"] == 0.0 and env.episode_stats()["dead_allies"] == 5.0


@pytest.mark.parametrize("continuing_episode", [False, True])
def test_the_time_limit_is_a_truncation(fake_smacv2, monkeypatch, continuing_episode: bool) -> None:
    from smacv2.env.starcraft2.maps import smac_maps

    monkeypatch.setitem(smac_maps.map_param_registry, "10gen_protoss",
                        {**smac_maps.map_param_registry["10gen_protoss"], "limit": 4})
    cfg = _cfg(capability_config=_one_on_five(), continuing_episode=continuing_episode)
    par = SMACv2Env.make_parallel(cfg)
    assert par.episode_limit == 4
    obs, infos = par.reset(seed=0)
    steps = 0
    while par.agents:  # the enemy is 16 away: nothing happens in 4 steps
        obs, rewards, terms, truncs, infos = par.step({a: STOP for a in par.agents})
        assert not any(terms.values())
        steps += 1
    assert all(truncs.values()) and set(truncs) == set(par.possible_agents) and steps == 4
    assert infos["agent_0"]["battle_won"] is False and infos["agent_0"]["dead_allies"] == 0
    env = StandardEnv(SMACv2Env.make_parallel(cfg), cfg, seed=0)
    last = _episode(env, _stop)[-1]
    assert last.truncated and not last.terminated
    cfg.time_limit = "terminated"  # PyMARL's reading of SMAC's time limit
    env = StandardEnv(SMACv2Env.make_parallel(cfg), cfg, seed=0)
    last = _episode(env, _stop)[-1]
    assert last.terminated and not last.truncated


def test_every_agent_gets_the_team_reward(fake_smacv2) -> None:
    par = SMACv2Env.make_parallel(_cfg(capability_config=_one_on_five()))
    obs, infos = par.reset(seed=0)
    total = 0.0
    while par.agents:
        acts = _attack_else_east(np.stack([infos[a]["action_mask"] for a in par.possible_agents]).astype(bool))
        obs, rewards, terms, truncs, infos = par.step(dict(zip(par.possible_agents, acts.tolist())))
        assert len(set(rewards.values())) == 1 and set(rewards) == set(par.possible_agents)
        total += rewards["agent_0"]
    assert total > 0 and infos["agent_3"]["battle_won"] is True and infos["agent_3"]["dead_enemies"] == 1
    assert obs["agent_0"].dtype == np.float32 and par.state().shape == par.state_space.shape


def test_the_config_dict_is_not_mutated_across_copies(fake_smacv2) -> None:
    cfg = _cfg()
    before = copy.deepcopy(cfg.capability_config)
    a, b = (make_copy(SMACv2Env, cfg, 0, i) for i in range(2))
    a.reset()
    b.reset()
    assert cfg.capability_config == before and "env_key" not in cfg.capability_config["team_gen"]
    ca, cb = _wrapper(a).distribution_config, _wrapper(b).distribution_config
    assert ca["team_gen"]["env_key"] == "team_gen" and ca["start_positions"]["n_enemies"] == 5  # smacv2 wrote here
    assert ca is not cb and ca["team_gen"] is not cb["team_gen"]


def test_a_seed_fixes_the_episodes(fake_smacv2) -> None:
    cfg = _cfg()

    def play(seed: int) -> list[np.ndarray]:
        env = SMACv2Env.make_single(cfg, seed)
        rng = np.random.default_rng(0)
        out = []
        for _ in range(2):
            arrays = env.reset()
            out.append(arrays.obs)
            for _ in range(30):
                arrays = env.step(np.array([rng.choice(np.flatnonzero(row)) for row in arrays.avail])).arrays
                out.append(arrays.obs)
        return out

    a, b, c = play(7), play(7), play(8)
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])


def test_reset_with_a_seed_after_launch_starts_a_fresh_game(fake_smacv2) -> None:
    par = SMACv2Env.make_parallel(_cfg())
    first, _ = par.reset(seed=5)
    par.step({a: STOP for a in par.agents})
    wrapper = par.env
    again, _ = par.reset(seed=5)
    assert par.env is not wrapper and par.env.env.seed() == 5
    assert all(np.array_equal(first[a], again[a]) for a in par.possible_agents)


def test_copies_run_in_worker_processes(fake_smacv2) -> None:
    factory = functools.partial(make_copy, SMACv2Env, _cfg(), 0)
    env = SubprocVecEnv(factory, 2, torch.device("cpu"), n_workers=2)
    try:
        ob = env.reset()
        assert ob.obs.shape == (2, 5, 92) and ob.state.shape == (2, 130)
        res = env.step(torch.where(ob.avail_actions[..., STOP], STOP, 0))
        assert res.reward.shape == (2,)
    finally:
        env.close()


def test_the_shim_is_a_parallel_env_of_the_right_shape(fake_smacv2) -> None:
    par = SMACv2Env.make_parallel(_cfg())
    assert isinstance(par, SMACv2ParallelEnv) and par.unwrapped is par
    assert par.observation_space("agent_0") is par.observation_space("agent_0")
    assert par.action_space("agent_4").n == 11 and par.state_space.shape == (130,)
    obs, infos = par.reset(seed=0, options={"ignored": True})
    assert set(obs) == set(infos) == set(par.agents) == set(par.possible_agents)
    assert infos["agent_0"]["action_mask"].dtype == np.int8 and obs["agent_0"].shape == (92,)
    with pytest.raises(ValueError, match="no action for live agent 'agent_1'"):
        par.step({"agent_0": STOP})
    par.close()


# -- a run -----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_qmix_runs_on_smacv2_and_logs_battle_won(fake_smacv2, tmp_path: Path, store, exp_name: str) -> None:
    result = train(
        tmp_path / "run", *QMIX, "+env=smacv2_protoss_5v5", "runner=episode", "t_max=300", "test_interval=150",
        "log_interval=150", "test_nepisodes=2", "buffer.buffer_size=16", "learner.batch_size=2",
        f"logger.mlflow.experiment_name={exp_name}",
    )
    assert result.status == "FINISHED" and result.t_env >= 300
    (run,) = runs_of(store, exp_name)
    assert run.info.status == "FINISHED" and run.data.tags["env"] in ("smacv2", "smacv2_protoss_5v5")
    history = store.get_metric_history(run.info.run_id, "test_battle_won_mean")
    assert [m.step for m in history][0] == 0 and len(history) >= 3
    assert all(0.0 <= m.value <= 1.0 for m in history)
    assert {"battle_won_mean", "dead_enemies_mean", "test_dead_allies_mean", "loss"} <= set(run.data.metrics)


# -- the real thing ----------------------------------------------------------------------------------
def test_the_real_smacv2_builds_and_steps_an_env() -> None:
    _forget_smacv2()  # a fake imported by another test must not count
    real = pytest.importorskip("smacv2.env", reason="the real smacv2 is not installed")
    try:
        if FAKES in Path(real.__file__).resolve().parents:
            pytest.skip("only the fake smacv2 is importable")
        missing = missing_requirements()
        if missing:
            pytest.skip("; ".join(missing))
        env = SMACv2Env.make_single(_cfg(), seed=0)
        try:
            info = _wrapper(env).get_env_info()
            assert (env.spec.obs_dim, env.spec.state_dim, env.spec.n_actions) == (
                info["obs_shape"], info["state_shape"], info["n_actions"]
            )
            arrays = env.reset()
            tr = env.step(_stop(arrays.avail))
            assert tr.arrays.obs.shape == (5, info["obs_shape"])
        finally:
            env.close()
    finally:
        _forget_smacv2()
