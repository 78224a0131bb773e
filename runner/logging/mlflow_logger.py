"""MLflow backend: params, tags, metrics by t_env, artifacts and an honest final status.

Default store: ``sqlite:///<cwd>/outputs/mlflow.db`` with artifacts under
``outputs/mlartifacts``; ``MLFLOW_TRACKING_URI`` or ``logger.mlflow.tracking_uri`` point runs
elsewhere (e.g. a tracking server, ``make server``). mlflow is imported lazily: it costs seconds of
start-up. On resume the run is reopened and steps that were already logged are not logged again, so
a resumed run has no duplicated metric steps.

A tracking server that is down or drops mid-run never stops the training:

* before anything is built, ``check_config`` refuses a server that does not answer (exit code 2);
* metrics, params, tags and artifacts wait in an outbox and are sent in order by the periodic flush.
  A send that fails because the server cannot be reached keeps everything, prints one warning and
  is tried again with exponential backoff (2 s up to 60 s); once the server answers, the outbox is
  sent (in order, nothing dropped) and a line says so. Re-sending a metric batch is harmless: the
  store skips exact duplicates;
* each request gets a short budget: MLflow's HTTP client would otherwise retry for minutes
  (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``/``_BACKOFF_FACTOR``/``_TIMEOUT``, read at every request by
  ``mlflow.utils.rest_utils.http_request``; we set them around our own calls only, and a value
  that the user exported wins);
* at the end, ``finish`` keeps trying for up to ``finish_timeout`` seconds, then writes what it
  could not send (metrics, params, tags, artifact paths, final status) to
  ``<run_dir>/mlflow_unsent.json``. ``python -m runner.tools send-unsent <run_dir>`` sends it
  later; resuming the run sends it too;
* SQLite "database is locked" errors (concurrent sweep jobs) are retried by ``runner.tracking.store.retry``;
* a full disk under a SQLite store ("database or disk is full") or a local artifact root (ENOSPC) is
  treated like a dropped server, named as what it is (``no space left on device: <path>``, and
  without MLflow's logged traceback): the outbox is kept and retried, then goes to
  ``mlflow_unsent.json``. Artifacts waiting for space do not hold back the final status.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import MISSING

from runner.logging.base import Logger, RunInfo
from runner.registry import LOGGERS
from runner.tracking import ownership, storage
from runner.tracking.store import (
    ARTIFACT_HTTP,
    BATCH,
    LIVE_HTTP,
    START_HTTP,
    UNSENT_FILE,
    TrackingUnavailable,
    check_reachable,
    default_tracking_uri,
    ensure_experiment,
    http_budget,
    is_transient,
    new_client,
    retry,
    send_unsent,
    sqlite_path,
)

T = TypeVar("T")

MAX_PARAM_LEN = 6000
BACKOFF_FIRST, BACKOFF_MAX = 2.0, 60.0  # seconds between tries while the server is unreachable


@dataclass
class MLflowLoggerConfig:
    tracking_uri: Any = None
    """Tracking URI; default: $MLFLOW_TRACKING_URI, else sqlite:///outputs/mlflow.db."""
    experiment_name: str = "hymarl"
    """MLflow experiment the runs are filed under."""
    flush_seconds: float = 10.0
    """Send buffered metrics at least this often."""
    log_checkpoint: bool = True
    """Upload the final checkpoint as an artifact."""
    finish_timeout: float = 60.0
    """At the end of a run, keep retrying an unreachable tracking server this many seconds; what is
    still unsent then goes to <run_dir>/mlflow_unsent.json (0: write it at once)."""
    name: str = MISSING


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def unreachable(exc: BaseException) -> bool:
    """The tracking store could not be talked to (down, timed out, 5xx, locked) or its disk is full
    (SQLite's "database or disk is full", ENOSPC copying an artifact): worth keeping the data and
    trying again (space may be freed). False for errors that a retry would repeat (a bad value, a 4xx)."""
    import requests
    from mlflow.exceptions import MlflowException, RestException

    if is_transient(exc) or storage.space_reason(exc):
        return True
    if isinstance(exc, RestException):  # the server answered with an error
        return exc.get_http_status_code() >= 500 or exc.get_http_status_code() in (408, 429)
    if isinstance(exc, requests.HTTPError):  # artifact upload
        code = exc.response.status_code if exc.response is not None else 500
        return code >= 500 or code in (408, 429)
    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return True
    # http_request wraps connection errors, timeouts and exhausted retries like this
    return isinstance(exc, MlflowException) and str(exc.message).startswith("API request to")


