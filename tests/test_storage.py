"""Storage that cannot be written fails fast and clearly; a full disk loses nothing it can keep.

The disks here are real: a small tmpfs (``mount -t tmpfs -o size=...``, read-only with ``ro``) where
this process may mount one (root), filled with a filler file until the kernel answers ENOSPC. Where
it may not, :class:`Disk` injects the same errors (ENOSPC from writes, SQLite's "database or disk is
full" from the store, EROFS from the probe) at the boundary the code sees, and the asserts are the
same. Each mount is unmounted by the fixture's finalizer.
"""

from __future__ import annotations

import builtins
import errno
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import open_dict

from runner import checkpoint
from runner.checkpoint import CheckpointError, CheckpointWriteError
from runner.experiment import run
from runner.logging.base import Logger, RunInfo
from runner.logging.mlflow_logger import UNSENT_FILE, MLflowLogger, MLflowLoggerConfig
from runner.registry import LOGGERS
from runner.tracking import storage
from runner.tracking.store import TrackingUnavailable, check_reachable
from tests.conftest import cli, compose, runs_of

BASE = ["+algo=qmix", "+env=twostep", "t_max=400", "test_interval=200", "log_interval=100", "test_nepisodes=4",
        "learner.batch_size=8", "logger.mlflow.finish_timeout=0"]
DISKS: dict[str, Disk] = {}  # by path: what the _fill_disk_at logger fills


def _can_mount() -> bool:
    """Root may mount a tmpfs (HYMARL_TEST_NO_MOUNT=1 tries the injected errors instead)."""
    if os.environ.get("HYMARL_TEST_NO_MOUNT"):
        return False
    return hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("mount") is not None


class Disk:
    """A small disk at ``path``: a real tmpfs when it could be mounted (``real``), else a plain
    directory whose writes fail once :meth:`fill` was called (errors injected with monkeypatch)."""

    def __init__(self, path: Path, real: bool, monkeypatch: pytest.MonkeyPatch) -> None:
        self.path, self.real, self.full = path, real, False
        self.filler = path / "filler"
        if not real:
            self._inject(monkeypatch)

    def fill(self) -> None:
        """Leave no free byte: a real disk gets a filler file written until ENOSPC."""
        self.full = True
        if self.real:
            fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            try:
                while True:  # the last write is a short one; the one after it fails
                    os.write(fd, b"\0" * 65536)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
            finally:
                os.close(fd)

    def free(self) -> None:
        self.full = False
        self.filler.unlink(missing_ok=True)

    def holds(self, p: Any) -> bool:
        return self.full and str(p).startswith(str(self.path))

    def _inject(self, mp: pytest.MonkeyPatch) -> None:
        disk = self
        no_space = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        class FullFile:  # what torch writes a checkpoint to: the first write fails like a full disk's
            def __init__(self, f: Any) -> None:
                self.f = f

            def write(self, b: Any) -> int:
                raise no_space

            def flush(self) -> None:
                pass

            def __enter__(self) -> FullFile:
                return self

            def __exit__(self, *exc: Any) -> None:
                self.f.close()

        def open_(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            f = builtins.open(file, mode, *args, **kwargs)  # noqa: SIM115 (closed by the caller)
            return FullFile(f) if "w" in mode and disk.holds(file) else f

        mp.setattr(checkpoint, "open", open_, raising=False)
        write_text = pathlib.Path.write_text

        def write_text_(self: Path, *args: Any, **kwargs: Any) -> int:
            if disk.holds(self):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return write_text(self, *args, **kwargs)

        mp.setattr(pathlib.Path, "write_text", write_text_)
        call = MLflowLogger._call

        def call_(self: MLflowLogger, fn: Any, *args: Any, **kwargs: Any) -> Any:
            from mlflow.exceptions import MlflowException

            name = getattr(fn, "__name__", "")
            if name in ("log_artifact", "log_artifacts") and disk.full and disk.path.name == "artifacts":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            if name in ("log_batch", "set_tag", "set_terminated", "update_run", "delete_tag") and disk.holds(
                self.tracking_uri[len("sqlite:///"):]
            ):
                raise MlflowException("(sqlite3.OperationalError) database or disk is full")
            return call(self, fn, *args, **kwargs)

        mp.setattr(MLflowLogger, "_call", call_)


@pytest.fixture
def small_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest):
    """``small_disk(name, size)``: a tmpfs of ``size`` at tmp_path/name (or an injected stand-in)."""

    def make(name: str, size: str = "8m") -> Disk:
        path = tmp_path / name
        path.mkdir()
        real = _can_mount() and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)], capture_output=True
        ).returncode == 0
        if real:
            request.addfinalizer(lambda: subprocess.run(["umount", "-l", str(path)], capture_output=True))
        disk = Disk(path, real, monkeypatch)
        DISKS[str(path)] = disk
        request.addfinalizer(lambda: DISKS.pop(str(path), None))
        return disk

    return make


