"""Sweeps (-m) as MLflow parent + child runs, through the real CLI, real launchers and a real store.

Every sweep here runs `python -m runner -m ...` in a subprocess (Hydra's multirun cannot run twice in
one process) with the two-step game, and reads the results back with MlflowClient.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT
from mlflow.tracking import MlflowClient

FAKES = ROOT / "tests" / "fakes"
TEST_STEPS = [0, 100, 200, 300, 400]  # t_max=400, test_interval=100


def sweep(args: list[str], cwd: Path, store_uri: str, sweep_dir: Path, timeout: int = 600, **popen) -> subprocess.CompletedProcess:
    env = dict(os.environ, MLFLOW_TRACKING_URI=store_uri, PYTHONPATH=str(FAKES))
    return subprocess.run(
        [sys.executable, "-m", "runner", "-m", *args, "progress=false", f"hydra.sweep.dir={sweep_dir}"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )


def parent_and_children(client: MlflowClient, experiment: str) -> tuple[object, list]:
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment}"
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("mode") == "sweep"]
    assert len(parents) == 1, [r.info.run_name for r in runs]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    return parents[0], sorted(children, key=lambda r: int(r.data.tags["sweep_job"]))


def steps(client: MlflowClient, run_id: str, key: str = "test_return_mean") -> list[int]:
    return [m.step for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


SHORT = ["t_max=400", "test_interval=100", "log_interval=100", "test_nepisodes=4"]


@pytest.mark.slow
def test_sweep_is_one_parent_with_a_child_per_job(tmp_path, store, store_uri, exp_name):
    sdir = tmp_path / "sweep"
    r = sweep(["+algo=qmix,vdn", "+env=twostep", "seed=0,1", *SHORT, f"logger.mlflow.experiment_name={exp_name}"],
              tmp_path, store_uri, sdir)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "[sweep] 1/4 jobs done (1 finished)" in r.stdout and "[sweep] 4/4 jobs done (4 finished)" in r.stdout
    parent, children = parent_and_children(store, exp_name)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["algo"] == "qmix,vdn" and parent.data.params["seed"] == "0,1"
    assert parent.data.params["t_max"] == "400" and parent.data.params["env"] == "twostep"
    assert parent.data.tags["sweep_dir"] == str(sdir.resolve())
    assert parent.data.tags["varying"] == "algo seed"
    assert parent.data.tags["jobs_expected"] == "4"
    assert parent.data.metrics["jobs_finished"] == 4 and parent.data.metrics["jobs_failed"] == 0
    assert [c.info.run_name for c in children] == ["qmix-twostep-s0", "qmix-twostep-s1", "vdn-twostep-s0", "vdn-twostep-s1"]
    assert [c.data.tags["sweep_overrides"] for c in children] == [
        "algo=qmix seed=0", "algo=qmix seed=1", "algo=vdn seed=0", "algo=vdn seed=1"]
    for c in children:
        assert c.info.status == "FINISHED"
        assert c.data.tags["sweep_id"] == parent.data.tags["sweep_id"]
        assert steps(store, c.info.run_id) == TEST_STEPS
        assert c.data.tags["run_dir"] == str(sdir / c.data.tags["sweep_job"])
    # the report of the children, as files and as artifacts of the parent
    assert (sdir / "report" / "report.md").is_file() and (sdir / "report" / "twostep.png").is_file()
    logged = {Path(a.path).name for a in store.list_artifacts(parent.info.run_id, "report")}
    assert {"report.md", "report.html", "report.json", "twostep.png"} <= logged
    report = json.loads((sdir / "report" / "report.json").read_text())
    assert "twostep" in json.dumps(report) and "qmix" in json.dumps(report)


@pytest.mark.slow
def test_eight_parallel_jobs_on_a_fresh_sqlite_store(tmp_path):
    """joblib with 4 workers, 8 jobs, a store that does not exist yet: nothing lost, no lock errors."""
    store_uri = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"
    r = sweep(["+algo=qmix,vdn", "+env=twostep", "seed=0,1,2,3", *SHORT, "hydra/launcher=joblib",
               "hydra.launcher.n_jobs=4"], tmp_path, store_uri, tmp_path / "sweep")
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    assert "database is locked" not in out and "migrat" not in out.lower()
    assert "[sweep] 8/8 jobs done (8 finished)" in out
    client = MlflowClient(store_uri)
    parent, children = parent_and_children(client, "hymarl")
    assert parent.data.tags["launcher"] == "JoblibLauncher"
    assert len(children) == 8 and all(c.info.status == "FINISHED" for c in children)
    for c in children:
        assert steps(client, c.info.run_id) == TEST_STEPS
        assert len(steps(client, c.info.run_id, "loss")) >= 3
    assert parent.data.metrics["jobs_finished"] == 8


@pytest.mark.slow
def test_a_crashing_job_is_failed_and_the_others_finish(tmp_path, store, store_uri, exp_name):
    sdir = tmp_path / "sweep"
    r = sweep(["+algo=qmix", "+env=crashing_twostep", "env.factory.crash_at_step=-1,150,-1", *SHORT,
               f"hydra.searchpath=[file://{FAKES / 'conf'}]", f"logger.mlflow.experiment_name={exp_name}"],
              tmp_path, store_uri, sdir)
    assert r.returncode == 1
    assert "1 of 3 jobs did not finish (1 failed)" in r.stderr + r.stdout
    parent, children = parent_and_children(store, exp_name)
    assert [c.info.status for c in children] == ["FINISHED", "FAILED", "FINISHED"]
    assert "EnvCrashed: the env crashed on purpose at step 151" in children[1].data.tags["error"]
    assert steps(store, children[2].info.run_id) == TEST_STEPS
    assert parent.info.status == "FAILED"
    assert parent.data.metrics["jobs_failed"] == 1 and parent.data.metrics["jobs_finished"] == 2
    assert "job 1: EnvCrashed" in parent.data.tags["failed_jobs"]
    assert json.loads((sdir / "1" / "job_status.json").read_text())["status"] == "FAILED"


@pytest.mark.slow
def test_a_sweep_with_an_invalid_job_config_runs_nothing(tmp_path, store, store_uri, exp_name):
    sdir = tmp_path / "sweep"
    r = sweep(["+algo=qmix,vdnx", "+env=twostep", "learner.lr=0.001,-1", "t_max=400",
               f"logger.mlflow.experiment_name={exp_name}"], tmp_path, store_uri, sdir)
    assert r.returncode == 2
    algos = ", ".join(sorted(p.stem for p in (ROOT / "conf" / "algo").glob("*.yaml")))
    assert r.stderr.splitlines()[:5] == [
        "Error: 3 of 4 jobs of this sweep have an invalid config; no job was run:",
        f"  job 1 (+algo=qmix +env=twostep learner.lr=-1 t_max=400 logger.mlflow.experiment_name={exp_name} progress=False): invalid config:",
        "      learner.lr=-1.0 is invalid: must be > 0",
        f"  job 2 (+algo=vdnx +env=twostep learner.lr=0.001 t_max=400 logger.mlflow.experiment_name={exp_name} progress=False): "
        f"In 'config': Could not find 'algo/vdnx' (available in 'algo': {algos})",
        f"  job 3 (+algo=vdnx +env=twostep learner.lr=-1 t_max=400 logger.mlflow.experiment_name={exp_name} progress=False): "
        f"In 'config': Could not find 'algo/vdnx' (available in 'algo': {algos})",
    ]
    assert store.get_experiment_by_name(exp_name) is None  # no parent run, no child run
    assert not (sdir / "0").exists()


@pytest.mark.slow
def test_a_job_with_an_invalid_config_fails_before_its_run(tmp_path, store, store_uri, exp_name):
    """With the up-front check off, the invalid job fails alone, before it creates a run."""
    r = sweep(["+algo=qmix", "+env=twostep", "learner.lr=0.001,-1", *SHORT, f"logger.mlflow.experiment_name={exp_name}",
               "hydra.callbacks.mlflow_sweep.validate=false"], tmp_path, store_uri, tmp_path / "sweep")
    assert r.returncode == 1
    parent, children = parent_and_children(store, exp_name)
    assert [c.info.status for c in children] == ["FINISHED"]  # job 1 never created a run
    assert parent.info.status == "FAILED" and parent.data.metrics["jobs_failed"] == 1
    assert "learner.lr=-1.0 is invalid: must be > 0" in parent.data.tags["failed_jobs"]


@pytest.mark.slow
def test_rerunning_a_sweep_dir_resumes_and_skips(tmp_path, store, store_uri, exp_name):
    sdir = tmp_path / "sweep"
    args = ["+algo=qmix", "+env=twostep", "seed=0,1", "test_interval=100", "log_interval=100", "test_nepisodes=4",
            f"logger.mlflow.experiment_name={exp_name}"]
    assert sweep([*args, "t_max=200"], tmp_path, store_uri, sdir).returncode == 0
    parent, first = parent_and_children(store, exp_name)
    r = sweep([*args, "t_max=400"], tmp_path, store_uri, sdir)  # longer: every job continues
    assert r.returncode == 0, r.stderr[-3000:]
    assert "job 0 resumes from" in r.stdout and "job 1 resumes from" in r.stdout
    parent2, second = parent_and_children(store, exp_name)
    assert parent2.info.run_id == parent.info.run_id and parent2.data.tags["sweep_reruns"] == "1"
    assert [c.info.run_id for c in second] == [c.info.run_id for c in first]  # the same runs, continued
    for c in second:
        assert c.info.status == "FINISHED" and c.data.tags["resumed_at_t_env"] == "200"
        assert steps(store, c.info.run_id) == TEST_STEPS  # no step twice
    r = sweep([*args, "t_max=400"], tmp_path, store_uri, sdir)  # nothing left to do
    assert r.returncode == 0 and r.stdout.count("finished in an earlier run of this sweep") == 2
    _, third = parent_and_children(store, exp_name)
    assert [c.info.end_time for c in third] == [c.info.end_time for c in second]


@pytest.mark.slow
def test_an_interrupted_sweep_resumes_where_it_stopped(tmp_path, store, store_uri, exp_name):
    """Ctrl-C during job 1 of 3: job 1 saves a checkpoint, job 2 does not start, the sweep exits 130.
    Run again with the same sweep dir: job 0 is skipped, job 1 resumes in its run, job 2 runs."""
    sdir = tmp_path / "sweep"
    common = ["+algo=qmix", "+env=twostep", "test_interval=100", "log_interval=100", "test_nepisodes=4",
              f"logger.mlflow.experiment_name={exp_name}"]
    env = dict(os.environ, MLFLOW_TRACKING_URI=store_uri)
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", "-m", *common, "t_max=400,1000000,400", "progress=false",
         f"hydra.sweep.dir={sdir}"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            exp = store.get_experiment_by_name(exp_name)
            runs = store.search_runs([exp.experiment_id], "tags.sweep_job = '1'") if exp else []
            if runs:
                break
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.3)
        assert runs, "job 1 did not start"
        time.sleep(2.0)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out[-3000:]
    parent, children = parent_and_children(store, exp_name)
    assert [c.info.status for c in children] == ["FINISHED", "KILLED"]
    assert parent.info.status == "KILLED" and parent.data.metrics["jobs_not_run"] == 1
    assert json.loads((sdir / "1" / "job_status.json").read_text())["status"] == "KILLED"
    assert list((sdir / "1" / "checkpoints").glob("step_*.pt"))
    end0 = children[0].info.end_time

    r = sweep([*common, "t_max=400,1000,400"], tmp_path, store_uri, sdir)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "job 0 finished in an earlier run" in r.stdout and "job 1 resumes from" in r.stdout
    parent2, children2 = parent_and_children(store, exp_name)
    assert parent2.info.status == "FINISHED" and parent2.data.metrics["jobs_finished"] == 3
    assert [c.info.status for c in children2] == ["FINISHED"] * 3
    assert children2[0].info.end_time == end0
    assert children2[1].info.run_id == children[1].info.run_id and "resumed_at_t_env" in children2[1].data.tags
    got = steps(store, children2[1].info.run_id)
    assert got == sorted(set(got)) and got[-1] >= 1000


@pytest.mark.slow
def test_optuna_sweeper_tunes_and_logs_the_best_params(tmp_path, store, store_uri, exp_name):
    sdir = tmp_path / "sweep"
    r = sweep(["+algo=qmix", "+env=twostep", "+tune=lr_target", "hydra.sweeper.n_trials=3", *SHORT,
               f"logger.mlflow.experiment_name={exp_name}"], tmp_path, store_uri, sdir)
    assert r.returncode == 0, r.stderr[-3000:]
    parent, children = parent_and_children(store, exp_name)
    assert len(children) == 3 and all(c.info.status == "FINISHED" for c in children)
    assert [c.info.run_name for c in children] == [f"qmix-twostep-s0-#{i}" for i in range(3)]
    assert parent.data.tags["sweeper"] == "OptunaSweeper"
    assert parent.data.tags["varying"] == "learner.lr learner.target_update_interval"
    best = {k: v for k, v in parent.data.params.items() if k.startswith("best.")}
    assert set(best) == {"best.learner.lr", "best.learner.target_update_interval"}
    finals = [c.data.metrics["test_return_mean"] for c in children]
    assert parent.data.metrics["best_value"] == max(finals)
    trial_lrs = {c.data.params["learner.lr"] for c in children}
    assert len(trial_lrs) == 3 and any(abs(float(best["best.learner.lr"]) - float(x)) < 1e-12 for x in trial_lrs)
    assert "optimization_results.yaml" in {a.path for a in store.list_artifacts(parent.info.run_id)}


@pytest.mark.slow
def test_submitit_local_launcher(tmp_path, store, store_uri, exp_name):
    r = sweep(["+algo=qmix,vdn", "+env=twostep", *SHORT, "hydra/launcher=submitit_local",
               f"logger.mlflow.experiment_name={exp_name}"], tmp_path, store_uri, tmp_path / "sweep")
    assert r.returncode == 0, r.stderr[-3000:]
    parent, children = parent_and_children(store, exp_name)
    assert parent.data.tags["launcher"] == "LocalLauncher"
    assert [c.info.status for c in children] == ["FINISHED", "FINISHED"]
    assert all(steps(store, c.info.run_id) == TEST_STEPS for c in children)


@pytest.mark.slow
def test_a_sweep_against_a_dead_tracking_server_fails_before_any_job(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sdir = tmp_path / "sweep"
    r = sweep(["+algo=qmix", "+env=twostep", "seed=0,1", *SHORT], tmp_path, f"http://127.0.0.1:{port}", sdir, timeout=120)
    assert r.returncode == 2
    # checked before any job runs: one line per job in the summary, no MLflow HTTP retries, no traceback
    assert "Error: 2 of 2 jobs of this sweep have an invalid config; no job was run:" in r.stderr, r.stderr[-3000:]
    assert r.stderr.count(f"cannot reach the MLflow tracking server at http://127.0.0.1:{port}") == 2
    assert "Traceback" not in r.stderr and "Retry" not in r.stderr
    assert not list(sdir.glob("*/job_status.json")) and not (sdir / "0").exists()


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["slurm", "submitit_slurm", "joblib", "submitit_local"])
def test_launcher_configs_compose(tmp_path, launcher):
    r = subprocess.run([sys.executable, "-m", "runner", "+algo=qmix", "+env=twostep", f"hydra/launcher={launcher}",
                        "--cfg", "hydra", "-p", "hydra.launcher"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "_target_: hydra_plugins." in r.stdout
    if launcher == "slurm":
        assert "max_num_timeout: 3" in r.stdout and "SlurmLauncher" in r.stdout


@pytest.mark.slow
def test_ctrl_c_in_a_joblib_sweep_checkpoints_the_running_jobs(tmp_path, store, store_uri, exp_name):
    """Jobs in worker processes: SIGINT to the launcher stops every running job with a checkpoint
    (the launcher passes it on), starts no new job, exits 130; a re-run resumes them and runs the rest."""
    sdir = tmp_path / "sweep"
    common = ["+algo=qmix", "+env=twostep", "test_interval=100", "log_interval=100", "test_nepisodes=4",
              "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"logger.mlflow.experiment_name={exp_name}"]
    env = dict(os.environ, MLFLOW_TRACKING_URI=store_uri)
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", "-m", *common, "t_max=1000000,1000000,400", "progress=false",
         f"hydra.sweep.dir={sdir}"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        runs: list = []
        while time.monotonic() < deadline and len(runs) < 2:
            exp = store.get_experiment_by_name(exp_name)
            runs = store.search_runs([exp.experiment_id], "tags.mode = 'train'") if exp else []
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.3)
        assert len(runs) == 2, "jobs 0 and 1 did not start"
        time.sleep(2.0)
        proc.send_signal(signal.SIGINT)  # the launcher only: it passes the signal on to the jobs
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, out[-3000:]
    assert "[sweep] stopping: running jobs save a checkpoint, no new job starts" in out
    assert "Traceback" not in out and "JobInterrupted" not in out  # a stop is not an error
    parent, children = parent_and_children(store, exp_name)
    assert [c.info.status for c in children] == ["KILLED", "KILLED"]
    assert parent.info.status == "KILLED"
    assert parent.data.metrics["jobs_killed"] == 2 and parent.data.metrics["jobs_not_run"] == 1
    for job in ("0", "1"):
        assert json.loads((sdir / job / "job_status.json").read_text())["status"] == "KILLED"
        assert list((sdir / job / "checkpoints").glob("step_*.pt"))
    assert not (sdir / "2" / "job_status.json").exists()

    r = sweep([*common, "t_max=1000,1000,400"], tmp_path, store_uri, sdir)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "job 0 resumes from" in r.stdout and "job 1 resumes from" in r.stdout
    parent2, children2 = parent_and_children(store, exp_name)
    assert parent2.info.status == "FINISHED" and parent2.data.metrics["jobs_finished"] == 3
    assert [c.info.run_id for c in children2[:2]] == [c.info.run_id for c in children]
    assert all(c.info.status == "FINISHED" for c in children2) and len(children2) == 3


@pytest.mark.slow
def test_a_benchmark_is_one_sweep_with_the_published_table_on_its_parent(tmp_path, store, store_uri, exp_name):
    sdir = tmp_path / "sweep"
    r = sweep(["+benchmark=epymarl_matrix", "+env=epymarl_penalty_k0", "seed=0", "t_max=250", "test_interval=125",
               "log_interval=125", "test_nepisodes=2", f"logger.mlflow.experiment_name={exp_name}"],
              tmp_path, store_uri, sdir)
    assert r.returncode == 0, r.stderr[-3000:]
    parent, children = parent_and_children(store, exp_name)
    assert parent.info.status == "FINISHED" and parent.data.tags["benchmark"] == "epymarl_matrix"
    assert parent.data.params["experiment"] == "epymarl_iql,epymarl_vdn,epymarl_qmix"
    assert "env" in parent.data.params and parent.data.params["env"] == "epymarl_penalty_k0"
    assert sorted(c.data.tags["algo"] for c in children) == ["iql", "qmix", "vdn"]
    assert {c.data.tags["benchmark"] for c in children} == {"epymarl_matrix"}
    assert all(c.data.tags["sweep_overrides"].startswith("experiment=epymarl_") for c in children)
    table = json.loads((sdir / "report" / "benchmark.json").read_text())
    assert [(row["task"], row["algo"]) for row in table["rows"]] == [("epymarl_penalty_k0", a) for a in ("iql", "qmix", "vdn")]
    assert all(row["ours"]["evaluations"] == 3 and row["shorter_budget"] for row in table["rows"])
    logged = {a.path for a in store.list_artifacts(parent.info.run_id, "report")}
    assert {"report/benchmark.md", "report/benchmark.json", "report/epymarl_penalty_k0.png"} <= logged
