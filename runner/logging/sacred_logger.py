"""Sacred backend: PyMARL's sacred run directories, written by sacred's own FileStorageObserver.

``logger=[console,mlflow,sacred]`` writes ``<dir>/<id>/`` (default ``outputs/sacred``, relative to the
cwd, like PyMARL's ``results/sacred``) with:

* ``config.json``: the resolved run config;
* ``run.json``: host, git and experiment info and the status: COMPLETED, FAILED (``fail_trace`` holds the
  error and the traceback of training) or INTERRUPTED (a KILLED run);
* ``info.json`` in PyMARL's layout: for every stat a list ``key`` of values and a list ``key_T`` of the
  t_env at which each was logged;
* ``metrics.json``: the same values through sacred's ``log_scalar`` (step = t_env);
* ``cout.txt``: the console output captured while the run was open (capture mode ``sys``).

Our train loop is no sacred main function, so the sacred run lives in a background thread: its main
function hands ``_run`` back to :meth:`SacredLogger.start` and waits until :meth:`SacredLogger.finish`
tells it how training ended (return, or raise). Only public sacred API is used.

Sacred seeds random, numpy and torch when a run starts; the global RNG states are saved before and
restored after, so a run with this logger gives bit-identical metrics to one without.

Resume: a resumed run opens a *new* sacred run (sacred cannot reopen a run directory). Its config.json
adds ``resumed_from`` (the previous sacred run dir, or null if that run had no sacred logger) and
``resumed_at_t_env``; its info.json and metrics.json start with the history that the checkpoint kept
(every stat up to the checkpoint's t_env), so the new run holds the whole curve once, with no duplicated
steps. (metrics.json timestamps of that carried-over history are those of the resume.)

sacred is imported lazily (it costs start-up time and is optional: ``pip install -e '.[sacred]'``).
A failure of sacred never stops training: it prints a warning and the logger turns itself off.
"""

from __future__ import annotations

import copy
import logging
import random
import re
import sys
import threading
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from runner.logging.base import Logger, RunInfo
from runner.logging.console import console
from runner.registry import LOGGERS

MISSING_PACKAGE = "sacred is not installed: pip install -e '.[sacred]' (sacred 0.8.7 needs setuptools<81)"
NO_PKG_RESOURCES = (
    "sacred cannot be imported: setuptools >= 81 has no pkg_resources, which sacred 0.8.7 imports: "
    "pip install 'setuptools<81'"
)
HANDOFF_TIMEOUT_S = 120.0
"""How long start() waits for sacred to open its run (host info, git state, observers)."""
JOIN_TIMEOUT_S = 120.0
"""How long finish() waits for sacred to write its final files."""
PUBLISH_SECONDS = 5.0
"""Hand sacred a fresh copy of info.json's content at least this often (sacred writes it every 10 s)."""
RESERVED_FILES = {"run.json", "config.json", "info.json", "metrics.json", "cout.txt"}
ANSI_CSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")


@dataclass
class SacredLoggerConfig:
    dir: str = "outputs/sacred"
    """Base dir of the sacred runs (<dir>/<id>/), relative to the cwd."""
    experiment_name: str = "hymarl"
    """Sacred experiment name (run.json: experiment.name)."""
    name: str = MISSING