@pytest.fixture
def read_only_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest):
    """``read_only_dir(name)``: (path, real): a read-only tmpfs, or a dir where creating files fails
    with EROFS (injected into runner.tracking.storage; ``real`` False)."""

    def make(name: str) -> tuple[Path, bool]:
        path = tmp_path / name
        path.mkdir()
        if _can_mount() and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)], capture_output=True
        ).returncode == 0:
            request.addfinalizer(lambda: subprocess.run(["umount", "-l", str(path)], capture_output=True))
            return path, True
        real_open, real_mkdir = os.open, os.mkdir

        def refuse(p: Any) -> None:
            if os.path.abspath(p).startswith(str(path)):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(p))

        monkeypatch.setattr(storage.os, "open", lambda p, *a, **k: refuse(p) or real_open(p, *a, **k))
        monkeypatch.setattr(pathlib.os, "mkdir", lambda p, *a, **k: refuse(p) or real_mkdir(p, *a, **k))
        return path, False

    return make


@LOGGERS.register("_fill_disk_at")
class FillDiskAt(Logger):
    """Fills a :class:`Disk` once t_env reaches ``at`` (a disk that fills up while the run goes on)."""

    def __init__(self, cfg: dict) -> None:
        self.at, self.disk, self.done = cfg["at"], cfg["disk"], False

    def log_stat(self, key: str, value: float, t_env: int) -> None:
        if t_env >= self.at and not self.done:
            self.done = True
            DISKS[self.disk].fill()


def _train(run_dir: Path, *overrides: str, fill: Disk | None = None, at: int = 0):
    cfg = compose(*overrides)
    if fill is not None:
        with open_dict(cfg):
            cfg.logger["_fill_disk_at"] = {"at": at, "disk": str(fill.path)}
    return run(cfg, hydra_dir=run_dir)


def _lines(err: str) -> list[str]:
    """stderr without MLflow's INFO lines about creating a fresh store."""
    return [ln for ln in err.splitlines() if ln.strip() and " INFO mlflow" not in ln and "INFO  [alembic" not in ln]


# -- unwritable: refused before anything starts, in one line -------------------------------------------------


@pytest.mark.slow
def test_unwritable_sqlite_store_is_refused_in_one_line_before_any_run(tmp_path: Path) -> None:
    res = cli(["+algo=qmix", "+env=twostep", "t_max=200"], cwd=tmp_path, store_uri="sqlite:////proc/mlflow.db", timeout=60)
    assert res.returncode == 2, res.stderr[-3000:]
    assert _lines(res.stderr) == [
        "Error: cannot write the MLflow store sqlite:////proc/mlflow.db: /proc: [Errno 2] cannot create a file in it: No such file or directory. "
        "Fix that, or point MLFLOW_TRACKING_URI / logger.mlflow.tracking_uri to another store"
    ]
    runs = tmp_path / "outputs" / "runs"
    assert not (list(runs.glob("*/*")) if runs.is_dir() else [])  # no run dir left behind
    assert not Path("/proc/mlflow.db").exists()


