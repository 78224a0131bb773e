"""MLflow store plumbing shared by runs and sweeps: where the store is, is it reachable, and
retrying the transient errors of a shared SQLite file, and sending the outbox of a run that could not
reach its store (``python -m runner.tools send-unsent``).

mlflow is imported lazily everywhere here: it costs seconds of start-up.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import random
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from runner.errors import ConfigError

T = TypeVar("T")

TRANSIENT = ("database is locked", "database table is locked", "database schema is locked")


class TrackingUnavailable(ConfigError):
    """The tracking server cannot be reached: refused at start-up, before any run exists."""


def default_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'outputs' / 'mlflow.db'}"


def default_artifact_root(tracking_uri: str) -> str | None:
    """Artifact root for a new experiment in a local SQLite store (None: let the server decide)."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///") :])
        return (db.parent / "mlartifacts").resolve().as_uri()
    return None


def is_transient(exc: BaseException) -> bool:
    """A SQLite lock held by a concurrent writer: worth retrying."""
    text = f"{exc} {exc.__cause__ or ''}".lower()
    return any(t in text for t in TRANSIENT)


def retry(fn: Callable[..., T], *args: Any, attempts: int = 8, base_delay: float = 0.2, **kwargs: Any) -> T:
    """Call ``fn``; on a transient SQLite lock error wait (exponential backoff with jitter, ~0.2 s to
    ~25 s in total) and try again. Any other error is raised at once."""
    for i in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if i == attempts - 1 or not is_transient(exc):
                raise
            time.sleep(base_delay * 2**i * (0.5 + random.random()))
    raise AssertionError("unreachable")


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` store (None for any other store)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri[len("sqlite:///") :].split("?", 1)[0])


def check_sqlite_writable(tracking_uri: str) -> None:
    """Refuse (TrackingUnavailable, at once) a SQLite store that cannot be written: its directory
    cannot be created or written (read-only, permissions, a full disk), or the file cannot be opened
    for writing. Real writes, not ``os.access`` (root passes that on a read-only mount); a probe file
    next to the database is created and removed, the database itself is neither created nor changed.
    Without this, MLflow retries creating its engine for about 110 s and then dumps a traceback."""
    db = sqlite_path(tracking_uri)
    if db is None:
        return
    from runner.tracking import storage

    try:
        storage.check_writable_dir(db.parent)
        if db.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(db))
        if db.exists():
            with open(db, "ab"):  # append mode, nothing written: the file is not modified
                pass
    except OSError as exc:
        fix = "Free some space" if storage.space_reason(exc) else "Fix that"
        raise TrackingUnavailable(
            f"cannot write the MLflow store {tracking_uri}: {storage.describe(exc, db.parent)}. "
            f"{fix}, or point MLFLOW_TRACKING_URI / logger.mlflow.tracking_uri to another store"
        ) from None


def check_reachable(tracking_uri: str, timeout: float = 5.0) -> None:
    """Fail fast (TrackingUnavailable, within ``timeout`` seconds) when an http(s) tracking server
    does not answer its /health endpoint, or a SQLite store cannot be written (its directory is
    created)."""
    if tracking_uri.startswith("sqlite:///"):
        check_sqlite_writable(tracking_uri)
        return
    if not tracking_uri.startswith(("http://", "https://")):
        return
    url = tracking_uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (the user's own URI)
            if resp.status == 200:
                return
            reason = f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        reason = f"HTTP {exc.code} {exc.reason}"
    except (urllib.error.URLError, OSError) as exc:
        reason = str(getattr(exc, "reason", exc))
    raise TrackingUnavailable(
        f"cannot reach the MLflow tracking server at {tracking_uri} ({url}: {reason}). "
        "Start it (`make server`), fix MLFLOW_TRACKING_URI / logger.mlflow.tracking_uri, "
        "or unset them to log to the local SQLite store outputs/mlflow.db"
    )


def ensure_experiment(client: Any, name: str, tracking_uri: str) -> str:
    """The id of experiment ``name``, created (or restored from deleted) if needed."""
    exp = retry(client.get_experiment_by_name, name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            retry(client.restore_experiment, exp.experiment_id)
        return exp.experiment_id
    try:
        return retry(client.create_experiment, name, artifact_location=default_artifact_root(tracking_uri))
    except Exception:  # created by a concurrent job in the meantime
        exp = retry(client.get_experiment_by_name, name)
        if exp is None:
            raise
        return exp.experiment_id


@contextlib.contextmanager
def store_lock(tracking_uri: str) -> Iterator[None]:
    """For a SQLite store: an OS lock on ``<db>.lock`` beside the file, held while a process creates
    or migrates the store (MLflow's migrations are not safe to run from two processes at once on a
    fresh file: "duplicate column name", "table ... already exists"). Other stores: nothing."""
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    db = Path(tracking_uri[len("sqlite:///") :])
    db.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(db.with_name(db.name + ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def new_client(tracking_uri: str) -> Any:
    """An MlflowClient whose store is open: a SQLite store is created or migrated under
    :func:`store_lock`, so any number of processes can start together on a fresh store. (MLflow
    caches the opened store per process: later clients of the same URI do not migrate again.)"""
    from mlflow.tracking import MlflowClient

    with store_lock(tracking_uri):
        client = MlflowClient(tracking_uri=tracking_uri)  # MLflow opens (creates, migrates) the store here
        if tracking_uri.startswith("sqlite:///"):
            retry(client.search_experiments, max_results=1)  # or here, in older MLflow versions
    return client


def open_existing(tracking_uri: str) -> Any:
    """A client of a store that must exist already (commands that read runs): a SQLite path with no
    file is refused (ConfigError) instead of silently creating an empty store."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///") :])
        if not db.is_file():
            raise ConfigError(f"no MLflow store at {db} ({tracking_uri}): check the path, MLFLOW_TRACKING_URI or --tracking-uri")
    return client_for(tracking_uri)


def client_for(tracking_uri: str) -> Any:
    """A client of a reachable store (checked first, so a dead server or an unwritable SQLite store
    fails in seconds)."""
    check_reachable(tracking_uri)
    return new_client(tracking_uri)


# --- the outbox of a run whose store was unreachable (written by the MLflow logger) ---------------------

BATCH = 1000  # MLflow's limit of metrics per log_batch
UNSENT_FILE = "mlflow_unsent.json"

# Budgets of MLflow's HTTP client (env var -> value), applied around our own calls only.
# During the run: one immediate retry (a keep-alive connection the server closed), then give up
# and let the outbox retry later. At start-up: a few retries, ~10 s at most when refused.
LIVE_HTTP = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
ARTIFACT_HTTP = {**LIVE_HTTP, "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}
START_HTTP = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


@contextlib.contextmanager
def http_budget(budget: dict[str, str]) -> Iterator[None]:
    """Set MLflow's HTTP retry/timeout env vars for the duration of a call; those the user exported
    are left alone. (MLflow reads them at every request; its sessions are cached per value.)"""
    mine = [k for k in budget if k not in os.environ]
    for k in mine:
        os.environ[k] = budget[k]
    try:
        yield
    finally:
        for k in mine:
            os.environ.pop(k, None)


def send_unsent(path: str | Path, tracking_uri: str | None = None) -> dict[str, int]:
    """Send an ``mlflow_unsent.json`` (or the one in a run dir) to its tracking server (or
    ``tracking_uri``) and rename it to ``mlflow_unsent.json.sent``. Returns what was sent."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    path = Path(path)
    if path.is_dir():
        path = path / UNSENT_FILE
    data = json.loads(path.read_text())
    uri = tracking_uri or data["tracking_uri"]
    check_reachable(uri)
    client = MlflowClient(tracking_uri=uri)
    run_id = data["run_id"]

    def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        with http_budget(START_HTTP):
            return retry(fn, *args, **kwargs)

    params = [Param(p["key"], p["value"]) for p in data.get("params", [])]
    for i in range(0, len(params), 100):
        call(client.log_batch, run_id, params=params[i : i + 100], synchronous=True)
    for key, value in data.get("tags", {}).items():
        call(client.set_tag, run_id, key, value)
    metrics = [Metric(m["key"], float(m["value"]), int(m["timestamp"]), int(m["step"])) for m in data.get("metrics", [])]
    for i in range(0, len(metrics), BATCH):
        call(client.log_batch, run_id, metrics=metrics[i : i + BATCH], synchronous=True)
    uploaded = 0
    for a in data.get("artifacts", []):
        p = Path(a["path"])
        if not p.exists():
            print(f"warning: artifact {p} no longer exists; skipped", file=sys.stderr, flush=True)
            continue
        with http_budget(ARTIFACT_HTTP):
            if p.is_dir():
                retry(client.log_artifacts, run_id, str(p), a.get("artifact_path"))
            else:
                retry(client.log_artifact, run_id, str(p), a.get("artifact_path"))
        uploaded += 1
    if data.get("status"):
        call(client.set_terminated, run_id, status=data["status"], end_time=data.get("end_time"))
    path.replace(path.with_name(path.name + ".sent"))
    return {"params": len(params), "tags": len(data.get("tags", {})), "metrics": len(metrics), "artifacts": uploaded}
