"""The shell above the core: what drives runs and reads them from outside. The sweep
(:mod:`runner.tools.sweep`, the Hydra callback of a sweep's MLflow parent run; :mod:`runner.tools.jobs`,
the resume and sweep-job plumbing of ``python -m runner``) and the command line tools,
``python -m runner.tools <command>`` (:mod:`runner.tools.__main__`). Nothing in the core imports
this package."""

from __future__ import annotations

import sys
from typing import Any


def open_store(tracking_uri: str | None) -> Any | None:
    """A client of the MLflow store of ``--tracking-uri`` (default: $MLFLOW_TRACKING_URI, else
    outputs/mlflow.db) for the tools that read runs; a SQLite file that does not exist is refused, not
    created (a mistyped path must not create an empty store): ``error: <why>`` on stderr and None."""
    from runner.errors import ConfigError
    from runner.tracking.store import default_tracking_uri, open_existing

    try:
        return open_existing(tracking_uri or default_tracking_uri())
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
