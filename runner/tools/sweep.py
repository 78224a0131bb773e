"""Sweeps (``python -m runner -m ...``) as one MLflow parent run with a child run per job.

A Hydra callback (``hydra.callbacks.mlflow_sweep`` in conf/hydra/default.yaml) does the
launcher-side work, whatever the launcher (basic, joblib, submitit, ray) or sweeper (basic, optuna):

- ``on_multirun_start``: checks the tracking server, creates the SQLite store and the experiment
  *once* (concurrent jobs creating a fresh store race on its migrations), then creates the parent
  run -- or reopens it when the same sweep dir is run again -- and writes ``mlflow_sweep.json``
  into the sweep dir. Every job reads that file (it works across processes and cluster nodes
  sharing the sweep dir) to tag its run as a child.
- ``on_job_end`` (in the job's process): writes ``job_status.json`` into the job's dir: its status,
  error and objective. Counting these files catches jobs that failed before they had a run.
- ``on_multirun_end`` (or, when the sweeper raised for a failed job, an atexit hook): counts the
  jobs, logs ``jobs_*`` metrics and the failed jobs on the parent, the optuna study's best params,
  a report of the children (``runner.tools.report``) as artifacts, and sets the parent's status: FINISHED
  only when every job finished. A sweep with a failed job exits non-zero.

Re-running a sweep with the same ``hydra.sweep.dir`` skips the jobs that finished and resumes the
others from their latest checkpoint (``hydra.callbacks.mlflow_sweep.resume=false`` starts them
over); the children keep their MLflow runs.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import sys
import threading
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

SWEEP_FILE = "mlflow_sweep.json"
JOB_FILE = "job_status.json"
STOP_FILE = "STOP"  # written on Ctrl-C: jobs that have not started yet do not start
PID_ENV = "HYMARL_SWEEP_PID"  # the launcher's pid, inherited by jobs in child processes
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
NAME_KEYS = {"algo", "env", "seed", "experiment"}  # keys the default run name already shows


# -- helpers ------------------------------------------------------------------------------------
def _override_key(key: str) -> str:
    return key.lstrip("+~")


def sweep_overrides(task_overrides: list[str]) -> dict[str, str]:
    """{key: value text} of the overrides that sweep (``seed=0,1,2``, ``+algo=qmix,vdn``, ranges...)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    out = {}
    for o in OverridesParser.create().parse_overrides(task_overrides):
        if o.is_sweep_override():
            out[_override_key(o.key_or_group)] = (o.input_line or "").partition("=")[2]
    return out


