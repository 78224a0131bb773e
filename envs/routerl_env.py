"""RouteRL (PyPI ``routerl``): route choice of autonomous vehicles among human drivers, in SUMO.

RouteRL's ``TrafficEnvironment`` is a PettingZoo AEC env. One env copy here:

1. builds the network's demand (``agents`` drivers, all human; seeded) and starts SUMO
   (libsumo in this process, or a SUMO process over TraCI with a label of its own);
2. runs the human learning phase: ``human_days`` simulated days in which the humans learn their
   routes (RouteRL's human model, default Gawron);
3. mutates ``machines`` of the humans into machine agents (``machine_0`` ... in departure
   order); humans stop learning unless ``humans_learn``;
4. then every episode is one day: each machine agent picks a route once (AEC joint mode: every
   agent acts once per step, in departure order), SUMO simulates the day, and each machine's
   reward is RouteRL's (``selfish``: minus its travel time in minutes).

Observations are RouteRL's ``trip_info_eta`` (travel time per route of the agent's OD, origin,
destination, start time), normalised (``normalize``): travel times relative to the route's free
flow time, start time / 3600; plus the previous day's mean travel time per route of the agent's
OD, relative to free flow (``obs_previous_day``). RouteRL has no ``state()``: the mixer's state
is the machines' observations and the previous day's mean travel time of every route.

Per-day stats (logged as ``<key>_mean``): ``travel_time_machines``, ``travel_time_humans``,
``travel_time_all`` (mean minutes) and route shares ``machines_route_<k>``, ``humans_route_<k>``.

Processes: libsumo runs one simulation per process, so every env copy needs a process of its own
(``runner.n_workers = runner.n_envs``, or one copy in the main process); with TraCI each copy has
one SUMO process. ``close()`` stops SUMO and removes the copy's records folder; a worker that dies
takes its libsumo simulation with it, and a TraCI SUMO quits when its client's socket closes.

This module imports routerl only when a copy is built (env worker processes).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from envs.adapter import AdapterConfig, AdapterEnv, StandardEnv, check_adapter_config
from runner.errors import ConfigError, check_range
from runner.registry import ENVS

INSTALL_HINT = (
    "RouteRL is not installed in this environment: it pins older pettingzoo/gymnasium than hymarl's "
    "env extra, so it lives in its own venv: `make install-routerl`, then run with .venv-routerl/bin/python "
    "(docs/routerl.md)"
)
NETWORKS = ("two_route_yield", "nguyen", "cologne", "arterial", "csomor", "grid", "grid6", "ingolstadt", "ortuzar", "square")


@dataclass
class RouteRLConfig(AdapterConfig):
    network: str = "two_route_yield"
    """RouteRL network (bundled with routerl): two_route_yield, nguyen, cologne, ..."""
    agents: int = 20
    """Drivers in total; all start as humans."""
    machines: int = 10
    """Humans that become machine agents (the learners) after the human phase."""
    human_days: int = 100
    """Days of the human learning phase before the mutation."""
    human_model: str = "gawron"
    """RouteRL's human route-choice model (gawron, culo, w_avg, ...)."""
    humans_learn: bool = False
    """Humans keep learning after the mutation."""
    machine_behavior: str = "selfish"
    """RouteRL's machine reward (selfish: minus own travel time; social, altruistic, malicious, ...)."""
    mutation_start_percentile: int = -1
    """Only humans departing after this percentile of start times may mutate (-1: any human)."""
    use_libsumo: bool = True
    """libsumo (SUMO in this process, ~8x faster) or TraCI (a SUMO process per env copy)."""
    simulation_timesteps: int = 3600
    """Seconds simulated per day."""
    normalize: bool = True
    """Travel times relative to free flow, start time / 3600 (raw values blow up the mixer)."""
    obs_previous_day: bool = True
    """Append the previous day's mean travel time per route of the agent's OD to its observation."""
    records_dir: Any = None
    """RouteRL's records folder; None: a temp dir per env copy, removed when the copy closes."""
    routerl: Any = field(default_factory=dict)
    """More RouteRL parameters, merged into its defaults, e.g. {simulator_parameters: {...}}."""
    episode_limit: Any = 1
    reward: str = "mean"
    """The team reward: the mean (or sum) of the machines' rewards."""
    time_limit: str = "env"
    info_keys: list[str] = field(default_factory=list)
    epsilon_anneal_time: int = 1_500
    """Recommended exploration schedule in days (the default of controller.epsilon_anneal_time):
    the default 50,000 env steps would be 50,000 days here."""
    t_max: int = 2_000
    test_interval: int = 200
    log_interval: int = 100


