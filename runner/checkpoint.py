"""Checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint holds the learner (networks, targets, optimiser), the replay buffer, every RNG
(torch CPU/CUDA, numpy, random, the envs'), the loop counters and stat accumulators, the
logger state (the MLflow run id) and the resolved config. Files are written atomically as
``<run dir>/checkpoints/step_<t_env>.pt`` and loaded with ``weights_only=True``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from runner.config import RESUME_MAY_DIFFER
from runner.errors import ConfigError

FORMAT = "hymarl-checkpoint"
VERSION = 1
_STEP_RE = re.compile(r"step_(\d+)\.pt$")
TMP_SUFFIX = ".tmp"  # step_<t_env>.pt.tmp while it is written; never a checkpoint


class CheckpointError(ConfigError):
    """A checkpoint that does not exist, is corrupt, or does not fit the config."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (a full disk, a read-only dir). Not a ConfigError: the run
    was under way and fails; the older checkpoints are kept and resumable. ``str()`` is the one-line
    message (``no space left on device: <path> ...``), ``errno``/``filename`` are the OS's."""

    def __str__(self) -> str:
        return str(self.strerror)


def _size(p: Path) -> int:
    try:
        return p.stat().st_size
    except OSError:
        return 0


def latest(d: Path) -> Path | None:
    """The newest ``step_<t_env>.pt`` in ``d`` (temp files ``step_<t_env>.pt.tmp`` never count)."""
    found = sorted((int(m.group(1)), f) for f in d.glob("step_*.pt") if (m := _STEP_RE.search(f.name))) if d.is_dir() else []
    return found[-1][1] if found else None


def _write_error(exc: Exception, run_dir: Path, f: Path, written: int) -> CheckpointWriteError | None:
    """The CheckpointWriteError for a failed write of ``f`` (None: not a write failure, e.g. an object
    that cannot be saved). The errno comes from the OSError in the chain; without one (torch given a
    path says only "unexpected pos ...") a disk that the partial file had filled is taken as full."""
    from runner.tracking import storage

    err = storage.os_error_in(exc)
    code = err.errno if err is not None else None
    if storage.space_reason(exc):
        code = errno.EDQUOT if storage.space_reason(exc) == storage.QUOTA else errno.ENOSPC
    elif code is None:
        if not isinstance(exc, RuntimeError):
            return None
        try:
            free = shutil.disk_usage(f.parent).free  # the partial file is gone: free is what the write had
        except OSError:
            free = None
        code = errno.ENOSPC if free is not None and written >= free - 2**20 else errno.EIO
    prev = latest(f.parent)
    kept = (f"the last good checkpoint {prev} is kept" if prev is not None else "there is no earlier checkpoint")
    if code in (errno.ENOSPC, errno.EDQUOT):
        what = f"{storage.space_reason(exc) or storage.NO_SPACE}: {f}"
        fix = "free some space"
    else:
        why = f"[Errno {err.errno}] {err.strerror}" if err is not None else f"{type(exc).__name__}: {exc}"
        what = f"cannot write checkpoint {f}: {why}"
        fix = "fix that"
    hint = f"; {fix}, then resume with resume={run_dir}" if prev is not None else ""
    return CheckpointWriteError(code, f"{what} (checkpoint not written; {kept}{hint})", str(f))


def checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def resolve(path: str | os.PathLike[str]) -> Path:
    """A checkpoint file from a file path or a run dir (its latest checkpoint)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise CheckpointError(f"checkpoint not found: {p} does not exist")
    if p.is_file():
        if p.name.endswith(".pt" + TMP_SUFFIX):
            raise CheckpointError(f"{p} is the temp file of a checkpoint write that did not finish, not a checkpoint: "
                                  f"resume from its run dir ({run_dir_of(p)}) to take the latest complete one")
        return p
    for d in (checkpoint_dir(p), p):
        found = sorted(
            (int(m.group(1)), f) for f in d.glob("step_*.pt") if (m := _STEP_RE.search(f.name))
        ) if d.is_dir() else []
        if found:
            return found[-1][1]
    hint = ""
    if (p / ".hydra").is_dir():  # a run dir: the run stopped before its first checkpoint
        hint = (". The run stopped before writing one: checkpoints are written every save_interval_s seconds "
                "(default 600) and save_interval env steps of training, at the end and on Ctrl-C/SIGTERM, but a "
                "kill -9 writes none. If its MLflow run still shows RUNNING, `python -m runner.tools stale` marks it KILLED")
    raise CheckpointError(f"no checkpoint in {p}: expected {checkpoint_dir(p)}/step_<t_env>.pt{hint}")


def run_dir_of(ckpt: Path) -> Path:
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent


def load(path: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]]:
    f = resolve(path)
    try:
        data = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {f} is corrupt or not a hymarl checkpoint: {type(exc).__name__}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {f} is corrupt or not a hymarl checkpoint: missing format marker")
    if data.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {f} has version {data.get('version')}; this hymarl reads version {VERSION}")
    return f, data


def save(run_dir: Path, data: dict[str, Any], keep: int) -> Path:
    """Write ``step_<t_env>.pt`` atomically (``.pt.tmp``, then renamed) and keep the ``keep`` newest.
    A write that fails (a full disk, a read-only dir) removes its temp file, keeps every older
    checkpoint and raises :class:`CheckpointWriteError`; temp files left by a killed process are
    removed first."""
    d = checkpoint_dir(run_dir)
    f = d / f"step_{data['loop']['t_env']}.pt"
    tmp = f.with_name(f.name + TMP_SUFFIX)
    try:
        d.mkdir(parents=True, exist_ok=True)
        for stale in d.glob(f"step_*.pt{TMP_SUFFIX}"):  # a save killed mid-write (kill -9, power loss)
            stale.unlink(missing_ok=True)
        # a file object, not a path: torch then reports a failed write as a RuntimeError ("unexpected
        # pos ...") whose __context__ is the OSError with its errno (with a path there is no errno)
        with open(tmp, "wb") as fh:
            torch.save({"format": FORMAT, "version": VERSION, **data}, fh)
        os.replace(tmp, f)
    except BaseException as exc:
        written = _size(tmp)
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(exc, Exception) and (err := _write_error(exc, run_dir, f, written)) is not None:
            raise err from exc
        raise
    if keep > 0:
        old = sorted((int(m.group(1)), p) for p in d.glob("step_*.pt") if (m := _STEP_RE.search(p.name)))
        for _, p in old[:-keep]:
            p.unlink(missing_ok=True)
    return f


def rng_state(env_rng: Any) -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = cast("tuple[str, np.ndarray, int, int, float]", np.random.get_state())
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": _to_lists(random.getstate()),
        "env": env_rng,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(_to_tuples(state["python"]))


def _to_lists(x: Any) -> Any:
    return [_to_lists(v) for v in x] if isinstance(x, tuple) else x


def _to_tuples(x: Any) -> Any:
    return tuple(_to_tuples(v) for v in x) if isinstance(x, list) else x


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


_NO_DEFAULT = object()


def _schema_default(key: str, current: dict[str, Any]) -> Any:
    """The default of ``<group>.<field>`` in the schema of the group's chosen option (e.g. runner.n_envs
    of 'episode': 1): what a checkpoint written before that field existed ran with."""
    from dataclasses import MISSING, fields

    from runner import registry

    group, _, name = key.partition(".")
    node = current.get(group)
    reg = registry.ALL.get(group)
    option = node.get("name") if isinstance(node, dict) else None
    cfg_cls = reg.config_class(option) if reg is not None and isinstance(option, str) and option in reg else None
    if cfg_cls is None or "." in name:
        return _NO_DEFAULT
    for f in fields(cfg_cls):
        if f.name == name:
            if f.default is not MISSING:
                return f.default
            return f.default_factory() if f.default_factory is not MISSING else _NO_DEFAULT
    return _NO_DEFAULT


def check_resume_config(saved: dict[str, Any], current: dict[str, Any], ckpt: Path) -> None:
    """Fail if the config differs from the checkpoint's in a key that changes the experiment."""
    a, b = _flat(saved), _flat(current)
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key.split(".")[0] in RESUME_MAY_DIFFER:
            continue
        if key not in a and key in b and b[key] == _schema_default(key, current):
            continue  # a field added to its schema since the checkpoint was written, at its default
        if a.get(key, "<unset>") != b.get(key, "<unset>"):
            diffs.append(f"{key}: {a.get(key, '<unset>')!r} in the checkpoint, {b.get(key, '<unset>')!r} now")
    if diffs:
        raise CheckpointError(
            f"cannot resume from {ckpt}: the config differs in keys that change the experiment:\n  "
            + "\n  ".join(diffs)
            + f"\nOnly these may differ on resume: {', '.join(RESUME_MAY_DIFFER)}"
        )