def varying_overrides(cfg: DictConfig, task_overrides: list[str]) -> dict[str, str]:
    """{key (without +/~): value text} of what varies between the sweep's jobs: the command line's
    sweep overrides, and the sweeper's own ``hydra.sweeper.params`` (e.g. a ``+benchmark``'s lists)
    except where the command line sets the key, to a list or to one value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    varying = sweep_overrides(task_overrides)
    given = {_override_key(o.key_or_group) for o in OverridesParser.create().parse_overrides(task_overrides)}
    for k, v in (OmegaConf.select(cfg, "hydra.sweeper.params", default=None) or {}).items():
        if _override_key(str(k)) not in given:
            varying[_override_key(str(k))] = str(v)
    return varying


def basic_sweep_jobs(cfg: DictConfig, task_overrides: list[str]) -> list[list[str]]:
    """The override lists of a basic sweep's jobs, as Hydra's BasicSweeper makes them: the config's
    ``hydra.sweeper.params`` (e.g. a ``+benchmark`` preset's tasks x algorithms x seeds) first, then
    the command line's overrides, which win for a key given in both."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = OmegaConf.select(cfg, "hydra.sweeper.params", default=None) or {}
    lines = [f"{k}={v}" for k, v in params.items()] + list(task_overrides)
    parsed = OverridesParser.create().parse_overrides(lines)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def expected_jobs(cfg: DictConfig, task_overrides: list[str]) -> int | None:
    """How many jobs the sweep launches (basic sweeper: the product of the lists; optuna: n_trials)."""
    target = OmegaConf.select(cfg, "hydra.sweeper._target_", default="")
    try:
        if target == BASIC_SWEEPER:
            return len(basic_sweep_jobs(cfg, task_overrides))
        if "optuna" in str(target):
            return int(cfg.hydra.sweeper.n_trials)
    except Exception:
        return None
    return None


def _mlflow_logger_cfg(cfg: DictConfig) -> DictConfig | None:
    node = OmegaConf.select(cfg, "logger.mlflow", default=None)
    return node if isinstance(node, DictConfig) else None


def read_sweep_file(sweep_dir: str | Path) -> dict[str, Any] | None:
    f = Path(sweep_dir) / SWEEP_FILE
    if not f.is_file():
        return None
    return json.loads(f.read_text())


# -- the job's side ---------------------------------------------------------------------------------
def job_tags(sweep_dir: str | Path, job_num: int, task_overrides: list[str]) -> dict[str, str]:
    """Tags that make a job's run a child of the sweep's parent run (empty when there is none)."""
    info = read_sweep_file(sweep_dir)
    if not info:
        return {}
    from hydra.core.override_parser.overrides_parser import OverridesParser

    varying = set(info.get("varying", []))
    mine = [
        f"{_override_key(o.key_or_group)}={o.value()}"
        for o in OverridesParser.create().parse_overrides(task_overrides)
        if _override_key(o.key_or_group) in varying
    ]
    return {
        "mlflow.parentRunId": info["parent_run_id"],
        "sweep_id": info["sweep_id"],
        "sweep_job": str(job_num),
        "sweep_overrides": " ".join(mine),
    }


def job_name_suffix(sweep_dir: str | Path, job_num: int) -> str:
    """``-#<job>`` after the default run name (``qmix-twostep-s3``) when the sweep varies keys the
    name does not show (e.g. an optuna study), so the UI list tells the jobs apart; else nothing."""
    info = read_sweep_file(sweep_dir)
    extra = set(info.get("varying", [])) - NAME_KEYS if info else set()
    return f"-#{job_num}" if extra else ""


def previous_job(job_dir: Path) -> dict[str, Any] | None:
    f = job_dir / JOB_FILE
    return json.loads(f.read_text()) if f.is_file() else None


def write_job_status(job_dir: Path, status: str, error: str | None, value: Any) -> None:
    data = {"status": status, "error": error, "value": value, "time": time.time()}
    job_dir.mkdir(parents=True, exist_ok=True)
    tmp = job_dir / (JOB_FILE + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, job_dir / JOB_FILE)


# -- the launcher's side ------------------------------------------------------------------------------
class Heartbeat:
    """Refreshes the parent run's ``heartbeat`` tag while the launcher lives (runner.tracking.ownership)."""

    def __init__(self, tracking_uri: str, run_id: str) -> None:
        from runner.tracking import ownership, store

        self._done = threading.Event()

        def beat() -> None:
            client = None
            while not self._done.wait(ownership.HEARTBEAT_S):
                try:
                    client = client or store.new_client(tracking_uri)
                    client.set_tag(run_id, "heartbeat", f"{time.time():.0f}")
                except Exception:  # the next beat tries again
                    pass

        threading.Thread(target=beat, name="hymarl-sweep-heartbeat", daemon=True).start()

    def stop(self) -> None:
        self._done.set()


class MLflowSweepCallback(Callback):
    """Parent run per sweep; see the module docstring. Options (``hydra.callbacks.mlflow_sweep.*``):
    ``report`` (write and log the report at the end), ``resume`` (re-running a sweep dir skips
    finished jobs and resumes the others), ``validate`` (compose and check every job's config before
    any job runs; basic sweeper only, as other sweepers choose their jobs as they go)."""

    def __init__(self, report: bool = True, resume: bool = True, validate: bool = True) -> None:
        self.report = report
        self.resume = resume
        self.validate = validate
        self._state: dict[str, Any] | None = None
        self._finished = False
        self._beat: Heartbeat | None = None

    def __getstate__(self) -> dict[str, Any]:  # jobs in worker processes get a copy, without the heartbeat thread
        return {**self.__dict__, "_beat": None}

    # Hydra calls these -------------------------------------------------------------------------
    # Hydra turns a callback's exceptions into warnings: what must stop the sweep exits instead.
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from runner.errors import ConfigError

        if self.validate:
            errors = validate_jobs(config, kwargs.get("config_name") or "config")
            if errors:
                n = expected_jobs(config, [str(o) for o in config.hydra.overrides.task])
                print(f"Error: {len(errors)} of {n} jobs of this sweep have an invalid config; no job was run:\n  "
                      + "\n  ".join(errors), file=sys.stderr)
                sys.exit(2)
        from runner.tracking import ownership

        sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        try:
            # one launcher per sweep dir: a second launch of a running sweep would run its jobs twice
            ownership.acquire(sweep_dir, what="sweep dir")
            self._state = start_parent(config)
        except ConfigError as exc:  # e.g. the tracking server is down: no job starts
            print(f"Error: {exc}", file=sys.stderr)
            sys.exit(2)
        if self._state is not None:
            self._beat = Heartbeat(self._state["tracking_uri"], self._state["parent_run_id"])
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / STOP_FILE).unlink(missing_ok=True)  # left by an interrupted earlier run
        os.environ[PID_ENV] = str(os.getpid())
        SweepStop(sweep_dir).install()
        if self._state is not None:
            atexit.register(self._at_exit)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self._state is None or self._finished:
            return
        self._finished = True
        if self._beat is not None:
            self._beat.stop()
        summary = finish_parent(self._state, report=self.report)
        if summary["failed"] or summary["not_run"]:
            print(f"Error: {summary['message']}", file=sys.stderr)
            sys.exit(1)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.get().mode != RunMode.MULTIRUN:
            return
        global JOB_OUTCOME
        job_dir = Path(HydraConfig.get().runtime.output_dir)
        outcome, JOB_OUTCOME = JOB_OUTCOME, None
        if outcome == "not_started":
            return  # counted as not run
        if outcome == "killed":  # stopped by a signal: app() wrote its KILLED status
            print_progress(Path(HydraConfig.get().sweep.dir))
            return
        if job_return.status == JobStatus.COMPLETED:
            value = job_return._return_value
            write_job_status(job_dir, "FINISHED", None, value if isinstance(value, (int, float)) else None)
        else:
            exc = job_return._return_value
            write_job_status(job_dir, "FAILED", f"{type(exc).__name__}: {exc}", None)
        print_progress(Path(HydraConfig.get().sweep.dir))

    def _at_exit(self) -> None:
        """The basic sweeper raises the first failed job's error before on_multirun_end: the parent
        still gets its counts and status."""
        if self._state is None or self._finished:
            return
        self._finished = True
        if self._beat is not None:
            self._beat.stop()
        try:
            finish_parent(self._state, report=self.report)
        except Exception as exc:  # at exit there is nobody left to raise to
            print(f"warning: could not finish the sweep's MLflow parent run: {exc}")