def check_config(cfg: Any) -> list[str]:
    env, errs = cfg, check_adapter_config(cfg)
    if env.network not in NETWORKS:
        errs.append(f"env.network={env.network!r} is invalid: must be one of {', '.join(NETWORKS)} (RouteRL's bundled networks)")
    check_range(errs, "env.agents", env.agents, 1, float("inf"))
    if not 1 <= env.machines <= env.agents:
        errs.append(f"env.machines={env.machines} is invalid: must be in [1, env.agents={env.agents}]")
    check_range(errs, "env.human_days", env.human_days, 0, float("inf"))
    check_range(errs, "env.simulation_timesteps", env.simulation_timesteps, 1, float("inf"))
    if env.episode_limit != 1:
        errs.append(f"env.episode_limit={env.episode_limit} is invalid: a RouteRL episode is one day (1 step)")
    try:
        import routerl  # noqa: F401
    except ImportError:
        errs.append(f"env '{env.label}': {INSTALL_HINT}")
    return errs


def _params(cfg: Any, records: str) -> dict[str, Any]:
    import sumo

    params = {
        "agent_parameters": {
            "num_agents": cfg.agents,
            "new_machines_after_mutation": cfg.machines,
            "human_parameters": {"model": cfg.human_model},
            "machine_parameters": {"behavior": cfg.machine_behavior, "observation_type": "trip_info_eta"},
        },
        "environment_parameters": {"number_of_days": 1, "save_every": 10**12},
        "simulator_parameters": {
            "network_name": cfg.network,
            "use_libsumo": cfg.use_libsumo,
            "sumo_type": os.path.join(sumo.SUMO_HOME, "bin", "sumo"),  # the binary itself: one process, no PATH lookup
            "simulation_timesteps": cfg.simulation_timesteps,
        },
        "path_generation_parameters": {"visualize_paths": False, "path_gen_workers": 1},
        "plotter_parameters": {
            "records_folder": os.path.join(records, "records"),
            "plots_folder": os.path.join(records, "plots"),
            "plot_choices": "none",
        },
    }
    _merge(params, dict(cfg.routerl or {}))
    return params


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v


