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
* **Stale runs.** A run left RUNNING whose owner is gone -- on this host: its run dir is not locked
  (or, without a run dir here, its pid is dead); on another host: no heartbeat for ``max_age_s`` --
  is *stale*. :func:`close_stale` marks such runs KILLED with the reason in the ``error`` tag and
  where to resume from. It runs when a run is resumed, when a sweep is run again, and as
  ``python -m runner.stale``.
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


def stale_reason(run: Any, now: float | None = None, max_age_s: float = STALE_AFTER_S) -> str | None:
    """The evidence that the RUNNING ``run``'s owner is gone, or None when it may be alive."""
    now = time.time() if now is None else now
    tags = run.data.tags
    host, pid = tags.get("owner_host"), tags.get("owner_pid")
    run_dir = tags.get("sweep_dir") if tags.get("mode") == "sweep" else tags.get("run_dir")
    if host == socket.gethostname() or (host is None and run_dir and Path(run_dir).is_dir()):
        if run_dir and (Path(run_dir) / LOCK_FILE).is_file():
            return None if owner(run_dir) is not None else f"{run_dir} is no longer locked by it"
        if pid and pid.isdigit() and not pid_alive(int(pid)):
            return f"pid {pid} no longer exists"
    beat = tags.get("heartbeat")
    last = float(beat) if beat and beat.replace(".", "", 1).isdigit() else run.info.start_time / 1000
    if now - last > max_age_s:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last))
        return f"no heartbeat since {when} ({(now - last) / 60:.0f} min ago)"
    return None


def resume_hint(run: Any) -> str:
    """Where the stale run can continue from (its latest checkpoint), or why it cannot."""
    from runner import checkpoint

    tags = run.data.tags
    if tags.get("mode") == "sweep":
        return f"run the same sweep again (hydra.sweep.dir={tags.get('sweep_dir')}) to resume its jobs"
    run_dir = tags.get("run_dir")
    if not run_dir or not Path(run_dir).is_dir():
        return "its run dir is not on this machine"
    try:
        ckpt = checkpoint.resolve(run_dir)
    except checkpoint.CheckpointError:
        return "it wrote no checkpoint (save_interval / save_interval_s), so it cannot be resumed"
    return f"latest checkpoint {ckpt}; continue with: python -m runner resume={run_dir}"


def close_stale(client: Any, runs: list[Any], max_age_s: float = STALE_AFTER_S, dry_run: bool = False,
                status: str = "KILLED") -> list[tuple[Any, str]]:
    """Mark each RUNNING run of ``runs`` whose owner is gone ``status`` (KILLED), with the reason and
    where to resume in its ``error`` tag. Returns [(run, reason)] of the stale ones."""
    from runner import tracking

    out = []
    for run in runs:
        if run.info.status != "RUNNING":
            continue
        reason = stale_reason(run, max_age_s=max_age_s)
        if reason is None:
            continue
        text = (f"stale: its process ({run_owner(run)}) ended without setting a final status (SIGKILL, the OOM killer, "
                f"a power cut?): {reason}; {resume_hint(run)}")
        out.append((run, text))
        if dry_run:
            continue
        tracking.retry(client.set_tag, run.info.run_id, "error", text[:5000])
        tracking.retry(client.set_terminated, run.info.run_id, status=status)
    return out


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

