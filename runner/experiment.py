"""Wiring and time: build components, train/test loop, checkpoints, final status.

The experiment owns t_env and the intervals; the runner owns the env loop, the controller
acting, the learner training, and loggers only listen.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from runner import checkpoint
from runner.build import Components, build, resolve_device, seed_everything
from runner.config import validate
from runner.learners.base import NonFiniteLossError
from runner.logging.base import RunInfo
from runner.logging.console import ProgressDisplay, console, q_table, summary_table
from runner.rollout.parallel import RolloutAborted
from runner.tracking import ownership

EXIT_CODES: dict[int, int] = {signal.SIGINT: 130, signal.SIGTERM: 143}
# keys of a learner's q_table that hold a joint table, and their titles on the console
JOINT_TABLES = {"q_tot": "Q_tot", "q_jt": "Q_jt", "q_jt_transformed": "Q'_jt = sum_i Q_i", "q_central": "Q-hat* (central)"}


@dataclass
class LoopState:
    """Counters and accumulators of the train loop; checkpointed so that a resume is exact."""

    t_env: int = 0
    episode: int = 0
    last_test_t: int = -1  # -1: test once before training
    last_log_t: int = 0
    last_learner_log_t: int = -1
    last_save_t: int = 0
    train_returns: list[float] = field(default_factory=list)
    train_lengths: list[float] = field(default_factory=list)
    env_stats: dict[str, list[float]] = field(default_factory=dict)
    curves: dict[str, list[list[float]]] = field(default_factory=dict)
    latest: dict[str, float] = field(default_factory=dict)
    wall_time: float = 0.0


@dataclass
class RunResult:
    status: str  # FINISHED, KILLED
    t_env: int
    stats: dict[str, float]
    checkpoint: Path | None
    q_tables: list[dict[str, Any]]
    run_dir: Path
    exit_code: int = 0


class StopRequest:
    """SIGINT/SIGTERM -> stop at the next iteration boundary; a second signal aborts at once.
    A second signal within DEBOUNCE_S of the first is the same Ctrl-C arriving twice (a sweep's
    launcher forwards it to jobs that got it from the terminal too) and is ignored."""

    DEBOUNCE_S = 1.0
    ABANDON_AFTER_S = 10.0  # a rollout still running this long after the stop request is abandoned

    def __init__(self) -> None:
        self.signum: int | None = None
        self._at = 0.0
        self._old: dict[int, Any] = {}

    def __call__(self, signum: int | None = None, frame: Any = None) -> None:
        if self.signum is not None:
            if time.monotonic() - self._at < self.DEBOUNCE_S:
                return
            raise KeyboardInterrupt
        self.signum = signum if signum is not None else signal.SIGINT
        self._at = time.monotonic()
        console.print("[yellow]stop requested: saving a checkpoint after this iteration (signal again to abort)")

    def abandon_rollout(self) -> bool:
        """Asked by the runner before every env step: True once a stop request has waited
        ABANDON_AFTER_S for the rollout in progress (with a huge runner.n_envs one takes minutes)."""
        return self.signum is not None and time.monotonic() - self._at >= self.ABANDON_AFTER_S

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for s in EXIT_CODES:
                self._old[s] = signal.signal(s, self)

    def restore(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old.clear()


def process_age() -> float | None:
    """Seconds since this process started (Linux /proc), or None where that cannot be read."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22: starttime
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or "unknown"
    except Exception:
        return "unknown"


def _mean_std(xs: list[float]) -> tuple[float, float]:
    t = torch.tensor(xs, dtype=torch.float64)
    return float(t.mean()), float(t.std(unbiased=False)) if len(xs) > 1 else 0.0


