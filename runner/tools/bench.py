"""Throughput benchmark of QMIX (and IPPO, MAPPO), on the two-step matrix game and on LBF: ``python -m runner.tools bench`` (``make bench``).

Writes ``outputs/bench/bench.{md,json}`` and puts the table between the ``<!-- bench:start -->``
and ``<!-- bench:end -->`` lines of docs/performance.md (when both exist; ``--no-docs`` skips it).

Each config runs in its own subprocess (``--one NAME``), so that its peak RSS is its own:
two-step with the episode runner (B=1) and the parallel runner (B=64, B=1024; natively batched),
the three-agent two-step (``twostep3``) at B=64 without agent groups (one shared network over
three agents) and with groups (two agents learn, the third acts at random), and Level-Based Foraging (``Foraging-8x8-2p-3f-v3``, a Python env) at PyMARL-family defaults
(Adam 5e-4, batch 32 episodes, buffer 5000, 64-unit feed-forward agent with agent-id input,
epsilon 1 -> 0.05 over 50k, target copy every 200 episodes) with the episode runner (B=1, in
process) and the parallel runner (B=8 copies in 2 worker processes, in 1, and in this process).
The numbers:

- train env-steps/s: env steps per second of wall time of the real training iteration,
  ``Experiment.train_iteration()`` -- rollout of B episodes, buffer insert, one learner update
  (batch 32) -- after a warm-up (until the buffer can sample, plus a few iterations), timed
  for ``--seconds``. No loggers, no test phases, no checkpoints.
- train env-steps/CPU-s: the same steps per second of CPU time of the main process and its env
  worker processes (``time.process_time`` plus the workers' ``/proc/PID/stat``); less sensitive
  to other load on a shared machine.
- acting-only env-steps/s: rollouts only (``runner.run``), no buffer insert and no learner update.
- learner ms/update: wall ms of one ``learner.train`` on a batch of 32 sampled episodes (B=1 config;
  it does not depend on B); for IPPO and MAPPO, one PPO update (4 epochs) on the 8 episodes of a rollout.
- IPPO and MAPPO (EPyMARL's presets: GRU 128 actor, 2-layer critic, 4 epochs, one update per rollout of
  B=8 episodes in 2 worker processes) on the same LBF task, beside QMIX's parallel rows; MADDPG with
  EPyMARL's preset on LBF (episode runner; an update on 32 sampled episodes after each episode) and with
  AgileRL's speaker-listener preset (continuous actions; an update on 128 transitions every 96 env steps).
- peak RSS MB: ``ru_maxrss`` of the config's subprocess (imports, build, all its measurements),
  plus the peak RSS (``VmHWM``) of each env worker process.
- LBF only: the env's own step cost (``gymnasium.make`` of the task, random actions, CPU µs per
  step, in process) and the framework overhead per env step: acting-only CPU µs per env step
  (all processes) minus the env's own step cost -- action selection, the adapter, IPC, buffer writes.
- start-up: seconds from process start (``/proc``) to the first env step, as the app reports it in
  its summary, of ``python -m runner +algo=qmix +env=twostep t_max=2 test_nepisodes=1``, median
  of 3: with ``logger=[console]`` (no MLflow), and with the default loggers and MLflow on a fresh
  SQLite store in a temp dir (MLFLOW_TRACKING_URI) for each run; plus the wall time of the
  whole 2-step run from launch to exit (it adds the first optimiser step, which imports
  torch._dynamo, ~1 s, and the end-of-run plot).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import runner

ROOT = Path(runner.__file__).resolve().parent.parent
BASE = ["logger=[]", "progress=false", "t_max=1000000000"]
QMIX = ["+algo=qmix"]  # the configs without an algorithm in their name: QMIX
LBF = [*QMIX, "+env=lbf"]  # conf/algo/qmix + the learner/controller/agent/buffer defaults are PyMARL's
CONFIGS = {
    "twostep, episode, B=1": [*QMIX, "+env=twostep", "runner=episode"],
    "twostep, parallel, B=64": [*QMIX, "+env=twostep", "runner=parallel", "runner.n_envs=64"],
    "twostep, parallel, B=1024": [*QMIX, "+env=twostep", "runner=parallel", "runner.n_envs=1024"],
    "twostep3, parallel, B=64": [*QMIX, "+env=twostep3", "runner=parallel", "runner.n_envs=64"],
    "twostep3, groups 2 learn + 1 random, parallel, B=64": [
        *QMIX, "+env=twostep3", "runner=parallel", "runner.n_envs=64",
        "groups={learners:[agent_0,agent_1],others:{agents:[agent_2],policy:random}}"],
    "LBF, episode, B=1": [*LBF, "runner=episode"],
    "LBF, parallel, B=8, 2 workers": [*LBF, "runner=parallel", "runner.n_envs=8", "runner.n_workers=2"],
    "LBF, parallel, B=8, 1 worker": [*LBF, "runner=parallel", "runner.n_envs=8", "runner.n_workers=1"],
    "LBF, parallel, B=8, in process": [*LBF, "runner=parallel", "runner.n_envs=8", "runner.n_workers=0"],
    # the on-policy presets (EPyMARL's ippo/mappo: GRU 128, 4 epochs) on the same task and runner; one update per rollout
    "LBF, IPPO, parallel, B=8, 2 workers": ["+algo=ippo", "+env=lbf", "runner.n_envs=8", "runner.n_workers=2",
                                            "learner.batch_size=8"],
    "LBF, MAPPO, parallel, B=8, 2 workers": ["+algo=mappo", "+env=lbf", "runner.n_envs=8", "runner.n_workers=2",
                                             "learner.batch_size=8"],
    # MADDPG: EPyMARL's preset (GRU 128 actors, 32 episodes per update) on LBF; AgileRL's speaker-listener preset
    # (MLP actors, 128 transitions per update, one every 96 env steps) on continuous actions
    "LBF, MADDPG, episode, B=1": ["+algo=maddpg", "+env=lbf"],
    "speaker-listener continuous, MADDPG, parallel, B=8, in process": [
        "+experiment=maddpg_speaker_listener", "runner.n_workers=0"],
}
LEARNER_CONFIGS = ("twostep, episode, B=1", "LBF, episode, B=1", "LBF, IPPO, parallel, B=8, 2 workers",
                   "LBF, MAPPO, parallel, B=8, 2 workers", "LBF, MADDPG, episode, B=1",
                   "speaker-listener continuous, MADDPG, parallel, B=8, in process")
LBF_KEY = "Foraging-8x8-2p-3f-v3"
MARK_START, MARK_END = "<!-- bench:start -->", "<!-- bench:end -->"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _timed(step, seconds: float, sync, workers: tuple[int, ...] = ()) -> tuple[int, float, float]:
    """Call step() (returns env steps) until `seconds` of wall time passed -> (steps, wall s, CPU s),
    CPU counting this process and the env worker processes."""

    def cpu() -> float:
        return time.process_time() + sum(_proc_cpu_s(p) for p in workers)

    n, w0, c0 = 0, time.perf_counter(), cpu()
    while time.perf_counter() - w0 < seconds:
        n += step()
    sync()
    return n, time.perf_counter() - w0, cpu() - c0


def env_step_us(seconds: float) -> float:
    """CPU µs per step of LBF itself (gymnasium.make, random actions, resets included)."""
    import gymnasium
    import lbforaging  # noqa: F401 (registers the envs)

    env = gymnasium.make(LBF_KEY, disable_env_checker=True)
    env.reset(seed=0)
    env.action_space.seed(0)
    acts = [env.action_space.sample() for _ in range(256)]

    def step() -> int:
        n = 0
        for a in acts:
            _, _, done, trunc, _ = env.step(a)
            n += 1
            if done or trunc:
                env.reset()
        return n

    n, _, cpu = _timed(step, seconds, lambda: None)
    env.close()
    return 1e6 * cpu / n


def bench_one(name: str, seconds: float, device_name: str) -> dict:
    """Measure one config in this process (run as ``--one NAME`` in a subprocess)."""
    import torch

    from runner.build import build, resolve_device, seed_everything
    from runner.compose import compose_config
    from runner.config import validate
    from runner.experiment import Experiment, StopRequest

    cfg = compose_config(BASE + CONFIGS[name])
    validate(cfg)
    device = resolve_device(device_name)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if cfg.torch_threads > 0:
        torch.set_num_threads(cfg.torch_threads)
    seed_everything(cfg.seed)
    comps = build(cfg, device)
    workers = tuple(p.pid for p in getattr(comps.env, "procs", ()))
    bs = cfg.learner.batch_size
    with tempfile.TemporaryDirectory() as tmp:
        exp = Experiment(cfg, comps, Path(tmp), StopRequest())
        while exp.state.last_learner_log_t < 0:  # warm-up: until the first update (the buffer can sample), then a few
            exp.train_iteration()
        for _ in range(5):
            exp.train_iteration()

        def train_step() -> int:
            t = exp.state.t_env
            exp.train_iteration()
            return exp.state.t_env - t

        steps, wall, cpu = _timed(train_step, seconds, sync, workers)
        out = {
            "env": cfg.env.label,
            "n_workers": len(workers),
            "n_envs": comps.env.n_envs,
            "train_steps": steps,
            "train_wall_s": wall,
            "train_cpu_s": cpu,
            "train_steps_per_s": steps / wall,
            "train_steps_per_cpu_s": steps / cpu if cpu > 0 else None,
        }

        steps, wall, cpu = _timed(lambda: comps.runner.run(t_env=0).steps, seconds, sync, workers)
        out["acting_steps_per_s"] = steps / wall
        out["acting_cpu_us_per_step"] = 1e6 * cpu / steps

        if name in LEARNER_CONFIGS:
            fixed = None
            if not comps.buffer.can_sample(bs):  # on-policy: each batch is sampled once; time updates on one
                comps.buffer.insert(comps.runner.run(t_env=0).batch)
                fixed = comps.buffer.sample(bs).to(device)

            def update() -> int:
                comps.learner.train(fixed if fixed is not None else comps.buffer.sample(bs).to(device), 0)
                return 1

            n, wall, _ = _timed(update, seconds, sync)  # warm already: the train loop ran updates
            out["learner_ms_per_update"] = 1000 * wall / n
        worker_rss = sum(_peak_rss_mb(p) for p in workers)
        comps.runner.close()
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 + worker_rss  # KB on Linux
    if cfg.env.label == "lbf":
        out["env_step_us"] = env_step_us(seconds)
        out["overhead_us_per_step"] = out["acting_cpu_us_per_step"] - out["env_step_us"]
    out["torch_threads"] = torch.get_num_threads()
    out["device"] = str(device)
    return out


def run_one(name: str, seconds: float, device: str) -> dict:
    cmd = [sys.executable, "-m", "runner.tools", "bench", "--one", name, "--seconds", str(seconds), "--device", device]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"bench of {name!r} failed (exit {p.returncode}):\n{p.stderr}")
    return json.loads(p.stdout.strip().splitlines()[-1])


STARTUP_RE = re.compile(r"start-up to first env step \(s\)\s*│\s*([\d.]+)")


def startup_s(mlflow: bool, device: str, reps: int = 3) -> tuple[float, float]:
    """Medians of (process start -> first env step, launch -> exit) of a 2-step training run."""
    times, firsts = [], []
    for _ in range(reps):
        with tempfile.TemporaryDirectory(prefix="hymarl-bench-") as tmp:
            env = dict(os.environ)
            cmd = [
                sys.executable,
                "-m",
                "runner",
                "+algo=qmix",
                "+env=twostep",
                "t_max=2",
                "test_nepisodes=1",
                "progress=false",
                f"device={device}",
                f"hydra.run.dir={tmp}/run",
            ]
            if mlflow:
                env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
            else:
                cmd.append("logger=[console]")
            t0 = time.perf_counter()
            p = subprocess.run(cmd, cwd=ROOT, env={**env, "COLUMNS": "200"}, capture_output=True, text=True)
            times.append(time.perf_counter() - t0)
            if p.returncode != 0:
                sys.exit(f"start-up run failed (exit {p.returncode}): {' '.join(cmd)}\n{p.stderr}")
            m = STARTUP_RE.search(p.stderr)
            if m is None:
                sys.exit(f"start-up run did not report its start-up time:\n{p.stderr}")
            firsts.append(float(m.group(1)))
    return statistics.median(firsts), statistics.median(times)


def to_markdown(res: dict) -> str:
    m = res["machine"]
    lines = [
        f"Measured {m['date'][:10]} on {m['cpu']} ({m['cpu_count']} CPUs), torch {m['torch']}, device {m['device']}, "
        f"{m['torch_threads']} torch thread(s); `python -m runner.tools bench --seconds {res['seconds']:g}`. "
        "QMIX unless named; train = rollout of B episodes + buffer insert + one learner update (QMIX: batch 32 "
        "episodes; IPPO/MAPPO: the rollout's 8 episodes, 4 epochs; MADDPG: EPyMARL's 32 episodes, or AgileRL's "
        "128 transitions every 96 env steps). "
        "CPU-s count the main process and its env worker processes.",
        "",
        "| config | train env-steps/s | train env-steps/CPU-s | acting-only env-steps/s | learner ms/update | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in res["configs"].items():
        cpu = f"{r['train_steps_per_cpu_s']:,.0f}" if r["train_steps_per_cpu_s"] else "–"
        lms = f"{r['learner_ms_per_update']:.2f}" if "learner_ms_per_update" in r else "–"
        lines.append(
            f"| {name} | {r['train_steps_per_s']:,.0f} | {cpu} | {r['acting_steps_per_s']:,.0f} | {lms} "
            f"| {r['peak_rss_mb']:,.0f} |"
        )
    lbf = {k: r for k, r in res["configs"].items() if "env_step_us" in r}
    if lbf:
        lines += [
            "",
            f"LBF `{LBF_KEY}`, CPU µs per env step while acting (no learner), all processes:",
            "",
            "| config | acting CPU µs/env-step | LBF's own step µs | framework overhead µs/env-step |",
            "|---|---:|---:|---:|",
        ]
        for name, r in lbf.items():
            lines.append(
                f"| {name} | {r['acting_cpu_us_per_step']:.0f} | {r['env_step_us']:.0f} | {r['overhead_us_per_step']:.0f} |"
            )
    s = res["startup_s"]
    lines += [
        "",
        "| start-up (median of 3) | seconds |",
        "|---|---:|",
        f"| process start to first env step, no MLflow | {s['no_mlflow'][0]:.2f} |",
        f"| process start to first env step, MLflow on a fresh SQLite store | {s['mlflow_sqlite'][0]:.2f} |",
        f"| whole 2-step run, launch to exit, no MLflow | {s['no_mlflow'][1]:.2f} |",
        f"| whole 2-step run, launch to exit, MLflow on a fresh SQLite store | {s['mlflow_sqlite'][1]:.2f} |",
    ]
    return "\n".join(lines) + "\n"


def update_docs(table: str, page: Path = ROOT / "docs" / "performance.md") -> bool:
    """Replace the lines between the bench markers of the page; False (and no change) if they are missing."""
    if not page.is_file():
        return False
    lines = page.read_text().splitlines(keepends=True)
    stripped = [ln.strip() for ln in lines]
    if MARK_START not in stripped or MARK_END not in stripped:
        return False
    i, j = stripped.index(MARK_START), stripped.index(MARK_END)
    if j < i:
        return False
    page.write_text("".join(lines[: i + 1]) + "\n" + table + "\n" + "".join(lines[j:]))
    return True


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m runner.tools bench", description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="timing budget per measurement and config")
    ap.add_argument(
        "--device", default="cpu", choices=["auto", "cpu", "cuda"], help="default cpu (comparable numbers)"
    )
    ap.add_argument("--one", choices=list(CONFIGS), help=argparse.SUPPRESS)
    ap.add_argument(
        "--no-docs", "--no-readme", dest="no_docs", action="store_true",
        help="do not update the table in docs/performance.md",
    )
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(bench_one(args.one, args.seconds, args.device)))
        return

    import torch

    from runner.build import resolve_device
    from runner.logging.console import console

    device = str(resolve_device(args.device))
    configs = {}
    for name in CONFIGS:
        with console.status(f"bench: {name} (~{3 * args.seconds:.0f} s)"):
            configs[name] = r = run_one(name, args.seconds, device)
        console.print(
            f"{name}: train {r['train_steps_per_s']:,.0f} env-steps/s, "
            f"acting {r['acting_steps_per_s']:,.0f} env-steps/s, peak RSS {r['peak_rss_mb']:,.0f} MB"
        )
    startup = {}
    for key, mlflow in (("no_mlflow", False), ("mlflow_sqlite", True)):
        with console.status(f"bench: start-up time, {key} (3 runs)"):
            startup[key] = startup_s(mlflow, device)
        console.print(f"start-up {key}: {startup[key][0]:.2f} s to the first env step, {startup[key][1]:.2f} s in all")
    first = next(iter(configs.values()))
    res = {
        "machine": {
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "cpu": cpu_name(),
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "device": first["device"],
            "torch_threads": first["torch_threads"],
        },
        "seconds": args.seconds,
        "configs": configs,
        "startup_s": startup,
    }
    table = to_markdown(res)
    out = ROOT / "outputs" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(res, indent=1) + "\n")
    (out / "bench.md").write_text("# hymarl benchmark\n\n" + table)
    console.print(f"wrote {out / 'bench.md'} and {out / 'bench.json'}")
    if not args.no_docs and update_docs(table):
        console.print("updated the bench table in docs/performance.md")
    print(table)
