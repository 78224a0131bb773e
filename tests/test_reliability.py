"""Nothing lost, nothing doubled: run-dir ownership, hard kills, stale runs, store creation races.

Everything here uses real processes (``python -m runner``), real signals (SIGKILL, SIGTERM) and a
real SQLite MLflow store, and reads the outcome back with MlflowClient.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import ROOT, runs_of, train
from mlflow.tracking import MlflowClient

from runner import checkpoint
from runner.tracking import ownership

PY = sys.executable


def env_with(store_uri: str) -> dict[str, str]:
    return {**os.environ, "MLFLOW_TRACKING_URI": store_uri}


def wait_for(cond, what: str, timeout: float = 180.0, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the process ended first:\n{proc.stdout.read() if proc.stdout else ''}")
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def hold_lock(run_dir: Path) -> subprocess.Popen:
    """Another process that owns ``run_dir`` (as a live run would) until it is killed."""
    code = textwrap.dedent(f"""
        import sys
        from runner.tracking import ownership
        ownership.acquire({str(run_dir)!r})
        print("held", flush=True)
        sys.stdin.read()
    """)
    p = subprocess.Popen([PY, "-c", code], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for e in os.listdir("/proc"):
        if e.isdigit():
            try:
                with open(f"/proc/{e}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(e))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def alive(pids: set[int]) -> set[int]:
    out = set()
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    out.add(p)
        except OSError:
            pass
    return out


def metric_steps(client: MlflowClient, run_id: str, key: str = "test_return_mean") -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


# -- the lock ----------------------------------------------------------------------------------------
def test_a_run_dir_has_one_owner_and_the_kernel_frees_it_when_the_owner_dies(tmp_path: Path) -> None:
    d = tmp_path / "run"
    holder = hold_lock(d)
    try:
        assert ownership.owner(d)["pid"] == holder.pid
        with pytest.raises(ownership.RunDirBusy, match=f"run dir {d} is in use by pid {holder.pid} on "):
            ownership.acquire(d)
    finally:
        holder.kill()  # SIGKILL: no clean-up code runs, the kernel drops the lock
        holder.wait()
    assert ownership.owner(d) is None
    ownership.acquire(d)
    try:
        assert ownership.owner(d)["pid"] == os.getpid()
        ownership.acquire(d)  # this process holds it already: a no-op
    finally:
        ownership.release(d)
    assert ownership.owner(d) is None


@pytest.mark.slow
def test_a_second_resume_of_a_run_dir_is_refused_with_the_owners_pid(tmp_path: Path, store, store_uri, exp_name) -> None:
    train(tmp_path / "run", "+algo=qmix", "+env=twostep", "t_max=200", "test_nepisodes=2",
          f"logger.mlflow.experiment_name={exp_name}")
    holder = hold_lock(tmp_path / "run")  # stands for a resume that is running
    try:
        r = subprocess.run([PY, "-m", "runner", f"resume={tmp_path / 'run'}", "t_max=400",
                            f"hydra.run.dir={tmp_path / 'second'}"], cwd=tmp_path, env=env_with(store_uri),
                           capture_output=True, text=True, timeout=300)
    finally:
        holder.kill()
        holder.wait()
    assert r.returncode == 2, r.stderr
    assert f"Error: run dir {tmp_path / 'run'} is in use by pid {holder.pid} on " in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "second").exists()
    (run_,) = runs_of(store, exp_name)
    assert run_.info.status == "FINISHED" and metric_steps(store, run_.info.run_id)[-1] == 200


# -- kill -9 of a run, stale runs ------------------------------------------------------------------------
def start_run(tmp_path: Path, store_uri: str, exp_name: str, name: str, *extra: str) -> subprocess.Popen:
    args = ["+algo=qmix", "+env=twostep", "t_max=10000000", "test_interval=500", "log_interval=500",
            "test_nepisodes=4", "save_interval=1000", "progress=false", f"logger.mlflow.experiment_name={exp_name}",
            f"hydra.run.dir={tmp_path / name}", *extra]
    return subprocess.Popen([PY, "-m", "runner", *args], cwd=tmp_path, env=env_with(store_uri),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def kill_9_after_a_checkpoint(proc: subprocess.Popen, run_dir: Path) -> int:
    wait_for(lambda: len(list((run_dir / "checkpoints").glob("step_*.pt"))) >= 2, "two checkpoints", proc=proc)
    proc.kill()
    proc.communicate(timeout=60)
    return checkpoint.load(run_dir)[1]["loop"]["t_env"]


@pytest.mark.slow
def test_kill_9_leaves_a_stale_run_that_the_stale_command_and_a_resume_close(tmp_path, store, store_uri, exp_name):
    a, b = start_run(tmp_path, store_uri, exp_name, "a"), start_run(tmp_path, store_uri, exp_name, "b", "seed=1")
    try:
        at_a = kill_9_after_a_checkpoint(a, tmp_path / "a")
        at_b = kill_9_after_a_checkpoint(b, tmp_path / "b")
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.kill()
    runs = {r.data.tags["seed"]: r for r in runs_of(store, exp_name)}
    assert {r.info.status for r in runs.values()} == {"RUNNING"}  # nobody told MLflow
    assert runs["0"].data.tags["owner_pid"] == str(a.pid) and runs["0"].data.tags["heartbeat"]

    cmd = [PY, "-m", "runner.tools", "stale", "--experiment", exp_name]
    dry = subprocess.run([*cmd, "--dry-run"], cwd=tmp_path, env=env_with(store_uri), capture_output=True, text=True)
    assert dry.returncode == 0 and "2 stale runs found in" in dry.stdout
    assert {r.info.status for r in runs_of(store, exp_name)} == {"RUNNING"}

    # run b is resumed directly: the resume notes that its last attempt died without a status
    res = subprocess.run([PY, "-m", "runner", f"resume={tmp_path / 'b'}", f"t_max={at_b + 500}",
                          f"hydra.run.dir={tmp_path / 'resume_b'}"], cwd=tmp_path, env=env_with(store_uri),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"resuming {tmp_path / 'b'} from step_{at_b}.pt (t_env={at_b:,} of t_max={at_b + 500:,}" in res.stderr
    assert f"was still marked RUNNING: the last attempt (pid {b.pid} on " in res.stderr
    assert not (tmp_path / "resume_b").exists()  # no empty run dir left by the resume
    assert (tmp_path / "b" / f".hydra-resume-{at_b}").is_dir()

    # run a is closed by the command
    r = subprocess.run(cmd, cwd=tmp_path, env=env_with(store_uri), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "1 stale run closed in" in r.stdout
    runs = {x.data.tags["seed"]: x for x in runs_of(store, exp_name)}
    assert runs["0"].info.status == "KILLED"
    assert runs["0"].data.tags["error"] == (
        f"stale: its process (pid {a.pid} on {runs['0'].data.tags['owner_host']}) ended without setting a final "
        f"status (SIGKILL, the OOM killer, a power cut?): {tmp_path / 'a'} is no longer locked by it; latest "
        f"checkpoint {tmp_path / 'a' / 'checkpoints' / f'step_{at_a}.pt'}; continue with: python -m runner "
        f"resume={tmp_path / 'a'}")
    assert runs["1"].info.status == "FINISHED" and "previous_attempt" in runs["1"].data.tags
    got = metric_steps(store, runs["1"].info.run_id)
    assert got == sorted(set(got)) and got[-1] == at_b + 500  # every step once


def test_resume_without_a_checkpoint_says_why(tmp_path: Path) -> None:
    (tmp_path / "run" / ".hydra").mkdir(parents=True)
    with pytest.raises(checkpoint.CheckpointError) as e:
        checkpoint.load(tmp_path / "run")
    assert str(e.value) == (
        f"no checkpoint in {tmp_path / 'run'}: expected {tmp_path / 'run' / 'checkpoints'}/step_<t_env>.pt. The run "
        "stopped before writing one: checkpoints are written every save_interval_s seconds (default 600) and "
        "save_interval env steps of training, at the end and on Ctrl-C/SIGTERM, but a kill -9 writes none. If its "
        "MLflow run still shows RUNNING, `python -m runner.tools stale` marks it KILLED")


# -- periodic checkpoints ---------------------------------------------------------------------------------
def test_wall_clock_checkpoints_keep_the_newest_and_change_no_result(tmp_path: Path, store, exp_name) -> None:
    common = ["+algo=qmix", "+env=twostep", "t_max=600", "test_interval=200", "log_interval=200",
              "test_nepisodes=4", f"logger.mlflow.experiment_name={exp_name}"]
    plain = train(tmp_path / "plain", *common, "save_interval_s=0")
    often = train(tmp_path / "often", *common, "save_interval_s=0.0001", "checkpoint_keep=4")
    kept = sorted((tmp_path / "often" / "checkpoints").glob("step_*.pt"), key=lambda p: int(p.stem[5:]))
    assert len(kept) == 4 and kept[-1].name == "step_600.pt"  # one per iteration, the 4 newest kept
    assert [p.name for p in (tmp_path / "plain" / "checkpoints").iterdir()] == ["step_600.pt"]
    runs = {r.data.tags["run_dir"]: r for r in runs_of(store, exp_name)}
    a, b = runs[str(tmp_path / "plain")].info.run_id, runs[str(tmp_path / "often")].info.run_id
    for key in ("test_return_mean", "loss"):
        assert [(m.step, m.value) for m in sorted(store.get_metric_history(a, key), key=lambda m: m.step)] == \
               [(m.step, m.value) for m in sorted(store.get_metric_history(b, key), key=lambda m: m.step)]
    assert plain.stats == often.stats


# -- the store ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_eight_runs_started_together_on_a_fresh_sqlite_store(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"
    procs = [subprocess.Popen([PY, "-m", "runner", "+algo=qmix", "+env=twostep", "t_max=20", "test_nepisodes=2",
                               f"seed={i}", "progress=false", f"hydra.run.dir={tmp_path / str(i)}"],
                              cwd=tmp_path, env=env_with(uri), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(8)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, "\n\n".join(o[-2000:] for o in outs)
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("hymarl").experiment_id])
    assert sorted(int(r.data.tags["seed"]) for r in runs) == list(range(8))
    assert all(r.info.status == "FINISHED" for r in runs)


# -- sweeps --------------------------------------------------------------------------------------------------
def sweep_cmd(sdir: Path, exp_name: str, *extra: str) -> list[str]:
    return [PY, "-m", "runner", "-m", "+algo=qmix", "+env=twostep", "seed=0,1", "test_interval=500", "log_interval=500",
            "test_nepisodes=4", "save_interval=1000", "progress=false", "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2", f"logger.mlflow.experiment_name={exp_name}", f"hydra.sweep.dir={sdir}", *extra]


def start_sweep(tmp_path: Path, store_uri: str, sdir: Path, exp_name: str) -> subprocess.Popen:
    return subprocess.Popen(sweep_cmd(sdir, exp_name, "t_max=10000000"), cwd=tmp_path, env=env_with(store_uri),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def both_jobs_checkpointed(sdir: Path) -> bool:
    return all(len(list((sdir / j / "checkpoints").glob("step_*.pt"))) >= 1 for j in ("0", "1"))


def signal_the_launcher(tmp_path: Path, store_uri: str, sdir: Path, exp_name: str, sig: int) -> tuple[subprocess.Popen, str]:
    """Start a 2-job joblib sweep, send ``sig`` to its launcher once both jobs have a checkpoint, and
    wait until every process it started (loky workers, env processes, trackers) has ended."""
    proc = start_sweep(tmp_path, store_uri, sdir, exp_name)
    try:
        wait_for(lambda: both_jobs_checkpointed(sdir), "both jobs' first checkpoint", proc=proc)
        family = descendants(proc.pid)
        assert family
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=180)
        wait_for(lambda: not alive(family), "every process of the sweep to end", timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc, out


def sweep_runs(client: MlflowClient, exp_name: str) -> tuple[object, list]:
    runs = runs_of(client, exp_name)
    (parent,) = [r for r in runs if r.data.tags.get("mode") == "sweep"]
    return parent, sorted((r for r in runs if r.data.tags.get("mode") == "train"), key=lambda r: r.data.tags["sweep_job"])


@pytest.mark.slow
def test_a_hard_killed_sweep_leaves_no_process_and_its_rerun_doubles_nothing(tmp_path, store, store_uri, exp_name):
    sdir = tmp_path / "sweep"
    signal_the_launcher(tmp_path, store_uri, sdir, exp_name, signal.SIGKILL)  # no chance to clean up
    for job in ("0", "1"):  # the jobs saw their launcher die and stopped with a checkpoint
        status = json.loads((sdir / job / "job_status.json").read_text())
        assert status["status"] == "KILLED" and status["error"].startswith("its launcher died; stopped at t_env=")
    parent, children = sweep_runs(store, exp_name)
    assert parent.info.status == "RUNNING"  # the launcher was killed: nobody closed it yet
    assert [c.info.status for c in children] == ["KILLED", "KILLED"]
    stopped = [checkpoint.load(sdir / j)[1]["loop"]["t_env"] for j in ("0", "1")]

    r = subprocess.run(sweep_cmd(sdir, exp_name, f"t_max={max(stopped) + 500}"), cwd=tmp_path, env=env_with(store_uri),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "[sweep] the parent run was left RUNNING by an earlier launcher (pid" in r.stderr
    assert "job 0 resumes from" in r.stdout and "job 1 resumes from" in r.stdout
    parent, children2 = sweep_runs(store, exp_name)
    assert parent.info.status == "FINISHED" and parent.data.metrics["jobs_finished"] == 2
    assert [c.info.run_id for c in children2] == [c.info.run_id for c in children]
    for c in children2:
        assert c.info.status == "FINISHED"
        for key in ("test_return_mean", "return_mean", "loss"):
            got = metric_steps(store, c.info.run_id, key)
            assert got == sorted(set(got)), f"{key} has a step twice: {got}"
        assert metric_steps(store, c.info.run_id)[-1] == max(stopped) + 500


@pytest.mark.slow
def test_sigterm_to_a_sweep_stops_its_jobs_with_checkpoints_and_closes_the_parent(tmp_path, store, store_uri, exp_name):
    sdir = tmp_path / "sweep"
    proc, out = signal_the_launcher(tmp_path, store_uri, sdir, exp_name, signal.SIGTERM)
    assert proc.returncode == 143, out[-3000:]
    assert "[sweep] stopping: running jobs save a checkpoint, no new job starts (SIGTERM; again to abort)" in out
    assert "Traceback" not in out
    parent, children = sweep_runs(store, exp_name)
    assert parent.info.status == "KILLED" and parent.data.metrics["jobs_killed"] == 2
    assert [c.info.status for c in children] == ["KILLED", "KILLED"]
    for job in ("0", "1"):
        assert json.loads((sdir / job / "job_status.json").read_text())["status"] == "KILLED"


@pytest.mark.slow
def test_a_sweep_dir_has_one_launcher(tmp_path, store, store_uri, exp_name) -> None:
    sdir = tmp_path / "sweep"
    holder = hold_lock(sdir)  # stands for a launcher of this sweep that is still running
    try:
        r = subprocess.run(sweep_cmd(sdir, exp_name, "t_max=100"), cwd=tmp_path, env=env_with(store_uri),
                           capture_output=True, text=True, timeout=300)
    finally:
        holder.kill()
        holder.wait()
    assert r.returncode == 2, r.stderr[-3000:]
    assert f"Error: sweep dir {sdir} is in use by pid {holder.pid} on " in r.stderr
    assert runs_of(store, exp_name) == [] and not (sdir / "0").exists()


@pytest.mark.slow
def test_a_sweep_rerun_waits_for_a_job_still_held_by_an_earlier_launch(tmp_path, store, store_uri, exp_name) -> None:
    sdir = tmp_path / "sweep"
    holder = hold_lock(sdir / "0")  # job 0 of an earlier launch, still saving its checkpoint
    cmd = [PY, "-m", "runner", "-m", "+algo=qmix", "+env=twostep", "t_max=100", "test_nepisodes=2", "progress=false",
           f"logger.mlflow.experiment_name={exp_name}", f"hydra.sweep.dir={sdir}"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env_with(store_uri), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        lines: list[str] = []
        while not any("is still held by" in x for x in lines):
            line = proc.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
        assert [r.data.tags["mode"] for r in runs_of(store, exp_name)] == ["sweep"]  # job 0 has not started
        holder.kill()
        holder.wait()
        out = "".join(lines) + proc.communicate(timeout=300)[0]
    finally:
        for p in (holder, proc):
            if p.poll() is None:
                p.kill()
    assert proc.returncode == 0, out[-3000:]
    assert f"[sweep] job 0 is still held by pid {holder.pid} on " in out and ": waiting for it to end" in out
    parent, (child,) = sweep_runs(store, exp_name)
    assert parent.info.status == "FINISHED" and child.info.status == "FINISHED"


# -- env worker processes ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_env_workers_die_with_a_hard_killed_run(tmp_path, store_uri, exp_name) -> None:
    proc = subprocess.Popen([PY, "-m", "runner", "+algo=qmix", "+env=lbf", "runner=parallel", "runner.n_envs=2",
                             "runner.n_workers=2", "t_max=10000000", "progress=false",
                             f"logger.mlflow.experiment_name={exp_name}", f"hydra.run.dir={tmp_path / 'run'}"],
                            cwd=tmp_path, env=env_with(store_uri), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        # the fork server and its two env workers, once the run has started training
        wait_for(lambda: list((tmp_path / "run").glob(".hydra")) and len(descendants(proc.pid)) >= 3, "the env workers",
                 proc=proc)
        family = descendants(proc.pid)
        proc.kill()
        proc.communicate(timeout=60)
        wait_for(lambda: not alive(family), "the env workers to end", timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