class Experiment:
    def __init__(self, cfg: DictConfig, comps: Components, run_dir: Path, stop: StopRequest) -> None:
        self.cfg, self.comps, self.run_dir, self.stop = cfg, comps, run_dir, stop
        self.state = LoopState()
        self.started_at = 0  # t_env when this process took over (resume)
        self.startup_s: float | None = None  # process start -> first env step
        self.saved_at = self.flushed_at = time.monotonic()  # wall clock of the last checkpoint / flush

    # -- phases --------------------------------------------------------------------------------
    def test_phase(self) -> dict[str, float]:
        """Greedy test episodes, logged as test_*. Components may ask for more test phases with
        ``test_variants() -> [(suffix, n_episodes or None)]`` and ``set_test_variant(suffix)``:
        their stats are logged as test_*<suffix> (e.g. MAVEN's test_return_mean_z3)."""
        comps, state = self.comps, self.state
        hooks = comps.runner.hooks  # the controller and the learner (runner.contracts.RolloutHooks)
        variants = [("", self.cfg.test_nepisodes)] + [v for h in hooks for v in h.test_variants()]
        stats: dict[str, float] = {}
        try:
            for suffix, n in variants:
                for h in hooks:
                    h.set_test_variant(suffix)
                stats.update(self._test_episodes(suffix, n or self.cfg.test_nepisodes))
        finally:
            for h in hooks:
                h.set_test_variant("")
        comps.loggers.log_stats(stats, state.t_env)
        state.curves.setdefault("test_return_mean", []).append([state.t_env, stats["test_return_mean"]])
        state.latest.update(stats)
        state.last_test_t = state.t_env
        return stats

    def _test_episodes(self, suffix: str, n: int) -> dict[str, float]:
        returns: list[float] = []
        lengths: list[float] = []
        env_stats: dict[str, list[float]] = {}
        while len(returns) < n:
            r = self.comps.runner.run(self.state.t_env, test_mode=True)
            take = min(n - len(returns), len(r.returns))
            returns += r.returns[:take].tolist()
            lengths += r.lengths[:take].float().tolist()
            for k, v in r.env_stats.items():
                env_stats.setdefault(k, []).extend(v[:take].float().tolist())
        mean, std = _mean_std(returns)
        stats = {f"test_return_mean{suffix}": mean, f"test_return_std{suffix}": std,
                 f"test_ep_length_mean{suffix}": _mean_std(lengths)[0]}
        stats.update({f"test_{k}_mean{suffix}": _mean_std(v)[0] for k, v in env_stats.items()})
        return stats

    def log_train(self) -> None:
        state = self.state
        if not state.train_returns:
            return
        mean, std = _mean_std(state.train_returns)
        stats = {
            "return_mean": mean,
            "return_std": std,
            "ep_length_mean": _mean_std(state.train_lengths)[0],
            **self.comps.controller.exploration_stats(state.t_env),  # epsilon, a noise scale, or none
        }
        stats.update({f"{k}_mean": _mean_std(v)[0] for k, v in state.env_stats.items()})
        stats["episode"] = float(state.episode)
        self.comps.loggers.log_stats(stats, state.t_env)
        self.comps.loggers.end_round(state.t_env)
        state.curves.setdefault("return_mean", []).append([state.t_env, mean])
        state.latest.update(stats)
        state.train_returns, state.train_lengths, state.env_stats = [], [], {}
        state.last_log_t = state.t_env

    def train_iteration(self) -> None:
        comps, state, cfg = self.comps, self.state, self.cfg
        r = comps.runner.run(state.t_env, test_mode=False)
        comps.buffer.insert(r.batch)
        state.t_env += r.steps
        state.episode += len(r.returns)
        state.train_returns += r.returns.tolist()
        state.train_lengths += r.lengths.float().tolist()
        for k, v in r.env_stats.items():
            state.env_stats.setdefault(k, []).extend(v.float().tolist())
        bs = cfg.learner.batch_size
        updates = comps.learner.updates_due(r.steps, len(r.returns))  # one per rollout, or per k env steps
        stats: dict[str, float] = {}
        for i in range(updates):
            if not comps.buffer.can_sample(bs):
                break
            stats = comps.learner.train(comps.buffer.sample(bs).to(comps.device), state.t_env,
                                        episodes=len(r.returns) if i == 0 else 0)
        if stats and (state.last_learner_log_t < 0 or state.t_env - state.last_learner_log_t >= cfg.log_interval):
            comps.loggers.log_stats(stats, state.t_env)
            state.latest.update(stats)
            state.last_learner_log_t = state.t_env
        if state.t_env - state.last_log_t >= cfg.log_interval:
            self.log_train()

    def train(self) -> bool:
        """The train loop. Returns False if stopped by a signal."""
        cfg, state = self.cfg, self.state
        self.startup_s = process_age()
        with ProgressDisplay(cfg.t_max, state.t_env, cfg.progress) as bar:
            t0 = self.saved_at = time.monotonic()
            while state.t_env < cfg.t_max:
                if self.stop.signum is not None:
                    state.wall_time += time.monotonic() - t0
                    return False
                try:
                    if state.last_test_t < 0 or state.t_env - state.last_test_t >= cfg.test_interval:
                        self.test_phase()
                    self.train_iteration()
                except RolloutAborted as exc:  # a stop request that a long rollout kept waiting
                    console.print(f"[yellow]{exc}: its episodes are not stored (the env copies and RNGs moved on, so a "
                                  "resume from the checkpoint is not bit-identical to an uninterrupted run)", soft_wrap=True)
                    state.wall_time += time.monotonic() - t0
                    return False
                now = time.monotonic()
                if (cfg.save_interval and state.t_env - state.last_save_t >= cfg.save_interval) or (
                    cfg.save_interval_s and now - self.saved_at >= cfg.save_interval_s
                ):
                    self.save()
                elif now - self.flushed_at >= 30.0:  # the loggers' heartbeat and outbox, between logs
                    self.comps.loggers.flush()
                    self.flushed_at = now
                bar.update(state.t_env, state.episode, state.latest.get("return_mean"), state.latest.get("test_return_mean"))
            state.wall_time += time.monotonic() - t0
        if state.last_test_t != state.t_env:
            try:
                self.test_phase()
            except RolloutAborted as exc:
                console.print(f"[yellow]{exc}: the final test phase is not logged", soft_wrap=True)
                return False
        self.log_train()
        return True

    # -- checkpoints ---------------------------------------------------------------------------
    def save(self) -> Path:
        state = self.state
        state.last_save_t = state.t_env
        data = {
            "config": OmegaConf.to_container(self.cfg, resolve=True, enum_to_str=True),
            "loop": asdict(state),
            "learner": self.comps.learner.state_dict(),
            "buffer": self.comps.buffer.state_dict() if self.cfg.checkpoint_buffer else None,
            "rng": checkpoint.rng_state(self.comps.env.get_rng_state()),
            "loggers": self.comps.loggers.state(),
        }
        self.comps.loggers.flush()
        self.saved_at = self.flushed_at = time.monotonic()
        return checkpoint.save(self.run_dir, data, keep=self.cfg.checkpoint_keep)

    def restore(self, data: dict[str, Any], ckpt: Path) -> None:
        if data.get("buffer") is None:
            raise checkpoint.CheckpointError(
                f"cannot resume from {ckpt}: it was saved with checkpoint_buffer=false (no replay buffer to continue from)"
            )
        self.comps.buffer.load_state_dict(data["buffer"])
        self.state = LoopState(**data["loop"])
        checkpoint.set_rng_state(data["rng"])
        self.comps.env.set_rng_state(data["rng"]["env"])

    # -- outputs -------------------------------------------------------------------------------
    def q_tables(self) -> list[dict[str, Any]]:
        if not self.comps.controller.supports_q_tables:
            return []
        tables = []
        for p in self.comps.env.q_points():
            values = self.comps.learner.q_table(p.obs, p.state, p.avail_actions)
            if values is None:  # a learner without Q tables
                return []
            tables.append({"state": p.label, **values})
        return tables

    def print_summary(self, title: str, tables: list[dict[str, Any]], extra: dict[str, Any]) -> None:
        rows = {**extra}
        for k in ("test_return_mean", "test_return_std", "return_mean", "loss", "epsilon"):
            if k in self.state.latest:
                rows[k] = self.state.latest[k]
        console.print(summary_table(title, rows))
        for t in tables:
            # a learner's joint tables over the 2 agents' joint actions: q_tot (the mixers), q_jt and
            # q_jt_transformed (QTRAN), q_central (Weighted QMIX's Q-hat*)
            joint = [k for k in JOINT_TABLES if k in t] if len(t["agent_q"]) == 2 else []
            if joint:
                for key in joint:
                    console.print(q_table(f"{JOINT_TABLES[key]} at {t['state']}", t[key]))
            else:
                names = t.get("agents") or [str(i + 1) for i in range(len(t["agent_q"]))]
                for name, q in zip(names, t["agent_q"]):
                    console.print(f"Q_{name} at {t['state']}: " + ", ".join(f"{v:.2f}" for v in q))
        if tables and self.cfg.learner.get("standardise_rewards"):
            console.print("[dim]Q-values are in standardised reward units (learner.standardise_rewards=true; "
                          "false learns them in reward units)")
        for line in self.comps.loggers.describe():
            console.print(line)


