"""Storage that cannot be written: found before a run starts, and named plainly when a disk fills up.

* :func:`check_writable_dir` makes sure a directory exists and a file can really be written in it
  (a probe file, removed at once). ``os.access`` is not enough: root passes it on a read-only mount.
* :func:`space_reason` tells a full disk apart from other errors, wherever it hides: an ``OSError``
  with ``ENOSPC``/``EDQUOT`` anywhere in the exception chain (torch wraps it in a ``RuntimeError``
  "unexpected pos ..."), or SQLite's "database or disk is full" (wrapped by SQLAlchemy and MLflow).
* :func:`describe` is the one-line reason used in messages: ``no space left on device: <path>`` or
  ``<path>: [Errno 30] Read-only file system``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

NO_SPACE = "no space left on device"
QUOTA = "disk quota exceeded"
_TEXTS = {
    "no space left on device": NO_SPACE,
    "database or disk is full": NO_SPACE,  # SQLITE_FULL (SQLite maps ENOSPC and EDQUOT to it)
    "disk quota exceeded": QUOTA,
}


def chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and its causes/contexts, each once."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [c for c in (e.__cause__, e.__context__) if c is not None]


def os_error_in(exc: BaseException) -> OSError | None:
    """The first ``OSError`` with an errno in the exception chain (the OS's own reason)."""
    return next((e for e in chain(exc) if isinstance(e, OSError) and e.errno), None)


def space_reason(exc: BaseException) -> str | None:
    """'no space left on device' or 'disk quota exceeded' when ``exc`` comes from a full disk, else None."""
    for e in chain(exc):
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return NO_SPACE
        if isinstance(e, OSError) and e.errno == errno.EDQUOT:
            return QUOTA
        text = str(e).lower()
        for t, reason in _TEXTS.items():
            if t in text:
                return reason
    return None


def describe(exc: BaseException, path: str | os.PathLike[str]) -> str:
    """One line: ``no space left on device: <path>`` for a full disk, else ``<path>: [Errno N] reason``
    (the path the OS error names when it names one)."""
    reason = space_reason(exc)
    if reason:
        return f"{reason}: {path}"
    err = os_error_in(exc)
    if err is not None:
        where = err.filename if err.filename is not None else path
        return f"{where}: [Errno {err.errno}] {err.strerror}"
    return f"{path}: {exc}"


def check_writable_dir(d: str | os.PathLike[str]) -> Path:
    """Create ``d`` (with its parents) and write, then remove, a small probe file in it. Raises the
    ``OSError`` of the first step that fails (read-only, not a directory, permission, full disk)."""
    d = Path(d)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # a file where the directory should be
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(d)) from None
    probe = d / f".write-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:  # name the directory, not our probe, and say what failed there
        raise type(exc)(exc.errno, f"cannot create a file in it: {exc.strerror}", str(d)) from None
    try:
        try:
            os.write(fd, b"\0")
            os.fsync(fd)  # some filesystems (NFS) only report a full disk here
        finally:
            os.close(fd)
    except OSError as exc:
        exc.filename = str(d)
        raise
    finally:
        with contextlib.suppress(OSError):
            os.unlink(probe)
    return d
