"""Against a real ``mlflow server`` subprocess: a CLI run logged through it, fail-fast when nothing
listens, and no lost metrics when the server drops mid-run or is still down at the end."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from runner.logging.base import RunInfo
from runner.logging.mlflow_logger import UNSENT_FILE, MLflowLogger, MLflowLoggerConfig
from runner.tracking.store import LIVE_HTTP
from tests.conftest import cli

MLFLOW = str(Path(sys.executable).parent / "mlflow")
SHORT = ["+algo=qmix", "+env=twostep", "t_max=400", "test_interval=200", "log_interval=100", "test_nepisodes=4",
         "progress=false"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``mlflow server`` on 127.0.0.1:port with its own SQLite store and served artifacts under
    ``root``; start() and stop() may be called again (same port, same store)."""

    def __init__(self, root: Path, port: int) -> None:
        self.root, self.port = root, port
        self.uri = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 60.0) -> None:
        self.starts += 1
        log = open(self.root / f"server{self.starts}.log", "wb")  # noqa: SIM115 (the child writes it)
        cmd = [MLFLOW, "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
               "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
               "--artifacts-destination", str(self.root / "mlartifacts")]
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no GenAI job workers
        env.pop("MLFLOW_TRACKING_URI", None)
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(self.uri + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        pytest.fail(f"mlflow server did not answer /health in {timeout} s:\n{self.log_tail()}")

    def log_tail(self) -> str:
        return (self.root / f"server{self.starts}.log").read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        """Terminate the whole process group (server, uvicorn worker) and check that it is gone."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        pgid = proc.pid  # start_new_session: the group id is the leader's pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if group_alive(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            time.sleep(1)
        assert not group_alive(pgid), f"processes of the mlflow server (group {pgid}) still run"


def group_alive(pgid: int) -> bool:
    """Whether a live (not zombie) process of group ``pgid`` exists."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # fields after the name: state, ppid, pgrp
            return True
    return False


@pytest.fixture
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("mlflow-server"), free_port())
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def _history(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def _logger(server: Server, run_dir: Path, **cfg: float) -> MLflowLogger:
    run_dir.mkdir(parents=True, exist_ok=True)
    lg = MLflowLogger(MLflowLoggerConfig(tracking_uri=server.uri, experiment_name="drops", name="mlflow", **cfg))
    lg.start(RunInfo(config={"lr": 0.1, "net": {"hidden": 64}}, tags={"algo": "test"}, run_name=run_dir.name,
                     run_dir=run_dir, hydra_dir=None))
    return lg


def _count_store_calls(lg: MLflowLogger) -> tuple[list[bool], list[dict[str, str]]]:
    """Record each send attempt (its result) and the HTTP budget of each MLflow client call of
    ``lg`` from now on (instance attributes shadowing the methods; ``del`` them to stop)."""
    tries: list[bool] = []
    budgets: list[dict[str, str]] = []
    send, call = lg._send_outbox, lg._call

    def counting_send() -> bool:
        tries.append(send())
        return tries[-1]

    def recording_call(fn, *args, budget: dict[str, str] = LIVE_HTTP, **kwargs):
        budgets.append(budget)
        return call(fn, *args, budget=budget, **kwargs)

    lg._send_outbox, lg._call = counting_send, recording_call  # type: ignore[method-assign]
    return tries, budgets


def _short(budget: dict[str, str]) -> bool:
    """At most one quick retry, no backoff: a call to a dead server fails in seconds, not minutes."""
    return int(budget["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]) <= 1 and float(budget["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"]) == 0


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_cli_run_logs_to_a_real_server(tmp_path: Path, server: Server) -> None:
    res = cli([*SHORT, "logger.mlflow.experiment_name=server-cli"], cwd=tmp_path, store_uri=server.uri)
    assert res.returncode == 0, res.stderr[-3000:]
    assert not (tmp_path / "outputs" / "mlflow.db").exists()  # nothing went to the local store
    client = MlflowClient(tracking_uri=server.uri)
    (run,) = client.search_runs([client.get_experiment_by_name("server-cli").experiment_id])
    assert run.info.status == "FINISHED" and run.info.artifact_uri.startswith("mlflow-artifacts:/")
    assert run.data.params["t_max"] == "400"
    rid = run.info.run_id
    assert _history(client, rid, "return_mean") == [100, 200, 300, 400]
    assert _history(client, rid, "test_return_mean") == [0, 200, 400]
    assert {"learning_curve.png", "q_tables.json", "checkpoints", ".hydra"} <= {a.path for a in client.list_artifacts(rid)}
    png = Path(client.download_artifacts(rid, "learning_curve.png", str(tmp_path)))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_nothing_listening_fails_fast_with_exit_code_2(tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    res = cli(["+algo=qmix", "+env=twostep"], cwd=tmp_path, store_uri=uri, timeout=60)
    assert res.returncode == 2, res.stderr[-3000:]
    assert res.stderr.strip().splitlines()[-1] == (
        f"Error: cannot reach the MLflow tracking server at {uri} ({uri}/health: [Errno 111] Connection refused). "
        "Start it (`make server`), fix MLFLOW_TRACKING_URI / logger.mlflow.tracking_uri, "
        "or unset them to log to the local SQLite store outputs/mlflow.db"
    )
    assert "Traceback" not in res.stderr
    runs = tmp_path / "outputs" / "runs"
    assert not (list(runs.glob("*/*")) if runs.is_dir() else [])  # no run dir left behind
    # it failed at the one reachability check, before the run: no MLflow retry noise, one message
    assert res.stderr.count("cannot reach the MLflow tracking server") == 1 and "Retry" not in res.stderr


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_server_dropping_mid_run_loses_nothing(tmp_path: Path, server: Server, capsys: pytest.CaptureFixture) -> None:
    lg = _logger(server, tmp_path / "drop", flush_seconds=0.0, finish_timeout=60.0)
    for t in range(0, 50, 10):
        lg.log_stat("x", t, t)
        lg.log_stat("y", -t, t)
    lg.flush()
    assert not lg._pending  # sent while the server was up
    server.stop()

    tries, budgets = _count_store_calls(lg)
    for t in range(50, 150, 10):  # each log_stat wants to flush (flush_seconds=0)
        lg.log_stat("x", t, t)
        lg.log_stat("y", -t, t)
        lg.flush()
    art = tmp_path / "drop" / "notes.txt"
    art.write_text("kept for later")
    lg.log_artifact(art)
    # no minutes of MLflow HTTP retries: the first send finds the server gone and the backoff holds
    # the next ten (2 s; a second try only if this loop were stalled that long), each with a short budget
    assert 1 <= len(tries) <= 2, tries
    assert budgets and all(_short(b) for b in budgets), budgets
    del lg._send_outbox, lg._call  # the class's own again
    assert len(lg._pending) == 20 and lg._artifacts
    err = capsys.readouterr().err
    assert err.count("unreachable") == 1 and "training goes on" in err  # one warning, not one per flush

    server.start()
    lg.finish("FINISHED")
    assert not (tmp_path / "drop" / UNSENT_FILE).exists()
    assert "reachable again" in capsys.readouterr().err
    client = MlflowClient(tracking_uri=server.uri)
    run = client.get_run(lg.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"lr": "0.1", "net.hidden": "64"}
    for key in ("x", "y"):
        hist = client.get_metric_history(lg.run_id, key)
        assert sorted(m.step for m in hist) == list(range(0, 150, 10))  # every step, once
    assert client.get_metric_history(lg.run_id, "y")[-1].value == -140.0
    assert [a.path for a in client.list_artifacts(lg.run_id)] == ["notes.txt"]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_server_down_at_finish_writes_the_unsent_file(tmp_path: Path, server: Server) -> None:
    lg = _logger(server, tmp_path / "down", finish_timeout=1.0)
    lg.log_stat("x", 0.0, 0)
    lg.flush()
    server.stop()
    for t in range(10, 60, 10):
        lg.log_stat("x", float(t), t)
    ckpt = tmp_path / "down" / "step_50.pt"
    ckpt.write_bytes(b"weights")
    lg.log_artifact(ckpt, "checkpoints")
    tries, budgets = _count_store_calls(lg)
    lg.finish("FAILED", "RuntimeError: simulator lost")  # nothing raised
    # finish_timeout=1 s bounds the waiting: a few tries (0.5 s, then 1 s apart), each with a short
    # HTTP budget (no minutes of MLflow retries), then the unsent file
    assert 1 <= len(tries) <= 3, tries
    assert budgets and all(_short(b) for b in budgets), budgets
    data = json.loads((tmp_path / "down" / UNSENT_FILE).read_text())
    assert data["run_id"] == lg.run_id and data["tracking_uri"] == server.uri
    assert [(m["key"], m["step"], m["value"]) for m in data["metrics"]] == [("x", t, float(t)) for t in range(10, 60, 10)]
    assert data["status"] == "FAILED" and data["tags"] == {"error": "RuntimeError: simulator lost"}
    assert data["artifacts"] == [{"path": str(ckpt.resolve()), "artifact_path": "checkpoints"}]

    # later, with the server back: `python -m runner.tools send-unsent <run_dir>`
    server.start()
    from runner.tools.__main__ import main

    unsent = (tmp_path / "down" / UNSENT_FILE).read_text()
    assert main(["send-unsent", str(tmp_path / "down")]) == 0
    assert not (tmp_path / "down" / UNSENT_FILE).exists()
    client = MlflowClient(tracking_uri=server.uri)
    run = client.get_run(lg.run_id)
    assert run.info.status == "FAILED" and run.data.tags["error"] == "RuntimeError: simulator lost"
    assert _history(client, lg.run_id, "x") == list(range(0, 60, 10))
    assert [a.path for a in client.list_artifacts(lg.run_id, "checkpoints")] == ["checkpoints/step_50.pt"]

    # resuming the run sends a left-over file first (again here: sending twice duplicates nothing)
    (tmp_path / "down" / UNSENT_FILE).write_text(unsent)
    resumed = MLflowLogger(MLflowLoggerConfig(tracking_uri=server.uri, experiment_name="drops", name="mlflow"))
    resumed.start(RunInfo(config={}, tags={}, run_name="down", run_dir=tmp_path / "down", hydra_dir=None,
                          resume_state={"mlflow_run_id": lg.run_id}, t_env_start=50))
    assert not (tmp_path / "down" / UNSENT_FILE).exists() and resumed._logged_upto == {"x": 50}
    resumed.log_stat("x", 60.0, 60)
    resumed.finish("FINISHED")
    run = client.get_run(lg.run_id)
    assert run.info.status == "FINISHED" and "error" not in run.data.tags
    assert _history(client, lg.run_id, "x") == list(range(0, 70, 10))