def run_info(
    cfg: DictConfig,
    resolved: dict[str, Any],
    run_dir: Path,
    hydra_dir: Path | None,
    overrides: list[str],
    mode: str,
    name_suffix: str = "",
) -> RunInfo:
    name = cfg.run_name or f"{cfg.algo_name}-{cfg.env.label}-s{cfg.seed}{name_suffix}"
    if mode == "evaluate":
        name = f"eval-{name}"
    commit = git_commit()
    tags = {
        "algo": str(cfg.algo_name),
        "env": str(cfg.env.label),
        "seed": str(cfg.seed),
        "mode": mode,
        "git_commit": commit,
        "mlflow.source.git.commit": commit,
        "hydra_overrides": " ".join(overrides),
        "run_dir": str(run_dir),
    }
    if cfg.get("benchmark"):
        tags["benchmark"] = str(cfg.benchmark.name)
    if cfg.get("groups") is not None:
        from runner.groups import describe

        tags["groups"] = describe(cfg.groups)  # e.g. "speaker=frozen listener=learn" (report --group-by groups)
    return RunInfo(resolved, tags, name, run_dir, hydra_dir)


def run(
    cfg: DictConfig,
    hydra_dir: Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    extra_tags: dict[str, str] | None = None,
    name_suffix: str = "",
) -> RunResult:
    """Train (or evaluate) as configured. Every check that can fail runs before a run is created.
    ``extra_tags``/``name_suffix``: a sweep's job makes its run a child of the sweep's parent run
    (the suffix goes after the default run name, e.g. ``-#7`` for an Optuna trial)."""
    validate(cfg)
    device = resolve_device(cfg.device)
    resolved: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)  # type: ignore[assignment]
    run_dir = Path(hydra_dir) if hydra_dir else Path.cwd() / "outputs" / "runs" / time.strftime("%Y-%m-%d_%H-%M-%S")
    if cfg.resume:  # the run dir is the checkpoint's: own it before reading its newest checkpoint
        run_dir = checkpoint.run_dir_of(checkpoint.resolve(cfg.resume))
    ownership.acquire(run_dir)  # one process per run dir (RunDirBusy names the owner)
    try:
        return _run_owned(cfg, resolved, device, run_dir, hydra_dir, overrides, extra_tags, name_suffix)
    finally:
        ownership.release(run_dir)