def validate_jobs(cfg: DictConfig, config_name: str) -> list[str]:
    """Compose and validate the config of every job of a basic sweep, as the job itself will:
    ``["job 3 (+algo=qmix learner.lr=-1): <error>", ...]``. An invalid config fails the sweep before
    a parent run or any job exists."""
    if OmegaConf.select(cfg, "hydra.sweeper._target_", default="") != BASIC_SWEEPER:
        return []
    from hydra import compose

    from runner.config import check_required_groups, validate

    task = [str(o) for o in cfg.hydra.overrides.task]
    searchpath = [str(o) for o in cfg.hydra.overrides.hydra if str(o).startswith("hydra.searchpath")]
    jobs = basic_sweep_jobs(cfg, task)
    errors = []
    for num, job in enumerate(jobs):
        try:
            jcfg = compose(config_name=config_name, overrides=[*searchpath, *job], return_hydra_config=True)
            choices = dict(jcfg.hydra.runtime.choices)
            if not (choices.get("algo") and choices.get("env")) and (jcfg.get("resume") or jcfg.get("checkpoint")):
                continue  # the checkpoint's own config: checked by the job
            check_required_groups(choices)
            with open_dict(jcfg):
                del jcfg["hydra"]
            validate(jcfg)
        except Exception as exc:
            errors.append(f"job {num} ({' '.join(job)}): {_short_error(exc)}")
    return errors


def _short_error(exc: Exception) -> str:
    """Hydra's composition errors without the search path; options listed on one line."""
    text = str(exc).split("\nConfig search path")[0].strip()
    head, sep, options = text.partition("Available options in")
    if sep:
        group, _, names = options.partition(":")
        text = f"{head.strip()} (available in{group}: {', '.join(n.strip() for n in names.split() if n.strip())})"
    return text.replace("\n", "\n    ")