class RouteRLDays:
    """RouteRL's machine phase behind the ParallelEnv API: one step = one day (every machine acts once)."""

    def __init__(self, env: Any, cfg: Any, records: str, own_records: bool) -> None:
        from gymnasium import spaces

        self.env, self.cfg, self.records, self.own_records = env, cfg, records, own_records
        self.ids = list(env.possible_agents)  # RouteRL's machine ids, in departure order
        self.possible_agents = [f"machine_{i}" for i in range(len(self.ids))]
        self.name_of = dict(zip(self.ids, self.possible_agents))
        self.agents: list[str] = []
        ff = env.get_free_flow_times()
        self.od = sorted(ff)
        self.ff = {k: np.asarray(ff[k], np.float64) for k in self.od}
        self.n_paths = len(next(iter(ff.values())))
        self.machine = {str(a.id): a for a in env.machine_agents}
        self.prev_tt = {k: np.ones(self.n_paths) for k in self.od}  # last day's mean travel time / free flow
        raw = env.observation_space(self.ids[0]).shape[0]
        self.obs_size = raw + (self.n_paths if cfg.obs_previous_day else 0)
        low = 0.0 if cfg.normalize else -1.0
        box = spaces.Box(low, np.inf, (self.obs_size,), np.float32)
        self._obs_space = {a: box for a in self.possible_agents}
        self._act_space = {a: spaces.Discrete(int(env.action_space(i).n)) for a, i in zip(self.possible_agents, self.ids)}
        self.state_space = spaces.Box(low, np.inf, (len(self.ids) * self.obs_size + len(self.od) * self.n_paths,), np.float32)
        self.stat_keys = ["travel_time_machines", "travel_time_humans", "travel_time_all"] + [
            f"{who}_route_{k}" for who in ("machines", "humans") for k in range(self.n_paths)
        ]
        self.day_stats: dict[str, float] = {}
        self._obs: dict[str, np.ndarray] = {}
        self.closed = False
        self.days = 0

    def observation_space(self, agent: str) -> Any:
        return self._obs_space[agent]

    def action_space(self, agent: str) -> Any:
        return self._act_space[agent]

    def _observe(self, rid: str, raw: np.ndarray) -> np.ndarray:
        m = self.machine[rid]
        key = (m.origin, m.destination)
        o = np.asarray(raw, np.float64).copy()
        if self.cfg.normalize:
            ff = self.ff[key]
            o[: self.n_paths] = np.where(o[: self.n_paths] > 0, o[: self.n_paths] / ff, 1.0)
            o[-1] = o[-1] / 3600.0
        parts = [o]
        if self.cfg.obs_previous_day:
            prev = self.prev_tt[key] if self.cfg.normalize else self.prev_tt[key] * self.ff[key]
            parts.append(prev)
        return np.concatenate(parts).astype(np.float32)

    def state(self) -> np.ndarray:
        obs = [self._obs.get(a, np.zeros(self.obs_size, np.float32)) for a in self.possible_agents]
        routes = [self.prev_tt[k] if self.cfg.normalize else self.prev_tt[k] * self.ff[k] for k in self.od]
        return np.concatenate([*obs, *routes]).astype(np.float32)

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        with _quiet():
            self.env.reset()  # a new day (SUMO reloads); the copy was seeded when it was built
        self.agents = list(self.possible_agents)
        self._obs = {self.name_of[i]: self._observe(i, self.env.observe(i)) for i in self.ids}
        return dict(self._obs), {a: {} for a in self.agents}

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        env = self.env
        with _quiet():
            for rid in env.agent_iter():  # departure order; the last machine's step simulates the rest of the day
                _, _, term, trunc, _ = env.last()
                env.step(None if (term or trunc) else int(actions[self.name_of[rid]]))
        self.days += 1
        records = list(env.last_episode_travel_times)
        rewards = {self.name_of[str(r["id"])]: float(r["reward"]) for r in records if r["kind"] == "AV"}
        self._day_stats(records)
        if self.days % 50 == 0:
            self._prune_records()
        done = dict.fromkeys(self.possible_agents, True)
        infos: dict[str, dict[str, Any]] = {a: {} for a in self.possible_agents}
        self.agents = []
        return dict(self._obs), rewards, done, dict.fromkeys(self.possible_agents, False), infos

    def _day_stats(self, records: list[dict[str, Any]]) -> None:
        s: dict[str, float] = {}
        for who, kind in (("machines", "AV"), ("humans", "Human")):
            rows = [r for r in records if r["kind"] == kind]
            s[f"travel_time_{who}"] = float(np.mean([r["travel_time"] for r in rows])) if rows else 0.0
            for k in range(self.n_paths):
                s[f"{who}_route_{k}"] = float(np.mean([int(r["action"]) == k for r in rows])) if rows else 0.0
        s["travel_time_all"] = float(np.mean([r["travel_time"] for r in records])) if records else 0.0
        self.day_stats = s
        for key in self.od:  # the previous day's mean travel time per route, relative to free flow
            for k in range(self.n_paths):
                tts = [r["travel_time"] for r in records if (r["origin"], r["destination"]) == key and int(r["action"]) == k]
                if tts:
                    self.prev_tt[key][k] = float(np.mean(tts)) / self.ff[key][k]

    def _prune_records(self) -> None:
        """SUMO writes two stats files per simulated day with no switch to turn them off."""
        folder = os.path.join(self.records, "records", "SUMO_output")
        for name in os.listdir(folder) if os.path.isdir(folder) else ():
            with contextlib.suppress(OSError):
                os.remove(os.path.join(folder, name))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception), _quiet():
            self.env.stop_simulation()  # env.close() leaves SUMO running
        if self.own_records:
            shutil.rmtree(self.records, ignore_errors=True)


@contextlib.contextmanager
def _quiet():
    """RouteRL prints progress ([CONFIRMED], [SUCCESS], ...) on stdout."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


class RouteRLStandardEnv(StandardEnv):
    """The adapter, plus RouteRL's per-day traffic stats."""

    def _episode_stats(self, infos: dict[str, Any]) -> dict[str, float]:
        return {**super()._episode_stats(infos), **self.env.day_stats}

    def episode_stats(self) -> dict[str, float]:
        return {**super().episode_stats(), **{k: self.stats.get(k, 0.0) for k in self.env.stat_keys}}


@ENVS.register("routerl", config=RouteRLConfig)
class RouteRLEnv(AdapterEnv):
    @classmethod
    def make_single(cls, cfg: Any, seed: int) -> StandardEnv:
        return RouteRLStandardEnv(build_days(cfg, seed), cfg, seed, label=cls.label(cfg))

    @classmethod
    def label(cls, cfg: Any) -> str:
        return f"env '{cfg.label}' (RouteRL {cfg.network})"

    @classmethod
    def check_config(cls, cfg: Any) -> list[str]:
        return check_config(cfg)

    @classmethod
    def one_copy_per_process(cls, cfg: Any) -> tuple[str, str] | None:
        if cfg.use_libsumo:
            return "env.use_libsumo=true: libsumo runs one simulation per process", "or use env.use_libsumo=false (TraCI)"
        return None