def _run_owned(cfg: DictConfig, resolved: dict[str, Any], device: torch.device, run_dir: Path, hydra_dir: Path | None,
               overrides: list[str] | tuple[str, ...], extra_tags: dict[str, str] | None, name_suffix: str) -> RunResult:
    ckpt_path, ckpt = None, None
    if cfg.resume:
        ckpt_path, ckpt = checkpoint.load(cfg.resume)
        checkpoint.check_resume_config(ckpt["config"], resolved, ckpt_path)
        console.print(f"resuming {run_dir} from {ckpt_path.name} (t_env={ckpt['loop']['t_env']:,} of t_max={cfg.t_max:,}, "
                      f"saved {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(ckpt_path.stat().st_mtime))})", soft_wrap=True)
    elif cfg.checkpoint:
        ckpt_path, ckpt = checkpoint.load(cfg.checkpoint)

    if cfg.torch_threads > 0:
        torch.set_num_threads(cfg.torch_threads)
    seed_everything(cfg.seed)
    comps = build(cfg, device)
    if ckpt is not None:
        try:
            comps.learner.load_state_dict(ckpt["learner"], weights_only=not cfg.resume)
        except (RuntimeError, KeyError, ValueError) as exc:
            comps.runner.close()
            raise checkpoint.CheckpointError(f"checkpoint {ckpt_path} does not fit this config: {exc}") from None

    stop = StopRequest()
    comps.runner.should_abort = stop.abandon_rollout
    exp = Experiment(cfg, comps, run_dir, stop)
    mode = "evaluate" if cfg.evaluate else "train"
    info = run_info(cfg, resolved, run_dir, hydra_dir, list(overrides), mode, name_suffix)
    info.tags.update(extra_tags or {})
    if cfg.resume:
        exp.restore(ckpt, ckpt_path)  # type: ignore[arg-type]
        info.resume_state = ckpt["loggers"]  # type: ignore[index]
        info.t_env_start = exp.started_at = exp.state.t_env
    elif ckpt is not None:
        exp.state.t_env = ckpt["loop"]["t_env"]

    stop.install()
    try:
        comps.loggers.start(info)  # the MLflow run exists from here on: every exit path sets its status
    except BaseException:  # e.g. the tracking server went down since the config check
        stop.restore()
        comps.runner.close()
        raise
    try:
        if hydra_dir and (hydra_dir / ".hydra").is_dir():
            hydra_files = hydra_dir / ".hydra"
            name = ".hydra"
            if cfg.resume and Path(hydra_dir).resolve() != run_dir.resolve():
                # a resumed run keeps the .hydra/ of the command that started it; the resume's goes beside
                # it, in the run dir (the resume's own Hydra dir is removed when it ends: nothing else is there)
                name = f".hydra-resume-{exp.started_at}"
                shutil.copytree(hydra_files, run_dir / name, dirs_exist_ok=True)
                hydra_files = run_dir / name
            comps.loggers.log_artifact(hydra_files, name)
        if cfg.evaluate:
            return _evaluate(exp, ckpt_path)
        return _train(exp)
    except NonFiniteLossError as exc:
        comps.loggers.finish("FAILED", f"{type(exc).__name__}: {exc}")
        raise
    except KeyboardInterrupt:
        comps.loggers.finish("KILLED", "aborted by a second interrupt (no checkpoint written)")
        raise
    except Exception as exc:
        comps.loggers.finish("FAILED", f"{type(exc).__name__}: {exc}")
        raise
    finally:
        stop.restore()
        comps.runner.close()


