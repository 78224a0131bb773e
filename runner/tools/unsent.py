"""``python -m runner.tools send-unsent <run_dir | mlflow_unsent.json> [tracking_uri]``: send what a run
could not send to its tracking server (``mlflow_unsent.json``, written by the MLflow logger at the end;
:func:`runner.tracking.store.send_unsent`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from runner.errors import ConfigError
from runner.tracking import storage
from runner.tracking.store import UNSENT_FILE, send_unsent, sqlite_path


def _unsent_uri(path: str) -> str:
    """The tracking URI an mlflow_unsent.json (or the one in a run dir) was written for."""
    p = Path(path)
    try:
        return str(json.loads((p / UNSENT_FILE if p.is_dir() else p).read_text())["tracking_uri"])
    except (OSError, ValueError, KeyError, TypeError):
        return "the MLflow store"


def main(argv: list[str] | None = None) -> int:
    """``python -m runner.tools send-unsent <run_dir | mlflow_unsent.json> [tracking_uri]``: send
    what a run could not send to its tracking server (written by the MLflow logger at the end)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2) or args[0].startswith("-"):
        print(main.__doc__, file=sys.stderr)
        return 0 if args and args[0] in ("-h", "--help") else 2
    try:
        sent = send_unsent(args[0], args[1] if len(args) == 2 else None)
    except (ConfigError, OSError, ValueError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # e.g. SQLite's "database or disk is full", wrapped by MLflow
        reason = storage.space_reason(exc)
        if reason is None:
            raise
        uri = args[1] if len(args) == 2 else _unsent_uri(args[0])
        print(f"Error: {reason}: {sqlite_path(uri) or uri}; nothing was lost: free some space and run this again",
              file=sys.stderr)
        return 1
    print("sent " + ", ".join(f"{n} {what}" for what, n in sent.items()))
    return 0