STOPPED = False  # set in the launcher's process by the first Ctrl-C (or SIGTERM)
STOP_SIGNAL: int = signal.SIGINT


def in_launcher_process() -> bool:
    """True when the job runs in the launcher's own process (the basic launcher)."""
    return os.environ.get(PID_ENV, str(os.getpid())) == str(os.getpid())


def is_stopped(sweep_dir: str | Path) -> bool:
    return (Path(sweep_dir) / STOP_FILE).exists()


# How the job that just ran in this process ended when it returned without a result (a job in a worker
# stopped by a signal, or not started after one): read and reset by on_job_end. Such a job returns NaN
# rather than raising, so the launcher prints no traceback for a Ctrl-C.
JOB_OUTCOME: str | None = None


def _child_pids() -> list[int]:
    """Direct children of this process (Linux /proc; elsewhere none)."""
    me, out = os.getpid(), list[int]()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return out
    for e in entries:
        if not e.isdigit():
            continue
        try:
            with open(f"/proc/{e}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == me:
            out.append(int(e))
    return out


def _is_helper_process(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().decode(errors="replace")
    except OSError:
        return False
    return any(h in cmd for h in ("forkserver", "resource_tracker", "semaphore_tracker"))


class SweepStop:
    """Ctrl-C in the launcher's process while jobs run in child processes (joblib, submitit_local):
    the first one writes the sweep's STOP file (no new job starts) and passes SIGINT on to the running
    jobs, which stop with a checkpoint (a job that got it from the terminal too ignores the repeat);
    the launcher then collects them and exits 130. A second Ctrl-C aborts at once."""

    def __init__(self, sweep_dir: Path) -> None:
        self.sweep_dir = sweep_dir
        self.count = 0
        self.at = 0.0

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self)
            signal.signal(signal.SIGTERM, self)

    def __call__(self, signum: int, frame: Any) -> None:
        global STOPPED, STOP_SIGNAL
        if self.count and time.monotonic() - self.at < 1.0:
            return  # the same Ctrl-C, delivered again
        self.count += 1
        if self.count > 1:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.default_int_handler)
            raise KeyboardInterrupt
        STOPPED, STOP_SIGNAL = True, signum
        self.at = time.monotonic()
        name = signal.Signals(signum).name
        (self.sweep_dir / STOP_FILE).write_text(f"stopped by {name} at {time.ctime()}\n")
        print(f"[sweep] stopping: running jobs save a checkpoint, no new job starts ({name}; again to abort); "
              "run the same command with the same hydra.sweep.dir to continue", file=sys.stderr, flush=True)
        for pid in _child_pids():
            if signum != signal.SIGINT and _is_helper_process(pid):
                continue  # multiprocessing's fork server / resource tracker: jobs' env workers need them
            with contextlib.suppress(OSError):
                os.kill(pid, signum)