def _train(exp: Experiment) -> RunResult:
    comps, state = exp.comps, exp.state
    finished = exp.train()
    ckpt = exp.save()
    if not finished:
        console.print(f"[yellow]stopped at t_env={state.t_env:,}; checkpoint: {ckpt}")
        console.print(f"resume with: python -m runner <same overrides> resume={exp.run_dir}")
        comps.loggers.finish("KILLED", f"stopped by signal {exp.stop.signum} at t_env={state.t_env}")
        return RunResult("KILLED", state.t_env, dict(state.latest), ckpt, [], exp.run_dir, EXIT_CODES.get(exp.stop.signum or signal.SIGINT, 130))
    tables = exp.q_tables()
    artifacts = exp.run_dir / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    from runner.curves import learning_curve

    comps.loggers.log_artifact(
        learning_curve(state.curves, f"{exp.cfg.algo_name} on {exp.cfg.env.label} (seed {exp.cfg.seed})", artifacts / "learning_curve.png")
    )
    if tables:
        (artifacts / "q_tables.json").write_text(json.dumps(tables, indent=1))
        comps.loggers.log_artifact(artifacts / "q_tables.json")
    comps.loggers.log_artifact(ckpt, "checkpoints")
    steps_per_s = state.t_env / state.wall_time if state.wall_time > 0 else math.nan
    exp.print_summary(
        f"{exp.cfg.algo_name} on {exp.cfg.env.label}: finished",
        tables,
        {"t_env": f"{state.t_env:,}", "episodes": f"{state.episode:,}", "train wall time (s)": round(state.wall_time, 1),
         "env steps / s": round(steps_per_s), "checkpoint": str(ckpt)}
        | ({"start-up to first env step (s)": round(exp.startup_s, 2)} if exp.startup_s is not None else {}),
    )
    comps.loggers.finish("FINISHED")
    return RunResult("FINISHED", state.t_env, dict(state.latest), ckpt, tables, exp.run_dir)


def _evaluate(exp: Experiment, ckpt_path: Path | None) -> RunResult:
    comps, state = exp.comps, exp.state
    try:
        stats = exp.test_phase()
    except RolloutAborted as exc:  # Ctrl-C during a long evaluation
        console.print(f"[yellow]{exc}: evaluation stopped", soft_wrap=True)
        comps.loggers.finish("KILLED", f"stopped by signal {exp.stop.signum} during the evaluation")
        return RunResult("KILLED", state.t_env, {}, ckpt_path, [], exp.run_dir, EXIT_CODES.get(exp.stop.signum or signal.SIGINT, 130))
    tables = exp.q_tables()
    if tables:
        f = exp.run_dir / "artifacts" / "q_tables.json"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(tables, indent=1))
        comps.loggers.log_artifact(f)
    exp.print_summary(
        f"evaluation of {ckpt_path}", tables, {"t_env of checkpoint": f"{state.t_env:,}", "test episodes": exp.cfg.test_nepisodes}
    )
    comps.loggers.finish("FINISHED")
    return RunResult("FINISHED", state.t_env, stats, ckpt_path, tables, exp.run_dir)