@pytest.mark.parametrize("problem", ["read-only", "full"])
def test_store_that_cannot_be_written_is_refused_and_no_database_is_created(
    small_disk, read_only_dir, problem: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if problem == "read-only":
        d, _ = read_only_dir("ro")
        reason, fix = f"{d}: [Errno 30] cannot create a file in it: Read-only file system", "Fix that"
    else:
        disk = small_disk("full", "1m")
        disk.fill()
        d = disk.path
        if not disk.real:  # the probe's one-byte write is what finds a full disk: inject ENOSPC there
            write = os.write

            def write_(fd: int, data: bytes) -> int:
                if disk.holds(os.readlink(f"/proc/self/fd/{fd}")):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                return write(fd, data)

            monkeypatch.setattr(storage.os, "write", write_)
        reason, fix = f"no space left on device: {d}", "Free some space"
    uri = f"sqlite:///{d}/mlflow.db"
    with pytest.raises(TrackingUnavailable) as ei:
        check_reachable(uri)
    assert str(ei.value) == (
        f"cannot write the MLflow store {uri}: {reason}. {fix}, or point MLFLOW_TRACKING_URI / "
        "logger.mlflow.tracking_uri to another store"
    )
    assert sorted(p.name for p in d.iterdir()) == (["filler"] if problem == "full" and disk.real else [])  # no db, no probe


@pytest.mark.slow
def test_read_only_outputs_dir_is_refused_in_one_line(tmp_path: Path, read_only_dir, monkeypatch, capsys) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    outputs, real = read_only_dir("cwd/outputs")
    expected = ("Error: cannot create the run dir: outputs/runs: [Errno 30] Read-only file system. "
                "Make it writable or give hydra.run.dir=<a writable dir>")
    if real:  # the real CLI, end to end
        res = cli(["+algo=qmix", "+env=twostep", "t_max=200"], cwd=cwd, store_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                  timeout=60)
        assert res.returncode == 2, res.stderr[-3000:]
        assert _lines(res.stderr) == [expected]
    else:  # EROFS injected in this process: the check that runs before Hydra creates the dir
        from runner.__main__ import main

        monkeypatch.chdir(cwd)
        monkeypatch.setattr(sys, "argv", ["runner", "+algo=qmix", "+env=twostep", "t_max=200"])
        with pytest.raises(SystemExit) as ei:
            main()
        assert ei.value.code == 2
        assert _lines(capsys.readouterr().err) == [expected]
    assert list(outputs.iterdir()) == []
    assert not (tmp_path / "mlflow.db").exists()


# -- checkpoints on a full disk -----------------------------------------------------------------------------


def test_stale_temp_files_are_never_resumed_from_and_go_with_the_next_save(tmp_path: Path) -> None:
    d = checkpoint.checkpoint_dir(tmp_path)
    good = checkpoint.save(tmp_path, {"loop": {"t_env": 100}}, keep=3)
    stale = d / "step_200.pt.tmp"  # what a kill -9 in the middle of a save leaves
    stale.write_bytes(b"half a checkpoint")
    assert checkpoint.resolve(tmp_path) == good
    with pytest.raises(CheckpointError, match=r"is the temp file of a checkpoint write that did not finish"):
        checkpoint.resolve(stale)
    checkpoint.save(tmp_path, {"loop": {"t_env": 300}}, keep=3)
    assert sorted(p.name for p in d.iterdir()) == ["step_100.pt", "step_300.pt"]


def test_checkpoint_on_a_full_disk_fails_the_run_keeps_the_last_good_one_and_resumes(
    small_disk, store: MlflowClient, exp_name: str
) -> None:
    disk = small_disk("rundir", "8m")  # the run dir fills up; the MLflow store is on a normal disk
    run_dir = disk.path / "run"
    args = [*BASE, "save_interval=100", f"logger.mlflow.experiment_name={exp_name}"]
    with pytest.raises(CheckpointWriteError) as ei:
        _train(run_dir, *args, fill=disk, at=150)  # the disk fills after step_100.pt
    ckpts = run_dir / "checkpoints"
    message = (f"no space left on device: {ckpts}/step_200.pt (checkpoint not written; the last good checkpoint "
               f"{ckpts}/step_100.pt is kept; free some space, then resume with resume={run_dir})")
    assert str(ei.value) == message and ei.value.errno == errno.ENOSPC
    assert sorted(p.name for p in ckpts.iterdir()) == ["step_100.pt"]  # no step_200.pt.tmp left filling the disk
    (mlrun,) = runs_of(store, exp_name)
    assert mlrun.info.status == "FAILED"
    assert mlrun.data.tags["error"] == f"CheckpointWriteError: {message}"

    disk.free()
    (ckpts / "step_250.pt.tmp").write_bytes(b"\0" * 1000)  # as if a later attempt had been killed mid-save
    result = _train(disk.path / "elsewhere", *args, f"resume={run_dir}")
    assert result.status == "FINISHED" and result.t_env == 400
    assert sorted(p.name for p in ckpts.iterdir()) == ["step_200.pt", "step_300.pt", "step_400.pt"]
    (mlrun,) = runs_of(store, exp_name)
    assert mlrun.info.status == "FINISHED" and "error" not in mlrun.data.tags
    assert sorted(m.step for m in store.get_metric_history(mlrun.info.run_id, "test_return_mean")) == [0, 200, 400]


# -- the MLflow store and its artifacts on a full disk ----------------------------------------------------------


def _logger(uri: str, run_dir: Path, name: str) -> MLflowLogger:
    lg = MLflowLogger(MLflowLoggerConfig(tracking_uri=uri, experiment_name=name, flush_seconds=0.0,
                                         finish_timeout=0.0, name="mlflow"))
    lg.start(RunInfo(config={"lr": 0.1}, tags={}, run_name=name, run_dir=run_dir, hydra_dir=None))
    return lg


def test_full_store_keeps_the_outbox_and_the_unsent_file_holds_the_final_status(
    tmp_path: Path, small_disk, capfd: pytest.CaptureFixture
) -> None:
    disk = small_disk("store", "16m")
    db = disk.path / "mlflow.db"
    uri = f"sqlite:///{db}"
    run_dir = tmp_path / "run"  # on a normal disk
    lg = _logger(uri, run_dir, "full-store")
    lg.log_stat("x", 0.0, 0)
    lg.flush()
    assert not lg._pending
    capfd.readouterr()

    disk.fill()
    for t in range(10, 60, 10):
        lg.log_stat("x", float(t), t)  # the first flush fails, the rest wait for the backoff
    lg.finish("FAILED", "RuntimeError: simulator lost")  # nothing raised
    err = capfd.readouterr().err
    assert "Traceback" not in err and "database or disk is full" not in err and "unreachable" not in err
    bar = "!" * 100
    assert _lines(err) == [
        f"warning: no space left on device: {db} (the MLflow store); training goes on, 1 metric and what follows "
        "are kept and re-sent (next try in 2 s, backing off to 60 s, in case space is freed)",
        bar,
        f"WARNING: no space left on device: {db}: MLflow run {lg.run_id} in {uri} misses 5 metrics, 0 artifacts, "
        "final status FAILED.",
        f"They are kept in {run_dir / UNSENT_FILE}.",
        "Free some space there, then send them:",
        f"  python -m runner.tools send-unsent {run_dir / UNSENT_FILE}",
        bar,
    ]
    data = json.loads((run_dir / UNSENT_FILE).read_text())
    assert data["status"] == "FAILED" and data["tags"] == {"error": "RuntimeError: simulator lost"}
    assert data["reason"] == f"no space left on device: {db}"
    assert [(m["step"], m["value"]) for m in data["metrics"]] == [(t, float(t)) for t in range(10, 60, 10)]

    disk.free()
    from runner.tools.__main__ import main

    assert main(["send-unsent", str(run_dir)]) == 0
    client = MlflowClient(tracking_uri=uri)
    mlrun = client.get_run(lg.run_id)
    assert mlrun.info.status == "FAILED" and mlrun.data.tags["error"] == "RuntimeError: simulator lost"
    assert sorted(m.step for m in client.get_metric_history(lg.run_id, "x")) == list(range(0, 60, 10))


def test_full_artifact_root_keeps_the_artifacts_and_still_records_the_status(
    tmp_path: Path, small_disk, store: MlflowClient, exp_name: str, capfd: pytest.CaptureFixture
) -> None:
    disk = small_disk("artifacts", "4m")  # the store is on a normal disk, its artifact root is not
    store.create_experiment(exp_name, artifact_location=disk.path.as_uri())
    run_dir = tmp_path / "run"
    result = _train(run_dir, *BASE, f"logger.mlflow.experiment_name={exp_name}", fill=disk, at=0)
    assert result.status == "FINISHED"
    (mlrun,) = runs_of(store, exp_name)
    assert mlrun.info.status == "FINISHED"  # the store took the status: the artifacts wait in the unsent file
    art = Path(disk.path, mlrun.info.run_id, "artifacts")
    err = capfd.readouterr().err
    assert "Traceback" not in err
    warning = [ln for ln in _lines(err) if ln.startswith("warning: no space")]
    assert warning == [
        f"warning: no space left on device: {art / 'learning_curve.png'} (an MLflow artifact); training goes on, "
        "0 metrics, 1 artifact and what follows are kept and re-sent (next try in 2 s, backing off to 60 s, "
        "in case space is freed)"
    ]
    assert f"WARNING: no space left on device: {art / 'learning_curve.png'}: MLflow run {mlrun.info.run_id}" in err
    data = json.loads((run_dir / UNSENT_FILE).read_text())
    assert data["status"] is None
    assert [Path(a["path"]).name for a in data["artifacts"]] == ["learning_curve.png", "q_tables.json", "step_400.pt"]
    assert [p for p in disk.path.rglob("*") if p.is_file() and p != disk.filler] == []  # no partial copy left

    disk.free()
    from runner.tools.__main__ import main

    assert main(["send-unsent", str(run_dir)]) == 0
    assert {"learning_curve.png", "q_tables.json", "checkpoints"} <= {a.path for a in store.list_artifacts(mlrun.info.run_id)}


def test_run_dir_and_store_on_one_full_disk_say_so_in_one_line(
    small_disk, exp_name: str, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    disk = small_disk("all", "16m")  # outputs/ on one disk: run dir, store, artifacts
    uri = f"sqlite:///{disk.path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    run_dir = disk.path / "run"
    with pytest.raises(CheckpointWriteError, match=r"^no space left on device: "):
        _train(run_dir, *BASE, "save_interval=100", f"logger.mlflow.experiment_name={exp_name}", fill=disk, at=150)
    err = capfd.readouterr().err
    assert "Traceback" not in err and "database or disk is full" not in err
    (mlrun,) = runs_of(MlflowClient(tracking_uri=uri), exp_name)
    (line,) = [ln for ln in _lines(err) if ln.startswith("ERROR")]
    n = re.search(r"misses (\d+) metrics", line)
    assert n and int(n.group(1)) > 0  # those logged since the disk filled
    unsent = run_dir / UNSENT_FILE
    assert line == (
        f"ERROR: MLflow run {mlrun.info.run_id} misses {n.group(1)} metrics, 0 artifacts, final status FAILED (no space "
        f"left on device: {disk.path / 'mlflow.db'}), and they could not be kept in {unsent} either (no space left on "
        f"device: {unsent}): they are lost. The run stays RUNNING in {uri}; once it can be written, record its final "
        f"status with: python -c \"from mlflow.tracking import MlflowClient; "
        f"MlflowClient('{uri}').set_terminated('{mlrun.info.run_id}', 'FAILED')\""
    )
    assert mlrun.info.status == "RUNNING"
    ckpts = run_dir / "checkpoints"
    leftovers = [p.name for p in disk.path.rglob("*") if p.name.endswith(".tmp") or p.name == UNSENT_FILE]
    assert leftovers == [] and sorted(p.name for p in ckpts.iterdir()) == ["step_100.pt"]