def start_parent(cfg: DictConfig) -> dict[str, Any] | None:
    """Create (or reopen) the sweep's parent run; None when the sweep does not log to MLflow."""
    from runner.experiment import git_commit
    from runner.tracking import ownership, store

    mcfg = _mlflow_logger_cfg(cfg)
    if mcfg is None:
        return None
    uri = mcfg.get("tracking_uri") or store.default_tracking_uri()
    experiment = mcfg.get("experiment_name") or "hymarl"
    sweep_dir = Path(str(cfg.hydra.sweep.dir)).resolve()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    task = [str(o) for o in cfg.hydra.overrides.task]
    varying = varying_overrides(cfg, task)

    n_jobs = expected_jobs(cfg, task)
    client = store.client_for(uri)  # fails in seconds when a server is down
    exp_id = store.ensure_experiment(client, experiment, uri)  # the store's migrations run here, once
    previous = read_sweep_file(sweep_dir)
    if previous and previous.get("tracking_uri") == uri:
        run_id = previous["parent_run_id"]
        close_stale_children(client, previous.get("experiment_id") or exp_id, run_id)
        parent = client.get_run(run_id)
        if parent.info.status == "RUNNING":  # we hold the sweep dir: the launcher that left it so is gone
            print(f"[sweep] the parent run was left RUNNING by an earlier launcher ({ownership.run_owner(parent)}) "
                  "that ended without a final status", file=sys.stderr)
        store.retry(client.update_run, run_id, status="RUNNING")
        for key, value in ownership.owner_tags().items():
            store.retry(client.set_tag, run_id, key, value)
        reruns = int(client.get_run(run_id).data.tags.get("sweep_reruns", "0")) + 1
        store.retry(client.set_tag, run_id, "sweep_reruns", str(reruns))
        store.retry(client.set_tag, run_id, "sweep_rerun_overrides", " ".join(task))
        info = {**previous, "varying": sorted(varying)}
        print(f"[sweep] re-running {sweep_dir}: MLflow parent run {run_id} reopened")
    else:
        sweep_id = uuid.uuid4().hex[:8]
        leaf = "/".join(sweep_dir.parts[-2:])
        name = f"sweep {leaf}: {' '.join(task)}"[:250]
        commit = git_commit()
        launcher = str(OmegaConf.select(cfg, "hydra.launcher._target_", default="")).rsplit(".", 1)[-1]
        sweeper = str(OmegaConf.select(cfg, "hydra.sweeper._target_", default="")).rsplit(".", 1)[-1]
        tags = {
            **ownership.owner_tags(),
            "mode": "sweep",
            "sweep_id": sweep_id,
            "sweep_dir": str(sweep_dir),
            "hydra_overrides": " ".join(task),
            "varying": " ".join(sorted(varying)),
            "launcher": launcher,
            "sweeper": sweeper,
            "git_commit": commit,
            "mlflow.source.git.commit": commit,
        }
        if n_jobs is not None:
            tags["jobs_expected"] = str(n_jobs)
        bench_name = OmegaConf.select(cfg, "benchmark.name", default=None)
        if bench_name:
            tags["benchmark"] = str(bench_name)
        run = store.retry(client.create_run, exp_id, run_name=name, tags=tags)
        run_id = run.info.run_id
        from mlflow.entities import Param

        params = [Param(_param_key(k), v[:6000]) for k, v in varying.items()]
        for o in task:  # the fixed overrides too, so the parent says what every child shares
            k, _, v = o.partition("=")
            if _override_key(k) not in varying:
                params.append(Param(_param_key(k), v[:6000]))
        if params:
            store.retry(client.log_batch, run_id, params=params, synchronous=True)
        info = {"parent_run_id": run_id, "sweep_id": sweep_id, "tracking_uri": uri, "experiment_id": exp_id,
                "experiment": experiment, "sweep_dir": str(sweep_dir), "varying": sorted(varying)}
        print(f"[sweep] MLflow parent run {run_id} ({name}) in {uri}")
    info["expected"] = n_jobs
    bench = OmegaConf.select(cfg, "benchmark", default=None)
    info["benchmark"] = OmegaConf.to_container(bench, resolve=True) if bench is not None else None
    tmp = sweep_dir / (SWEEP_FILE + ".tmp")
    tmp.write_text(json.dumps(info, indent=1))
    os.replace(tmp, sweep_dir / SWEEP_FILE)
    return {**info, "started": time.time()}


