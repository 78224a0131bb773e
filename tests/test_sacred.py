"""The sacred logger: PyMARL's sacred run dirs, equal to MLflow's record, without changing the run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import open_dict

from runner.config import ConfigError, validate
from runner.experiment import run
from runner.learners.base import BaseLearner
from runner.logging.base import Logger
from runner.registry import LOGGERS
from tests.conftest import ROOT, compose, runs_of, train

pytest.importorskip("sacred", reason="the sacred extra is not installed")

SHORT = ["+algo=qmix", "+env=twostep", "t_max=400", "test_interval=200", "log_interval=100", "test_nepisodes=4"]
WITH_SACRED = "logger=[console,mlflow,sacred]"
COMPARED = ("loss", "test_return_mean", "return_mean", "grad_norm", "epsilon")


@LOGGERS.register("_sacred_test_interrupt_at")
class InterruptAt(Logger):
    """Sends the process SIGINT once t_env reaches `at` (what Ctrl-C would do)."""

    def __init__(self, cfg: dict) -> None:
        self.at, self.sent = cfg["at"], False

    def log_stat(self, key: str, value: float, t_env: int) -> None:
        if t_env >= self.at and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGINT)


def _history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


def _one_run_dir(base: Path) -> Path:
    (d,) = [p for p in base.iterdir() if p.name.isdigit()]
    return d


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, store_uri: str) -> Iterator[dict[str, Any]]:
    """The same short run (seed 0) with and without the sacred logger."""
    tmp = tmp_path_factory.mktemp("sacred_pair")
    client = MlflowClient(tracking_uri=store_uri)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", store_uri)
        train(tmp / "with", *SHORT, WITH_SACRED, f"logger.sacred.dir={tmp / 'sacred'}",
              "logger.mlflow.experiment_name=test-sacred-pair", "run_name=with")
        train(tmp / "without", *SHORT, "logger.mlflow.experiment_name=test-sacred-pair", "run_name=without")
    runs = {r.info.run_name: r for r in runs_of(client, "test-sacred-pair")}
    yield {"client": client, "sacred": _one_run_dir(tmp / "sacred"), "with": runs["with"], "without": runs["without"]}


def test_a_run_writes_pymarl_sacred_files_equal_to_mlflow(pair: dict[str, Any]) -> None:
    d, client, mlrun = pair["sacred"], pair["client"], pair["with"]
    assert {"config.json", "run.json", "info.json", "metrics.json", "cout.txt"} <= {p.name for p in d.iterdir()}
    run_json = _json(d / "run.json")
    assert run_json["status"] == "COMPLETED" and run_json["experiment"]["name"] == "hymarl"
    assert run_json["meta"]["run_name"] == "with"
    config = _json(d / "config.json")
    assert config["seed"] == 0 and config["algo_name"] == "qmix" and config["t_max"] == 400
    info, metrics = _json(d / "info.json"), _json(d / "metrics.json")
    for key in mlrun.data.metrics:
        steps, values = zip(*_history(client, mlrun.info.run_id, key))
        assert len(info[key]) == len(info[key + "_T"]), key
        assert (tuple(info[key + "_T"]), tuple(info[key])) == (steps, values), key
        assert (tuple(metrics[key]["steps"]), tuple(metrics[key]["values"])) == (steps, values), key
    assert info["test_return_mean_T"] == [0, 200, 400]
    assert (d / "cout.txt").read_text().strip()
    assert "learning_curve.png" in run_json["artifacts"] and (d / "learning_curve.png").is_file()
    assert not any(t.name == "hymarl-sacred-run" for t in threading.enumerate())


def test_sacred_does_not_change_the_run(pair: dict[str, Any]) -> None:
    """sacred seeds random/numpy/torch when its run starts: the logger puts the states back."""
    client, a, b = pair["client"], pair["with"], pair["without"]
    assert set(a.data.metrics) == set(b.data.metrics)
    for key in COMPARED:
        assert _history(client, a.info.run_id, key) == _history(client, b.info.run_id, key), key


def test_a_failing_run_is_failed_in_sacred_and_mlflow(
    tmp_path: Path, store: MlflowClient, exp_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(self: BaseLearner, *args: Any, **kwargs: Any) -> dict[str, float]:
        raise RuntimeError("boom")

    monkeypatch.setattr(BaseLearner, "train", boom)
    stdout, stderr = sys.stdout, sys.stderr
    with pytest.raises(RuntimeError, match="boom"):
        train(tmp_path / "run", *SHORT, WITH_SACRED, f"logger.sacred.dir={tmp_path / 'sacred'}",
              f"logger.mlflow.experiment_name={exp_name}")
    run_json = _json(_one_run_dir(tmp_path / "sacred") / "run.json")
    assert run_json["status"] == "FAILED"
    trace = "".join(run_json["fail_trace"])
    assert "RuntimeError: boom" in trace and "in boom" in trace  # the traceback of training, not only ours
    (mlrun,) = runs_of(store, exp_name)
    assert mlrun.info.status == "FAILED" and mlrun.data.tags["error"] == "RuntimeError: boom"
    assert not any(t.name == "hymarl-sacred-run" for t in threading.enumerate())  # joined
    assert (sys.stdout, sys.stderr) == (stdout, stderr)  # sacred's capture is undone


def test_a_sacred_failure_does_not_stop_training(
    tmp_path: Path, store: MlflowClient, exp_name: str, pair: dict[str, Any], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sacred.observers import FileStorageObserver

    def full(self: Any, *args: Any, **kwargs: Any) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(FileStorageObserver, "started_event", full)
    result = train(tmp_path / "run", *SHORT, WITH_SACRED, f"logger.sacred.dir={tmp_path / 'sacred'}",
                   f"logger.mlflow.experiment_name={exp_name}")
    assert result.status == "FINISHED"
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert "warning: sacred logger turned off (could not start the sacred run: OSError: No space left" in err
    (mlrun,) = runs_of(store, exp_name)
    assert mlrun.info.status == "FINISHED"
    for key in COMPARED:  # the RNG states were restored on this path too
        assert _history(store, mlrun.info.run_id, key) == _history(pair["client"], pair["without"].info.run_id, key)
    assert not any(t.name == "hymarl-sacred-run" for t in threading.enumerate())


def test_interrupt_and_resume_continue_the_history_in_a_new_sacred_run(
    tmp_path: Path, store: MlflowClient, exp_name: str, pair: dict[str, Any]
) -> None:
    base = tmp_path / "sacred"
    opts = [*SHORT, WITH_SACRED, f"logger.sacred.dir={base}", f"logger.mlflow.experiment_name={exp_name}"]
    cfg = compose(*opts)
    with open_dict(cfg):
        cfg.logger["_sacred_test_interrupt_at"] = {"at": 200}
    killed = run(cfg, hydra_dir=tmp_path / "part")
    assert killed.status == "KILLED" and 200 <= killed.t_env < 400
    resumed = train(tmp_path / "again", *opts, f"resume={tmp_path / 'part'}")
    assert resumed.status == "FINISHED"
    first, second = base / "1", base / "2"
    assert _json(first / "run.json")["status"] == "INTERRUPTED"
    assert _json(second / "run.json")["status"] == "COMPLETED"
    config = _json(second / "config.json")
    assert config["resumed_from"] == str(first) and config["resumed_at_t_env"] == killed.t_env
    full = _json(pair["sacred"] / "info.json")
    info, metrics = _json(second / "info.json"), _json(second / "metrics.json")
    assert info == full  # the whole history once, equal to the uninterrupted run's
    for key in ("loss", "test_return_mean"):
        assert (metrics[key]["steps"], metrics[key]["values"]) == (full[key + "_T"], full[key]), key


MISSING = "sacred is not installed: pip install -e '.[sacred]' (sacred 0.8.7 needs setuptools<81)"


def test_missing_sacred_is_a_config_error_before_any_run(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = compose(*SHORT, WITH_SACRED)
    monkeypatch.setitem(sys.modules, "sacred", None)  # `import sacred` now raises ImportError
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    assert str(e.value) == f"invalid config:\n  {MISSING}"


def test_hymarl_imports_without_sacred() -> None:
    code = (
        "import sys; sys.modules['sacred'] = None\n"
        "from runner.registry import LOGGERS\n"
        "assert 'sacred' in LOGGERS.names()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_a_file_as_sacred_dir_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=r"logger.sacred.dir='.*/file' is invalid: it is a file"):
        validate(compose(*SHORT, WITH_SACRED, f"logger.sacred.dir={tmp_path / 'file'}"))


@pytest.mark.parametrize("override", [WITH_SACRED, "logger=[sacred]"])
def test_the_cli_override_composes(override: str) -> None:
    cfg = compose(*SHORT, override)
    names = override[len("logger=[") : -1].split(",")
    assert list(cfg.logger) == names
    assert (cfg.logger.sacred.dir, cfg.logger.sacred.experiment_name, cfg.logger.sacred.name) == (
        "outputs/sacred",
        "hymarl",
        "sacred",
    )
    validate(cfg)


def test_cout_keeps_what_a_terminal_shows_not_every_redraw_of_the_bar() -> None:
    from runner.logging.sacred_logger import ConsoleText

    f, out = ConsoleText(), ""
    chunks = ["hymarl \x1b[1mrun\x1b[0m\n", "\x1b[?25l\x1b[2Kbar 1", "\r\x1b[2Kbar 2", "\r\x1b[2Kt_env 100 | lo",
              "ss: 1\n\x1b[2Kbar 3", "\r\x1b[2Kbar 4\n\x1b[?25h", "done\r\n"]
    for chunk in chunks:
        new = f(out + chunk)  # what sacred does: previous output + new raw text
        assert new.startswith(out)  # only ever appended to (sacred writes cout.txt by appending)
        out = new
    assert out == "hymarl run\nt_env 100 | loss: 1\nbar 4\ndone\n"
