"""Vector envs over copies of a Python env (:class:`envs.adapter.StandardEnv`).

- :class:`SyncVecEnv` steps the copies one after the other in this process (the episode runner,
  debugging, and ``runner.n_workers=0``).
- :class:`SubprocVecEnv` splits the copies over worker processes. Actions and results travel
  through one shared-memory file (no pickling of arrays); the pipe to each worker carries only a
  one-word command per step. Workers ignore Ctrl-C (the main process checkpoints, then closes
  them), report exceptions with their traceback, and are stopped by :meth:`close` or, at the
  latest, when the main process exits (they are daemons).

Both follow the :class:`envs.base.VecEnv` contract: all copies reset together, and a copy whose
episode ended repeats its last observation with reward 0 until the next reset.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import pickle
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from envs import _worker
from envs.base import EnvSpec, Observation, StepResult, VecEnv
from runner.errors import ConfigError


class EnvWorkerError(RuntimeError):
    """An env worker raised or died; the message carries its traceback."""


def _check_same_spec(specs: list[EnvSpec]) -> EnvSpec:
    for i, s in enumerate(specs[1:], 1):
        if s != specs[0]:
            raise ConfigError(f"env copies differ: copy 0 has {specs[0]}, copy {i} has {s}")
    return specs[0]


class SyncVecEnv(VecEnv):
    def __init__(self, factory: Callable[[int], Any], n_envs: int, device: torch.device) -> None:
        self.n_envs, self.device = n_envs, torch.device(device)
        self.envs: list[Any] = []
        try:
            for i in range(n_envs):
                self.envs.append(factory(i))
        except BaseException:
            self.close()
            raise
        self.spec = _check_same_spec([e.spec for e in self.envs])
        self._act_dtype = _worker.action_array(n_envs, self.spec)[1]

    def _stack(self, arrays: list[Any]) -> Observation:
        return Observation(
            torch.from_numpy(np.stack([a.obs for a in arrays])).to(self.device),
            torch.from_numpy(np.stack([a.state for a in arrays])).to(self.device),
            torch.from_numpy(np.stack([a.avail for a in arrays])).to(self.device),
        )

    def reset(self) -> Observation:
        return self._stack([e.reset() for e in self.envs])

    def step(self, actions: torch.Tensor) -> StepResult:
        """Joint actions [B, N] (int64), or [B, N, n_actions] with continuous actions (sent as float32,
        as SubprocVecEnv's shared memory holds them, so that both give the same results)."""
        acts = actions.cpu().numpy().astype(self._act_dtype, copy=False)
        trs = [e.step(acts[i]) for i, e in enumerate(self.envs)]
        return StepResult(
            self._stack([t.arrays for t in trs]),
            torch.tensor([t.reward for t in trs], dtype=torch.float32, device=self.device),
            torch.tensor([t.terminated for t in trs], dtype=torch.bool, device=self.device),
            torch.tensor([t.truncated for t in trs], dtype=torch.bool, device=self.device),
        )

    def episode_stats(self) -> dict[str, torch.Tensor]:
        return _stack_stats([e.episode_stats() for e in self.envs], self.device)

    def get_rng_state(self) -> Any:
        return [e.get_rng_state() for e in self.envs]

    def set_rng_state(self, state: Any) -> None:
        for e, st in zip(self.envs, state or [None] * self.n_envs):
            e.set_rng_state(st)

    def close(self) -> None:
        envs, self.envs = self.envs, []
        for e in envs:
            e.close()


def _stack_stats(per_copy: list[dict[str, float]], device: torch.device) -> dict[str, torch.Tensor]:
    if not per_copy or not per_copy[0]:
        return {}
    return {k: torch.tensor([s[k] for s in per_copy], dtype=torch.float32, device=device) for k in per_copy[0]}


def _shm_dir() -> str:
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()


class SubprocVecEnv(VecEnv):
    def __init__(
        self,
        factory: Callable[[int], Any],
        n_envs: int,
        device: torch.device,
        n_workers: int,
        start_method: str = "forkserver",
        preload: tuple[str, ...] = (),
    ) -> None:
        self.n_envs, self.device = n_envs, torch.device(device)
        n_workers = max(1, min(n_workers, n_envs))
        ctx: Any = mp.get_context(start_method)  # typeshed's BaseContext lacks Process
        if start_method == "forkserver":
            ctx.set_forkserver_preload(["envs._worker", *preload])
        self.slices = [list(map(int, s)) for s in np.array_split(np.arange(n_envs), n_workers)]
        self.conns: list[Any] = []
        self.procs: list[Any] = []
        self._mm: Any = None  # the shared-memory mmap, once attached
        try:
            for w, idx in enumerate(self.slices):
                parent, child = ctx.Pipe()
                p = ctx.Process(target=_worker.run_worker, args=(child, factory, idx, dict(os.environ)), daemon=True,
                                name=f"hymarl-env-{w}")
                p.start()
                child.close()  # so that a worker's death reads as EOF here
                self.conns.append(parent)
                self.procs.append(p)
            self.spec = _check_same_spec(self._gather())
            self._attach()
        except BaseException as exc:
            # A Ctrl-C while the workers build their copies: they read no command before they are done
            # (minutes for many copies), so they are given 1 s, not 5, to end before they are terminated.
            self.close(grace=1.0 if isinstance(exc, KeyboardInterrupt) else 5.0)
            raise

    def _attach(self) -> None:
        path = os.path.join(_shm_dir(), f"hymarl-{os.getpid()}-{uuid.uuid4().hex[:12]}")
        with open(path, "wb") as f:
            f.truncate(_worker.nbytes(self.n_envs, self.spec))
        try:
            self._mm, self.arrays = _worker.map_arrays(path, self.n_envs, self.spec)
            self._call("attach", (path, self.n_envs))
        finally:
            os.unlink(path)  # every process has it mapped: nothing is left in /dev/shm, even after a crash

    # -- protocol ------------------------------------------------------------------------------
    def _send(self, cmd: str, args: list[Any] | None = None) -> None:
        hot = {"step": _worker.STEP, "reset": _worker.RESET}.get(cmd)
        for w, conn in enumerate(self.conns):
            try:
                if hot is not None:
                    conn.send_bytes(hot)
                else:
                    _worker.send(conn, (cmd, None if args is None else args[w]))
            except (BrokenPipeError, OSError) as exc:
                raise self._died(w) from exc

    def _gather(self) -> list[Any]:
        replies, error = [], None
        for w, conn in enumerate(self.conns):
            try:
                data = conn.recv_bytes()
            except (EOFError, OSError) as exc:
                raise self._died(w) from exc
            payload: Any
            status, payload = ("ok", None) if data == _worker.OK else pickle.loads(data)
            if status == "error" and error is None:
                error = (w, payload)
            replies.append(payload)
        if error is not None:
            w, (kind, msg, tb) = error
            if kind == "ConfigError":
                raise ConfigError(msg)
            raise EnvWorkerError(f"env worker {w} ({self._copies(w)}) raised {kind}: {msg}\n"
                                 f"--- worker traceback ---\n{tb}")
        return replies

    def _call(self, cmd: str, arg: Any = None, per_worker: list[Any] | None = None) -> list[Any]:
        self._send(cmd, per_worker if per_worker is not None else [arg] * len(self.conns))
        return self._gather()

    def _copies(self, w: int) -> str:
        """The copies of worker w for a message: 'copies [0, 1]', or 'copies 0-49999' rather than 50,000 numbers."""
        idx = self.slices[w]
        return f"copies {idx}" if len(idx) <= 8 else f"copies {idx[0]}-{idx[-1]}"

    def _died(self, w: int) -> EnvWorkerError:
        p = self.procs[w]
        p.join(timeout=1.0)
        return EnvWorkerError(f"env worker {w} (pid {p.pid}, {self._copies(w)}) died "
                              f"(exit code {p.exitcode})")

    # -- VecEnv --------------------------------------------------------------------------------
    def _observation(self) -> Observation:
        a = self.arrays
        return Observation(
            torch.from_numpy(a["obs"].copy()).to(self.device),
            torch.from_numpy(a["state"].copy()).to(self.device),
            torch.from_numpy(a["avail"].copy()).to(self.device),
        )

    def reset(self) -> Observation:
        self._call("reset")
        return self._observation()

    def step(self, actions: torch.Tensor) -> StepResult:
        self.arrays["actions"][:] = actions.cpu().numpy()
        self._call("step")
        a = self.arrays
        return StepResult(
            self._observation(),
            torch.from_numpy(a["reward"].copy()).to(self.device),
            torch.from_numpy(a["terminated"].copy()).to(self.device),
            torch.from_numpy(a["truncated"].copy()).to(self.device),
        )

    def episode_stats(self) -> dict[str, torch.Tensor]:
        return _stack_stats([s for part in self._call("stats") for s in part], self.device)

    def get_rng_state(self) -> Any:
        return [s for part in self._call("get_rng") for s in part]

    def set_rng_state(self, state: Any) -> None:
        state = state or [None] * self.n_envs
        self._call("set_rng", per_worker=[[state[i] for i in idx] for idx in self.slices])

    def close(self, grace: float = 5.0) -> None:
        """Ask every worker to close its copies; those still running after ``grace`` seconds (in all,
        not per worker) are terminated, and killed 2 s later."""
        conns, procs, self.conns, self.procs = self.conns, self.procs, [], []
        for conn in conns:
            with contextlib.suppress(BrokenPipeError, OSError):
                _worker.send(conn, ("close", None))
        deadline = time.monotonic() + grace
        for p in procs:
            p.join(timeout=max(0.0, deadline - time.monotonic()))
        alive = [p for p in procs if p.is_alive()]
        for p in alive:
            p.terminate()
        deadline = time.monotonic() + 2.0
        for p in alive:
            p.join(timeout=max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join()
        for conn in conns:
            conn.close()
        self.arrays = {}
        if self._mm is not None:
            with contextlib.suppress(BufferError):
                self._mm.close()
            self._mm = None

    def __del__(self) -> None:
        if getattr(self, "procs", None):
            self.close()