def build_days(cfg: Any, seed: int) -> RouteRLDays:
    """One copy: demand, SUMO, the human phase and the mutation; then the machines' days."""
    try:
        import sumo

        os.environ.setdefault("SUMO_HOME", sumo.SUMO_HOME)
        from routerl import TrafficEnvironment
    except ImportError as exc:
        raise ConfigError(f"{INSTALL_HINT} ({exc})") from None
    own = cfg.records_dir is None
    records = tempfile.mkdtemp(prefix="hymarl-routerl-") if own else str(cfg.records_dir)
    env = None
    try:
        with _quiet():
            env = TrafficEnvironment(seed=seed, **_params(cfg, records))
            # TraCI connection labels are random.randint(0, 1000) after seeding: equal seeds collide
            env.simulator.sumo_id = f"hymarl-{os.getpid()}-{seed}"
            env.start()
            env.reset()
            for _ in range(cfg.human_days):
                env.step(None)  # with humans only, one step simulates a whole day
            try:
                env.mutation(disable_human_learning=not cfg.humans_learn,
                             mutation_start_percentile=cfg.mutation_start_percentile)
            except ValueError as exc:
                raise ConfigError(
                    f"env.machines={cfg.machines}: RouteRL cannot mutate that many humans ({exc}); lower env.machines "
                    "or env.mutation_start_percentile"
                ) from None
        if len(env.possible_agents) != cfg.machines:
            raise ConfigError(f"RouteRL made {len(env.possible_agents)} machine agents, expected env.machines={cfg.machines}")
        return RouteRLDays(env, cfg, records, own)
    except BaseException:
        if env is not None:
            with contextlib.suppress(Exception), _quiet():
                env.stop_simulation()
        if own:
            shutil.rmtree(records, ignore_errors=True)
        raise


def seconds_per_day(network: str, use_libsumo: bool, days: int, seed: int = 0) -> dict[str, float]:
    """Wall seconds per simulated day of one env copy (20 drivers, 10 machines acting at random),
    in the human phase (humans only) and in the machine phase (through the adapter)."""
    import time

    from omegaconf import OmegaConf

    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(RouteRLConfig), {
        "name": "routerl", "label": network, "network": network, "use_libsumo": use_libsumo, "human_days": days}))
    t0 = time.perf_counter()
    env = RouteRLEnv.make_single(cfg, seed)  # includes SUMO's start and `days` human days
    built = time.perf_counter() - t0
    rng = np.random.default_rng(seed)
    try:
        t0 = time.perf_counter()
        for _ in range(days):
            env.reset()
            env.step(np.array([rng.integers(int(env.env.action_space(a).n)) for a in env.agents]))
        machine = (time.perf_counter() - t0) / days
    finally:
        env.close()
    return {"build_and_human_phase_s": built, "machine_day_s": machine}


def main(argv: list[str] | None = None) -> None:
    """``python -m envs.routerl_env`` (``make bench-routerl``): seconds per simulated day, TraCI vs libsumo."""
    import argparse
    import json
    import subprocess
    import sys

    ap = argparse.ArgumentParser(prog="python -m envs.routerl_env", description=main.__doc__)
    ap.add_argument("--network", default="two_route_yield", choices=NETWORKS)
    ap.add_argument("--days", type=int, default=50)
    ap.add_argument("--one", choices=["traci", "libsumo"], help=argparse.SUPPRESS)
    ap.add_argument("--pin", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        if args.pin:  # this process and the SUMO it starts share one CPU
            os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        print(json.dumps(seconds_per_day(args.network, args.one == "libsumo", args.days)))
        return
    res = {}
    # each in its own process (libsumo allows one simulation per process). TraCI makes thousands of
    # socket round trips per day: with SUMO and the client on different CPUs each one waits for a
    # cross-CPU wake-up, so TraCI is also timed with both pinned to one CPU.
    for mode, pin in (("libsumo", False), ("traci", True), ("traci", False)):
        name = f"{mode}, one CPU" if pin else mode
        out = subprocess.run([sys.executable, "-m", "envs.routerl_env", "--one", mode, "--network", args.network,
                              "--days", str(args.days), *(["--pin"] if pin else [])],
                             capture_output=True, text=True, check=True)
        res[name] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{args.network}, {name}: {res[name]['machine_day_s']:.3f} s per machine-phase day; "
              f"build + {args.days} human days {res[name]['build_and_human_phase_s']:.1f} s")
    for name in ("traci, one CPU", "traci"):
        print(f"libsumo is {res[name]['machine_day_s'] / res['libsumo']['machine_day_s']:.1f}x faster per day than {name}")


if __name__ == "__main__":
    main()
