"""MLflow store plumbing shared by runs and sweeps: where the store is, is it reachable, and
retrying the transient errors of a shared SQLite file.

mlflow is imported lazily everywhere here: it costs seconds of start-up.
"""

from __future__ import annotations

import os
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from runner.config import ConfigError

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


def check_reachable(tracking_uri: str, timeout: float = 5.0) -> None:
    """Fail fast (TrackingUnavailable, within ``timeout`` seconds) when an http(s) tracking server
    does not answer its /health endpoint; prepare the directory of a SQLite store."""
    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
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


def client_for(tracking_uri: str) -> Any:
    """A client of a reachable store (checked first, so a dead server fails in seconds)."""
    check_reachable(tracking_uri)
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def main(argv: list[str] | None = None) -> int:
    """``python -m runner.tracking send-unsent <run_dir | mlflow_unsent.json> [tracking_uri]``: send
    what a run could not send to its tracking server (written by the MLflow logger at the end)."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 3) or args[0] != "send-unsent":
        print(main.__doc__, file=sys.stderr)
        return 2
    from runner.logging.mlflow_logger import send_unsent

    try:
        sent = send_unsent(args[1], args[2] if len(args) == 3 else None)
    except (ConfigError, OSError, ValueError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    print("sent " + ", ".join(f"{n} {what}" for what, n in sent.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
