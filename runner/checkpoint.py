"""Checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint holds the learner (networks, targets, optimiser), the replay buffer, every RNG
(torch CPU/CUDA, numpy, random, the envs'), the loop counters and stat accumulators, the
logger state (the MLflow run id) and the resolved config. Files are written atomically as
``<run dir>/checkpoints/step_<t_env>.pt`` and loaded with ``weights_only=True``.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from runner.config import RESUME_MAY_DIFFER, ConfigError

FORMAT = "hymarl-checkpoint"
VERSION = 1
_STEP_RE = re.compile(r"step_(\d+)\.pt$")


class CheckpointError(ConfigError):
    """A checkpoint that does not exist, is corrupt, or does not fit the config."""


def checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def resolve(path: str | os.PathLike[str]) -> Path:
    """A checkpoint file from a file path or a run dir (its latest checkpoint)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise CheckpointError(f"checkpoint not found: {p} does not exist")
    if p.is_file():
        return p
    for d in (checkpoint_dir(p), p):
        found = sorted(
            (int(m.group(1)), f) for f in d.glob("step_*.pt") if (m := _STEP_RE.search(f.name))
        ) if d.is_dir() else []
        if found:
            return found[-1][1]
    raise CheckpointError(f"no checkpoint in {p}: expected {checkpoint_dir(p)}/step_<t_env>.pt")


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
    d = checkpoint_dir(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    f = d / f"step_{data['loop']['t_env']}.pt"
    tmp = f.with_suffix(".pt.tmp")
    torch.save({"format": FORMAT, "version": VERSION, **data}, tmp)
    os.replace(tmp, f)
    if keep > 0:
        old = sorted((int(m.group(1)), p) for p in d.glob("step_*.pt") if (m := _STEP_RE.search(p.name)))
        for _, p in old[:-keep]:
            p.unlink(missing_ok=True)
    return f


def rng_state(env_rng: Any) -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
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


def check_resume_config(saved: dict[str, Any], current: dict[str, Any], ckpt: Path) -> None:
    """Fail if the config differs from the checkpoint's in a key that changes the experiment."""
    a, b = _flat(saved), _flat(current)
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key.split(".")[0] in RESUME_MAY_DIFFER:
            continue
        if a.get(key, "<unset>") != b.get(key, "<unset>"):
            diffs.append(f"{key}: {a.get(key, '<unset>')!r} in the checkpoint, {b.get(key, '<unset>')!r} now")
    if diffs:
        raise CheckpointError(
            f"cannot resume from {ckpt}: the config differs in keys that change the experiment:\n  "
            + "\n  ".join(diffs)
            + f"\nOnly these may differ on resume: {', '.join(RESUME_MAY_DIFFER)}"
        )