class _NoDiskFullTraceback(logging.Filter):
    """MLflow logs every SQLAlchemy OperationalError at ERROR with its traceback (~50 lines) before
    raising it; a full disk is reported by this logger in one line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return exc is None or storage.space_reason(exc) is None


logging.getLogger("mlflow.store.db.utils").addFilter(_NoDiskFullTraceback())


def short_reason(exc: BaseException) -> str:
    """The useful part of a connection error ('[Errno 111] Connection refused'), else the message."""
    text = str(exc)
    m = re.search(r"\[Errno -?\d+\][^'\")]*", text)
    if m:
        return m.group(0).strip()
    if "timeout" in text.lower() or "timed out" in text.lower():
        return "timed out"
    return text if len(text) <= 200 else text[:200] + "..."


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def warn(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@LOGGERS.register("mlflow", config=MLflowLoggerConfig)
class MLflowLogger(Logger):
    def __init__(self, cfg: MLflowLoggerConfig) -> None:
        self.cfg = cfg
        self.client: Any = None
        self.run_id: str | None = None
        self.run_dir: Path | None = None
        self.tracking_uri = cfg.tracking_uri or default_tracking_uri()
        self._http = self.tracking_uri.startswith(("http://", "https://"))
        self._last_flush = time.monotonic()
        self._logged_upto: dict[str, int] = {}
        # the outbox, sent in this order: params, tags, metrics (in logging order), artifacts
        self._params: list[Any] = []
        self._tags: dict[str, str] = {}
        self._pending: list[Any] = []
        self._artifacts: list[tuple[str, str | None]] = []
        self._status: tuple[str, int] | None = None  # final (status, end_time ms) once finish() ran
        self._last_beat = time.monotonic()
        # server health
        self._failures = 0
        self._retry_at = 0.0
        self._down_reason: str | None = None
        self._down_space = False  # down because a disk is full (not a server that does not answer)

    # -- config check (before anything is built) ------------------------------------------------
    @staticmethod
    def check_config(cfg: Any) -> list[str]:
        """Refuse an unreachable tracking server before any run or run dir exists. Raises
        TrackingUnavailable (one line, exit code 2) rather than returning it: a server that is down
        is not an 'invalid config'."""
        mcfg = cfg
        errors = []
        for key in ("flush_seconds", "finish_timeout"):
            value = mcfg.get(key)
            if not isinstance(value, (int, float)) or value < 0:
                errors.append(f"logger.mlflow.{key}={value} must be >= 0")
        name, max_len = mcfg.get("experiment_name"), 500  # MLflow's limit of an experiment name
        if not isinstance(name, str) or not name.strip():
            errors.append(f"logger.mlflow.experiment_name={name!r} is invalid: must be a non-empty name (the MLflow "
                          "experiment the runs are filed under; default 'hymarl')")
        elif len(name) > max_len:
            errors.append(f"logger.mlflow.experiment_name={name[:40]!r}... is invalid: {len(name)} characters, "
                          f"MLflow allows at most {max_len}")
        check_reachable(mcfg.get("tracking_uri") or default_tracking_uri())
        return errors

    # -- calls to the store ---------------------------------------------------------------------
    def _call(self, fn: Callable[..., T], *args: Any, budget: dict[str, str] = LIVE_HTTP, **kwargs: Any) -> T:
        """One client call with a short HTTP budget; SQLite lock errors retried with backoff."""
        with self._budget(budget):
            return retry(fn, *args, **kwargs)

    def _budget(self, budget: dict[str, str]) -> AbstractContextManager[None]:
        return http_budget(budget) if self._http else nullcontext()

    def _store_path(self) -> str:
        """The database file of a SQLite store, else the tracking URI (what a message names)."""
        db = sqlite_path(self.tracking_uri)
        return str(db) if db is not None else self.tracking_uri

    def _artifact_dest(self, path: str, artifact_path: str | None) -> str:
        """Where an artifact is copied under a local artifact root (what a full-disk message names)."""
        try:
            uri = self.client.get_run(self.run_id).info.artifact_uri
        except Exception:
            uri = None
        if not uri or not (uri.startswith("file:") or "://" not in uri):
            return f"{uri or 'the artifact store'} ({Path(path).name})"
        from mlflow.utils.file_utils import local_file_uri_to_path

        return str(Path(local_file_uri_to_path(uri), artifact_path or "", Path(path).name))

    def _down_what(self) -> str:
        """'no space left on device: <path>' or 'MLflow tracking server <uri> unreachable'."""
        if self._down_space and self._down_reason:
            return self._down_reason
        return f"MLflow tracking server {self.tracking_uri} unreachable"

    def _mark_down(self, exc: BaseException, where: str | None = None) -> None:
        self._failures += 1
        self._retry_at = time.monotonic() + min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (self._failures - 1))
        if self._down_reason is None:
            space = storage.space_reason(exc)
            self._down_space = space is not None
            if space:  # the SQLite file's (or the artifact root's) disk is full, not a server down
                where = where or self._store_path()
                self._down_reason = f"{space}: {where}"
                what = "the MLflow store" if where == self._store_path() else "an MLflow artifact"
                warn(
                    f"warning: {self._down_reason} ({what}); training goes on, {self._outbox_size()} and what "
                    f"follows are kept and re-sent (next try in {BACKOFF_FIRST:.0f} s, backing off to "
                    f"{BACKOFF_MAX:.0f} s, in case space is freed)"
                )
                return
            self._down_reason = short_reason(exc)
            warn(
                f"warning: MLflow tracking server {self.tracking_uri} unreachable ({self._down_reason}); "
                f"training goes on, {self._outbox_size()} and what follows are kept and re-sent "
                f"(next try in {BACKOFF_FIRST:.0f} s, backing off to {BACKOFF_MAX:.0f} s)"
            )

    def _mark_up(self, sent_metrics: int) -> None:
        if self._down_reason is not None and self._down_space:
            warn(f"MLflow store writable again (was: {self._down_reason}): sent {sent_metrics} buffered metrics")
        elif self._down_reason is not None:
            warn(f"MLflow tracking server {self.tracking_uri} reachable again: sent {sent_metrics} buffered metrics")
        self._failures, self._retry_at, self._down_reason, self._down_space = 0, 0.0, None, False

    def _outbox_size(self) -> str:
        parts = [plural(len(self._pending), "metric")]
        if self._artifacts:
            parts.append(plural(len(self._artifacts), "artifact"))
        if self._params:
            parts.append(plural(len(self._params), "param"))
        if self._tags:
            parts.append(plural(len(self._tags), "tag"))
        return ", ".join(parts)

    def _send_outbox(self) -> bool:
        """Send the outbox in order, dropping each part once the store took it. Returns True when
        all is sent; False (data kept, backoff set) when the store cannot be reached. Other errors
        are raised, with the batch that caused them dropped (as a retry would fail again)."""
        sent_metrics = 0
        where = self._store_path()  # what a full-disk warning names
        try:
            while self._params:
                self._call(self.client.log_batch, self.run_id, params=self._params[:100], synchronous=True)
                del self._params[:100]
            for key in list(self._tags):
                self._call(self.client.set_tag, self.run_id, key, self._tags[key])
                del self._tags[key]
            while self._pending:
                chunk = self._pending[:BATCH]
                try:
                    self._call(self.client.log_batch, self.run_id, metrics=chunk, synchronous=True)
                except Exception as exc:
                    if not unreachable(exc):
                        del self._pending[:BATCH]
                    raise
                del self._pending[:BATCH]
                sent_metrics += len(chunk)
            full: tuple[Exception, str] | None = None  # artifacts a full disk cannot take: kept for later
            while self._artifacts:
                path, artifact_path = self._artifacts[0]
                try:
                    if not Path(path).exists():
                        warn(f"warning: artifact {path} no longer exists; not uploaded to MLflow")
                    elif Path(path).is_dir():
                        self._call(self.client.log_artifacts, self.run_id, path, artifact_path, budget=ARTIFACT_HTTP)
                    else:
                        self._call(self.client.log_artifact, self.run_id, path, artifact_path, budget=ARTIFACT_HTTP)
                except Exception as exc:
                    if not storage.space_reason(exc):
                        raise
                    full = (exc, self._artifact_dest(path, artifact_path))
                    break
                self._artifacts.pop(0)
            if self._status is not None:  # not held back by artifacts that wait for space: the store took the rest
                status, end_time = self._status
                self._call(self.client.set_terminated, self.run_id, status=status, end_time=end_time)
                self._status = None
            if full is not None:
                where = full[1]
                raise full[0]
        except Exception as exc:
            if not unreachable(exc):
                raise
            self._mark_down(exc, where)
            return False
        self._last_flush = time.monotonic()
        self._mark_up(sent_metrics)
        return True

    def _has_outbox(self) -> bool:
        return bool(self._params or self._tags or self._pending or self._artifacts or self._status)

    # -- the Logger interface -------------------------------------------------------------------
    def start(self, info: RunInfo) -> None:
        self.run_dir = info.run_dir
        try:
            self.client = new_client(self.tracking_uri)  # a fresh SQLite store is created under a lock
            self._open_run(info)
        except Exception as exc:
            if not unreachable(exc):
                raise
            space = storage.space_reason(exc)
            why = (f"{space}: {self._store_path()}" if space
                   else f"tracking server {self.tracking_uri} unreachable ({short_reason(exc)})")
            raise TrackingUnavailable(f"cannot open the MLflow run: {why}") from exc
        self._send_outbox()  # the params; if the server just dropped, they wait like metrics

    def _open_run(self, info: RunInfo) -> None:
        c, b = self.client, START_HTTP
        resume_id = info.resume_state.get("mlflow_run_id")
        if resume_id:
            unsent = Path(info.run_dir) / UNSENT_FILE
            try:
                same_run = unsent.is_file() and json.loads(unsent.read_text()).get("run_id") == resume_id
            except (OSError, ValueError) as exc:
                warn(f"warning: cannot read {unsent} ({exc}); not sent")
                same_run = False
            if same_run:  # before the history is read: those steps are then not logged again
                warn(f"sending what the last attempt could not send to MLflow ({unsent})")
                send_unsent(unsent, self.tracking_uri)
            self.run_id = resume_id
            run = self._call(c.get_run, resume_id, budget=b)
            if run.info.status == "RUNNING":  # we hold the run dir's lock: its last owner died without a status
                note = (f"the last attempt ({ownership.run_owner(run)}) "
                        "ended without a final status (SIGKILL, OOM, power loss?)")
                warn(f"MLflow run {resume_id} was still marked RUNNING: {note}; continuing it")
                self._call(c.set_tag, resume_id, "previous_attempt", note, budget=b)
            self._call(c.update_run, resume_id, status="RUNNING", budget=b)
            for key, value in {**ownership.owner_tags(), "resumed_at_t_env": str(info.t_env_start),
                               "resume_overrides": info.tags.get("hydra_overrides", "")}.items():
                self._call(c.set_tag, resume_id, key, value, budget=b)
            self._last_beat = time.monotonic()
            if "error" in run.data.tags:  # the reason it stopped last time
                self._call(c.delete_tag, resume_id, "error", budget=b)
            # steps already in the store are not logged again (the resumed run recomputes them exactly)
            for key in run.data.metrics:
                hist = self._call(c.get_metric_history, resume_id, key, budget=b)
                self._logged_upto[key] = max(m.step for m in hist)
            return
        with self._budget(b):
            exp_id = ensure_experiment(c, self.cfg.experiment_name, self.tracking_uri)
        run = self._call(c.create_run, exp_id, run_name=info.run_name, tags={**info.tags, **ownership.owner_tags()},
                         budget=b)
        self._last_beat = time.monotonic()
        self.run_id = run.info.run_id
        from mlflow.entities import Param

        self._params = [Param(k, str(v)[:MAX_PARAM_LEN]) for k, v in sorted(flatten(info.config).items())]

    def log_stat(self, key: str, value: float, t_env: int) -> None:
        if self.run_id is None:
            return
        if t_env <= self._logged_upto.get(key, -1):
            return
        from mlflow.entities import Metric

        self._pending.append(Metric(key, float(value), int(time.time() * 1000), int(t_env)))
        if len(self._pending) >= BATCH or time.monotonic() - self._last_flush > self.cfg.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Send the outbox, unless the server is unreachable and its backoff has not run out. About
        once a minute the ``heartbeat`` tag joins it (how ``python -m runner.tools stale`` tells a live run from one
        whose process died)."""
        if self.run_id is not None and self._status is None and time.monotonic() - self._last_beat >= ownership.HEARTBEAT_S:
            self._tags["heartbeat"] = f"{time.time():.0f}"
            self._last_beat = time.monotonic()
        if self.run_id is None or not self._has_outbox() or time.monotonic() < self._retry_at:
            return
        self._send_outbox()

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if self.run_id is None:
            return
        if path.name.endswith(".pt") and not self.cfg.log_checkpoint:
            return
        self._artifacts.append((str(Path(path).resolve()), artifact_path))
        self.flush()

    def state(self) -> dict[str, Any]:
        return {"mlflow_run_id": self.run_id} if self.run_id else {}

    def describe(self) -> str | None:
        if self.run_id is None:
            return None
        return f"MLflow run {self.run_id} in {self.tracking_uri} (experiment '{self.cfg.experiment_name}')"

    def finish(self, status: str, error: str | None = None) -> None:
        """Send everything and the final status; retry an unreachable server for up to
        ``finish_timeout`` seconds (a second Ctrl-C stops waiting), then write the rest to
        ``<run_dir>/mlflow_unsent.json``."""
        if self.run_id is None:
            return
        if error:
            self._tags["error"] = error[:5000]
        self._status = (status, int(time.time() * 1000))
        deadline = time.monotonic() + max(0.0, float(self.cfg.finish_timeout))
        waited = False
        try:
            tries = 0
            while not self._send_outbox():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                if not waited:
                    waited = True
                    warn(
                        f"{self._down_what()}: retrying for up to "
                        f"{remaining:.0f} s (logger.mlflow.finish_timeout; Ctrl-C to stop waiting) to send {self._outbox_size()}"
                    )
                time.sleep(min(remaining, 5.0, 0.5 * 2**tries))
                tries += 1
        except KeyboardInterrupt:
            warn("stopped waiting for the MLflow tracking server")
        finally:
            if self._has_outbox():
                self._write_unsent()

    def _write_unsent(self) -> None:
        """Keep what could not be sent in <run_dir>/mlflow_unsent.json and say so loudly."""
        run_dir = Path(self.run_dir) if self.run_dir else Path.cwd()
        path = run_dir / UNSENT_FILE
        status = self._status
        data: dict[str, Any] = {
            "tracking_uri": self.tracking_uri,
            "run_id": self.run_id,
            "experiment_name": self.cfg.experiment_name,
            "reason": self._down_reason,
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "status": status[0] if status else None,
            "end_time": status[1] if status else None,
            "params": [{"key": p.key, "value": p.value} for p in self._params],
            "tags": dict(self._tags),
            "metrics": [{"key": m.key, "value": m.value, "timestamp": m.timestamp, "step": m.step} for m in self._pending],
            "artifacts": [{"path": p, "artifact_path": a} for p, a in self._artifacts],
        }
        if path.is_file():  # an earlier attempt of this run left one: keep its data first
            try:
                old = json.loads(path.read_text())
                if old.get("run_id") == self.run_id:
                    for key in ("params", "metrics", "artifacts"):
                        data[key] = old.get(key, []) + data[key]
                    data["tags"] = {**old.get("tags", {}), **data["tags"]}
            except (OSError, ValueError):
                pass
        what = f"{plural(len(data['metrics']), 'metric')}, {plural(len(data['artifacts']), 'artifact')}"
        if data["status"]:
            what += f", final status {data['status']}"
        tmp = path.with_suffix(".tmp")
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data, indent=1))
            tmp.replace(path)
        except OSError as exc:  # e.g. the run dir is on the same full disk: say so in one line, leave no temp file
            with suppress(OSError):
                tmp.unlink(missing_ok=True)
            fix = ""
            if data["status"]:
                fix = (f" The run stays RUNNING in {self.tracking_uri}; once it can be written, record its final status with: "
                       f"python -c \"from mlflow.tracking import MlflowClient; "
                       f"MlflowClient('{self.tracking_uri}').set_terminated('{self.run_id}', '{data['status']}')\"")
            warn(
                f"ERROR: MLflow run {self.run_id} misses {what} ({self._down_reason or 'not sent'}), and they could "
                f"not be kept in {path} either ({storage.describe(exc, path)}): they are lost.{fix}"
            )
            return
        bar = "!" * 100
        if self._down_space:
            headline = f"WARNING: {self._down_reason}: MLflow run {self.run_id} in {self.tracking_uri} misses {what}."
            then = "Free some space there, then send them:"
        else:
            headline = f"WARNING: the MLflow tracking server {self.tracking_uri} is unreachable: run {self.run_id} misses {what}."
            then = "Send them when the server is back:"
        warn(f"{bar}\n{headline}\nThey are kept in {path}.\n{then}\n  python -m runner.tools send-unsent {path}\n{bar}")