def import_sacred() -> Any:
    """Import sacred (quietly: 0.8.7 warns that pkg_resources is deprecated). ImportError if missing."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*pkg_resources.*")
        import sacred
        from sacred.observers import FileStorageObserver  # noqa: F401

    return sacred


class TrainingFailed(Exception):
    """Raised in the sacred main function when training failed: sacred marks the run FAILED."""


def _interrupt_class() -> type[Exception]:
    """A SacredInterrupt (sacred's documented way to end a run with a custom status): INTERRUPTED."""
    from sacred.utils import SacredInterrupt

    class TrainingKilled(SacredInterrupt):
        STATUS = "INTERRUPTED"

    return TrainingKilled


@LOGGERS.register("sacred", config=SacredLoggerConfig)
class SacredLogger(Logger):
    """Writes a PyMARL-style sacred run dir; see the module docstring."""

    def __init__(self, cfg: SacredLoggerConfig) -> None:
        self.cfg = cfg
        self.run_dir: Path | None = None
        self.error: str | None = None  # why the logger turned itself off
        self._run: Any = None  # sacred.run.Run, owned by the background thread
        self._thread: threading.Thread | None = None
        self._opened = threading.Event()  # set by the sacred main function once _run is handed back
        self._done = threading.Event()  # set by finish(): the main function may return / raise
        self._outcome: tuple[str, str | None] = ("FINISHED", None)
        self._thread_error: BaseException | None = None
        self._info: dict[str, list[Any]] = {}  # PyMARL's info: key -> values, key_T -> t_env
        self._last_publish = 0.0

    @staticmethod
    def check_config(cfg: Any) -> list[str]:
        """Called by runner.config.validate: a missing package is an error before any run exists."""
        try:
            import_sacred()
        except ImportError as exc:
            if exc.name == "pkg_resources":
                return [NO_PKG_RESOURCES]
            return [MISSING_PACKAGE]
        base = cfg.dir
        if Path(base).expanduser().exists() and not Path(base).expanduser().is_dir():
            return [f"logger.sacred.dir={base!r} is invalid: it is a file; sacred needs a directory for its runs"]
        return []

    # -- start ---------------------------------------------------------------------------------
    def start(self, info: RunInfo) -> None:
        rng = _global_rng_states()  # sacred reseeds random/numpy/torch: put them back afterwards
        try:
            self._start(info)
        except Exception as exc:
            self._disable(f"could not start the sacred run: {type(exc).__name__}: {exc}")
            self._outcome = ("FAILED", self.error)
            self._release_thread()
        finally:
            _set_global_rng_states(rng)

    def _start(self, info: RunInfo) -> None:
        sacred = import_sacred()
        from sacred.observers import FileStorageObserver

        basedir = Path(self.cfg.dir).expanduser().resolve()
        config = copy.deepcopy(info.config)
        if info.resume_state or info.t_env_start:
            config["resumed_from"] = info.resume_state.get("sacred_run_dir")
            config["resumed_at_t_env"] = info.t_env_start
            self._info = _history_upto(info.resume_state.get("sacred_info") or {}, info.t_env_start)

        ex = sacred.Experiment(self.cfg.experiment_name, base_dir=str(Path(__file__).resolve().parents[2]))
        ex.logger = logging.getLogger("hymarl.sacred")  # not sacred's default: that configures the root logger
        ex.logger.setLevel(logging.WARNING)
        ex.add_config(config)
        ex.captured_out_filter = ConsoleText()
        observer = FileStorageObserver(basedir)
        ex.observers.append(observer)
        killed = _interrupt_class()
        opened, done = self._opened, self._done

        def hymarl(_run: Any) -> None:
            """The sacred main function: open while hymarl trains, then end as training ended."""
            if not done.is_set():  # start() gave up waiting: stay out of the way
                self._run = _run
            opened.set()
            done.wait()
            status, error = self._outcome
            if status == "FAILED":
                raise TrainingFailed(error or "training failed")
            if status == "KILLED":
                raise killed(error or "training was stopped")

        ex.main(hymarl)
        meta = {"run_name": info.run_name, "hymarl_run_dir": str(info.run_dir), "tags": dict(info.tags)}

        def target() -> None:
            try:
                ex.run(meta_info=meta, options={"--capture": "sys"})
            except (TrainingFailed, killed):
                pass  # the outcome we asked for; sacred has recorded it
            except BaseException as exc:  # sacred itself failed: report it to start() or finish()
                self._thread_error = exc
            finally:
                opened.set()  # never leave start() waiting

        self._thread = threading.Thread(target=target, name="hymarl-sacred-run", daemon=True)
        self._thread.start()
        if not opened.wait(HANDOFF_TIMEOUT_S):
            raise TimeoutError(f"sacred did not open its run within {HANDOFF_TIMEOUT_S:.0f} s")
        if self._run is None:
            raise self._thread_error or RuntimeError("sacred ended before its run opened")
        self.run_dir = Path(observer.dir)
        for key, values in self._info.items():  # carried-over history: metrics.json gets it too
            if not key.endswith("_T") and key + "_T" in self._info:
                for v, t in zip(values, self._info[key + "_T"]):
                    self._run.log_scalar(key, v, t)
        self._publish()

    # -- during the run ------------------------------------------------------------------------
    def log_stat(self, key: str, value: float, t_env: int) -> None:
        if self._run is None:
            return
        try:
            v, t = float(value), int(t_env)
            self._info.setdefault(key, []).append(v)
            self._info.setdefault(key + "_T", []).append(t)
            self._run.log_scalar(key, v, t)
            if time.monotonic() - self._last_publish > PUBLISH_SECONDS:
                self._publish()
        except Exception as exc:
            self._disable(f"log_stat failed: {type(exc).__name__}: {exc}")

    def _publish(self) -> None:
        """Give sacred a copy of info: its heartbeat thread serialises it while we keep appending."""
        if self._run is not None:
            self._run.info = {k: list(v) for k, v in self._info.items()}
            self._last_publish = time.monotonic()

    def flush(self) -> None:
        self._publish()

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Copy small files (plots, tables) into the run dir; checkpoints and directories stay out."""
        if self._run is None or not path.is_file() or path.suffix == ".pt" or path.name in RESERVED_FILES:
            return
        try:
            self._run.add_artifact(str(path), path.name)
        except Exception as exc:
            console.print(f"[yellow]warning: sacred logger could not store artifact {path}: {exc}")

    def state(self) -> dict[str, Any]:
        if self.run_dir is None:
            return {}
        return {"sacred_run_dir": str(self.run_dir), "sacred_info": {k: list(v) for k, v in self._info.items()}}

    def describe(self) -> str | None:
        if self.error is not None:
            return f"sacred logger off: {self.error}"
        if self.run_dir is None:
            return None
        return f"sacred run {self.run_dir.name} in {self.run_dir}"

    # -- end -----------------------------------------------------------------------------------
    def finish(self, status: str, error: str | None = None) -> None:
        if self._thread is None:
            return
        if status == "FAILED":
            error = _with_traceback(error)
        self._publish()
        self._outcome = (status, error)
        self._release_thread()
        if self._thread_error is not None and self.error is None:
            self._disable(f"sacred failed: {type(self._thread_error).__name__}: {self._thread_error}")

    def _release_thread(self) -> None:
        """Let the sacred main function end, and join its thread (also after a failed start)."""
        self._done.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(JOIN_TIMEOUT_S)
            if thread.is_alive():
                self._disable(f"sacred did not finish writing within {JOIN_TIMEOUT_S:.0f} s")
        self._run = None

    def _disable(self, reason: str) -> None:
        self.error = reason
        self._run = None
        console.print(f"[yellow]warning: sacred logger turned off ({reason}); training goes on")


def _global_rng_states() -> tuple[Any, ...]:
    """The global RNG states sacred's set_global_seed changes. CUDA's only once CUDA is initialised (reading
    them would initialise it; before that torch only queues the seed, the same seed the run itself queued)."""
    import numpy as np
    import torch

    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    return random.getstate(), np.random.get_state(), torch.get_rng_state(), cuda


def _set_global_rng_states(states: tuple[Any, ...]) -> None:
    import numpy as np
    import torch

    py, npy, cpu, cuda = states
    random.setstate(py)
    np.random.set_state(npy)
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


class ConsoleText:
    """sacred's ``captured_out_filter``: cout.txt as a terminal shows it, not every redraw of the live bar.

    In a terminal the progress bar redraws itself ~10 times a second (``\\r`` + erase line + bar); teed
    verbatim that is megabytes an hour. This keeps, of every finished line, what is left after its last
    ``\\r``, without colour codes. sacred calls the filter with its previous output + the new raw text and
    appends to cout.txt what follows the previous output, so the output only ever grows: an unfinished
    line waits here until its newline arrives (a line still unfinished when the run ends is dropped).
    """

    def __init__(self) -> None:
        self._out = ""  # what we returned last time: sacred hands it back as the start of `text`
        self._pending = ""  # raw text of the unfinished last line
        self._synced = True
        self._lock = threading.Lock()  # sacred's heartbeat thread and run thread may both call it

    def __call__(self, text: str) -> str:
        with self._lock:
            if not self._synced or not text.startswith(self._out):
                self._synced = False  # sacred did not hand our output back: pass text through from now on
                return text
            raw = self._pending + text[len(self._out) :]
            done, newline, pending = raw.rpartition("\n")
            self._pending = pending[pending.rfind("\r") :] if "\r" in pending else pending  # drop redraws
            if newline:
                self._out += "".join(_visible(line) + "\n" for line in done.split("\n"))
            return self._out


def _visible(line: str) -> str:
    """A finished line as a terminal shows it: the text after its last carriage return, no colour codes."""
    line = line.rstrip("\r")  # \r\n line ends
    return ANSI_CSI.sub("", line[line.rfind("\r") + 1 :])


def _history_upto(info: dict[str, list[Any]], t_env: int) -> dict[str, list[Any]]:
    """The (key, key_T) pairs of a checkpointed info, cut at t_env (what the resumed run does not redo)."""
    out: dict[str, list[Any]] = {}
    for key, values in info.items():
        steps = info.get(key + "_T")
        if key.endswith("_T") or steps is None:
            continue
        kept = [(v, t) for v, t in zip(values, steps) if t <= t_env]
        out[key] = [v for v, _ in kept]
        out[key + "_T"] = [t for _, t in kept]
    return out


def _with_traceback(error: str | None) -> str | None:
    """The error, and the traceback of the exception being handled (finish runs inside the except)."""
    exc = sys.exc_info()[1]
    if exc is None:
        return error
    trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return f"{error or type(exc).__name__}\n\nTraceback of training:\n{trace}"