def close_stale_children(client: Any, experiment_id: str, parent_run_id: str) -> None:
    """A re-run of a sweep: its child runs left RUNNING by processes that are gone are marked KILLED
    (with the reason) before their jobs are resumed; children whose job still runs are left alone."""
    from runner.tools.stale import close_stale
    from runner.tracking import store

    runs = store.retry(client.search_runs, [experiment_id],
                       filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and attributes.status = 'RUNNING'")
    for run, reason in close_stale(client, runs):
        print(f"[sweep] child run {run.info.run_id} ({run.info.run_name}) marked KILLED: {reason}", file=sys.stderr)


def _param_key(key: str) -> str:
    return _override_key(key).replace("@", ".").replace("/", ".")


def print_progress(sweep_dir: Path) -> None:
    """One line after each job, from whichever process ran it: ``[sweep] 7/30 jobs done (7 finished)``."""
    info = read_sweep_file(sweep_dir) or {}
    counts: dict[str, int] = {}
    for j in job_statuses(sweep_dir).values():
        counts[j["status"]] = counts.get(j["status"], 0) + 1
    done = sum(counts.values())
    total = f"/{info['expected']}" if info.get("expected") else ""
    detail = ", ".join(f"{n} {status.lower()}" for status, n in sorted(counts.items()))
    print(f"[sweep] {done}{total} jobs done ({detail})", flush=True)


def job_statuses(sweep_dir: Path) -> dict[str, dict[str, Any]]:
    """{job dir name: job_status.json} for the sweep's jobs."""
    out = {}
    for f in sorted(sweep_dir.glob(f"*/{JOB_FILE}")):
        try:
            out[f.parent.name] = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
    return out


def finish_parent(state: dict[str, Any], report: bool = True) -> dict[str, Any]:
    """Count the jobs, log the summary (and optuna's best params, and the report) on the parent run,
    and set its status. Returns {"failed": n, "message": str, ...}."""
    from mlflow.entities import Metric, Param

    from runner.tracking import store

    client = store.client_for(state["tracking_uri"])
    run_id, sweep_dir = state["parent_run_id"], Path(state["sweep_dir"])
    jobs = job_statuses(sweep_dir)
    by_status: dict[str, list[str]] = {}
    for name, j in jobs.items():
        by_status.setdefault(j["status"], []).append(name)
    n_done = len(jobs)
    expected = state.get("expected")
    finished = len(by_status.get("FINISHED", []))
    failed = len(by_status.get("FAILED", []))
    killed = len(by_status.get("KILLED", []))
    not_run = max(0, expected - n_done) if expected else 0
    now = int(time.time() * 1000)
    metrics = {"jobs_finished": finished, "jobs_failed": failed, "jobs_killed": killed, "jobs_not_run": not_run,
               "sweep_wall_time_s": round(time.time() - state["started"], 1)}
    store.retry(client.log_batch, run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
                synchronous=True)
    errors = [f"job {n}: {jobs[n]['error']}" for n in by_status.get("FAILED", [])]
    if errors:
        store.retry(client.set_tag, run_id, "failed_jobs", "\n".join(errors)[:5000])

    results = sweep_dir / "optimization_results.yaml"
    if results.is_file():
        best = OmegaConf.to_container(OmegaConf.load(results))
        if isinstance(best, dict) and "best_params" in best:
            params = [Param(f"best.{_param_key(str(k))}", str(v)) for k, v in best["best_params"].items()]
            try:
                store.retry(client.log_batch, run_id, params=params, synchronous=True)
            except Exception as exc:  # a re-run whose study found other best params: params are immutable
                print(f"warning: could not log the best params on the parent run: {exc}")
            store.retry(client.log_batch, run_id,
                        metrics=[Metric("best_value", float(best["best_value"]), now, 0)], synchronous=True)
        store.retry(client.log_artifact, run_id, str(results))
    multirun_yaml = sweep_dir / "multirun.yaml"
    if multirun_yaml.is_file():
        store.retry(client.log_artifact, run_id, str(multirun_yaml))

    if report and finished:
        try:
            from runner.tools.report import log_report, select_runs, write_report

            runs = select_runs(client, parent=run_id)
            bench = state.get("benchmark") or {}
            if runs:
                out = write_report(client, runs, sweep_dir / "report", title=f"sweep {state['sweep_id']}",
                                   published=bench.get("published"), benchmark=bench.get("name"))
                log_report(client, run_id, out.parent)
                print(f"[sweep] report: {out}")
        except Exception:  # the report is a convenience: never lose the sweep's status over it
            print(f"warning: the sweep report failed:\n{traceback.format_exc()}")

    bad = failed + killed + not_run
    total = n_done + not_run
    if bad:
        parts = [f"{failed} failed" if failed else "", f"{killed} interrupted" if killed else "",
                 f"{not_run} not run" if not_run else ""]
        message = f"{bad} of {total} jobs did not finish ({', '.join(p for p in parts if p)})"
        if errors:
            message += ":\n  " + "\n  ".join(errors)
        status = "KILLED" if not failed and (killed or not_run) else "FAILED"
        store.retry(client.set_tag, run_id, "error", message[:5000])
    else:
        message = f"all {total} jobs finished"
        status = "FINISHED"
        if "error" in client.get_run(run_id).data.tags:
            client.delete_tag(run_id, "error")
    store.retry(client.set_terminated, run_id, status=status)
    print(f"[sweep] {message}; MLflow parent run {run_id}: {status}")
    return {"failed": failed + killed, "not_run": not_run, "finished": finished, "message": message,
            "status": status}
