"""Who owns a run: one process per run dir, and runs whose owner died without a final status.

* **The lock.** A run holds an OS lock (``flock``) on ``<run dir>/.owner.lock`` for its whole life;
  the kernel releases it when the process dies, however it dies (``kill -9`` included). A second
  process that wants the same run dir (a second ``resume=`` of it, a sweep launched twice) is
  refused with the owner's pid, host and start time. The file also holds that owner's description,
  which is how the refusal can name it. Locks are per process: taking a dir this process already
  holds is a no-op. (``flock`` on NFS is only as good as the NFS server's lock support; the heartbeat
  below covers runs on other hosts.)
* **The heartbeat.** An MLflow run records its owner (tags ``owner_pid``, ``owner_host``) and a
  ``heartbeat`` tag (unix seconds) that the MLflow logger refreshes about once a minute.
* **Stale runs.** A run left RUNNING whose owner is gone (its run dir no longer locked, or no
  heartbeat) is *stale*: :mod:`runner.tools.stale` finds and closes such runs from the lock and the
  tags kept here.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from runner.errors import ConfigError

LOCK_FILE = ".owner.lock"
HEARTBEAT_S = 60.0  # how often the MLflow logger refreshes the heartbeat tag
STALE_AFTER_S = 600.0  # a run on another host with no heartbeat for this long is stale

_HELD: dict[Path, int] = {}  # run dir -> fd of its lock file, in this process


class RunDirBusy(ConfigError):
    """The run dir is owned by another live process."""


def describe_self() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
            "argv": " ".join(sys.argv)[:500]}


def _read_owner(fd: int) -> dict[str, Any]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return json.loads(os.read(fd, 65536).decode() or "{}")
    except (OSError, ValueError):
        return {}


def describe_owner(info: dict[str, Any]) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["started"])) if info.get("started") else "?"
    return f"pid {info.get('pid', '?')} on {info.get('host', '?')} (since {since}: {info.get('argv', '?')})"


def acquire(run_dir: Path, what: str = "run dir") -> None:
    """Take ``run_dir``'s lock for this process (a no-op when this process holds it already).
    Raises RunDirBusy naming the owner when another live process holds it."""
    d = Path(run_dir).resolve()
    if d in _HELD:
        return
    d.mkdir(parents=True, exist_ok=True)
    fd = os.open(d / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = _read_owner(fd)
        os.close(fd)
        raise RunDirBusy(
            f"{what} {d} is in use by {describe_owner(owner)}. Two processes in one run dir would write "
            f"the same checkpoints and MLflow run; wait for it to end, or stop it (kill -INT {owner.get('pid', '<pid>')}: "
            "it saves a checkpoint) and run this again"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(describe_self()).encode())
    _HELD[d] = fd


def wait_acquire(run_dir: Path, message: str, poll_s: float = 0.5, stop: Any = None) -> None:
    """:func:`acquire`, waiting while another process holds the lock (``message`` is printed once,
    with the owner); ``stop()`` returning True stops the wait with RunDirBusy."""
    said = False
    while True:
        try:
            acquire(run_dir)
            return
        except RunDirBusy:
            if stop is not None and stop():
                raise
            if not said:
                info = owner(run_dir) or {}
                print(message.format(owner=describe_owner(info)), file=sys.stderr, flush=True)
                said = True
            time.sleep(poll_s)


def release(run_dir: Path) -> None:
    fd = _HELD.pop(Path(run_dir).resolve(), None)
    if fd is not None:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def holds(run_dir: Path) -> bool:
    return Path(run_dir).resolve() in _HELD


def owner(run_dir: Path | str) -> dict[str, Any] | None:
    """The live owner of ``run_dir`` ({pid, host, started, argv}), or None when nobody holds it."""
    d = Path(run_dir).resolve()
    if d in _HELD:
        return _read_owner(_HELD[d])
    try:
        fd = os.open(d / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_owner(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- the owner's marks on its MLflow run --------------------------------------------------------------
def owner_tags() -> dict[str, str]:
    return {"owner_pid": str(os.getpid()), "owner_host": socket.gethostname(), "heartbeat": f"{time.time():.0f}"}


def run_owner(run: Any) -> str:
    """``pid N on host`` of the process that owned an MLflow run (its owner tags)."""
    tags = run.data.tags
    return f"pid {tags['owner_pid']} on {tags.get('owner_host', '?')}" if tags.get("owner_pid") else "unknown process"


# -- a job whose launcher died ----------------------------------------------------------------------
ORPHANED = threading.Event()
_WATCHING = False  # the watch thread runs (one per process)


def stop_when_orphaned(poll_s: float = 0.5) -> None:
    """In a process started by another (a sweep job in a joblib/submitit worker): when that parent
    dies, send SIGTERM to this process, so the run stops as on ``kill -TERM`` (checkpoint, status
    KILLED) instead of training on as an orphan. Sets ORPHANED. Starts a daemon thread once."""
    import signal

    global _WATCHING
    if _WATCHING:
        return
    _WATCHING = True
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        ORPHANED.set()
        print(f"[sweep] this job's launcher (pid {parent}) is gone: stopping with a checkpoint",
              file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="hymarl-orphan-watch", daemon=True).start()

