"""The env worker process of :class:`envs.vector.SubprocVecEnv` (no torch here: workers stay small).

A worker owns a contiguous slice of the env copies. It talks to the main process over a pipe
(one small command per step) and exchanges arrays through one shared-memory file that every
worker maps: the main process writes the actions, each worker writes its copies' results.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import pickle
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np

from envs.base import EnvSpec


def layout(n_envs: int, spec: EnvSpec) -> list[tuple[str, Any, tuple[int, ...]]]:
    """The arrays in the shared file, in order: (name, dtype, shape)."""
    b, n = n_envs, spec.n_agents
    return [
        action_array(n_envs, spec),
        ("obs", np.float32, (b, n, spec.obs_dim)),
        ("state", np.float32, (b, spec.state_dim)),
        ("avail", np.bool_, (b, n, spec.n_actions)),
        ("reward", np.float32, (b,)),
        ("terminated", np.bool_, (b,)),
        ("truncated", np.bool_, (b,)),
    ]


def action_array(n_envs: int, spec: EnvSpec) -> tuple[str, Any, tuple[int, ...]]:
    """The joint actions of every copy: float32 [B, N, n_actions] with continuous actions, else int64 [B, N]."""
    if spec.continuous:
        return ("actions", np.float32, (n_envs, spec.n_agents, spec.n_actions))
    return ("actions", np.int64, (n_envs, spec.n_agents))


def nbytes(n_envs: int, spec: EnvSpec) -> int:
    return sum(_aligned(int(np.prod(shape)) * np.dtype(dt).itemsize) for _, dt, shape in layout(n_envs, spec))


def _aligned(n: int) -> int:
    return (n + 63) // 64 * 64


def map_arrays(path: str, n_envs: int, spec: EnvSpec) -> tuple[mmap.mmap, dict[str, np.ndarray]]:
    """Map the shared file and return numpy views of its arrays."""
    fd = os.open(path, os.O_RDWR)
    try:
        mm = mmap.mmap(fd, nbytes(n_envs, spec))
    finally:
        os.close(fd)
    arrays, off = {}, 0
    for name, dt, shape in layout(n_envs, spec):
        count = int(np.prod(shape))
        arrays[name] = np.frombuffer(mm, dtype=dt, count=count, offset=off).reshape(shape)
        off += _aligned(count * np.dtype(dt).itemsize)
    return mm, arrays


# The per-step commands travel as one raw byte and are acknowledged with an empty message (no
# pickling on the hot path); every other message is a pickled tuple.
STEP, RESET, OK = b"s", b"r", b""


def send(conn: Any, msg: Any) -> None:
    conn.send_bytes(pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL))


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this worker when its parent dies (Linux; elsewhere the pipe's EOF
    ends it once its current command is done). With ``forkserver`` the parent is the fork server,
    which exits when the main process dies."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:  # the parent died before the request took effect
        os._exit(0)


def run_worker(conn: Any, factory: Callable[[int], Any], indices: list[int], environ: dict[str, str]) -> None:
    die_with_parent()
    # a forkserver forks workers from its own state: take the main process's current environment
    # (e.g. SC2PATH set after the server started), not the one the server started with
    os.environ.clear()
    os.environ.update(environ)
    # Ctrl-C reaches the whole process group: the main process handles it (checkpoint, then close
    # the workers); a worker dying on it first would lose the episode in flight.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    envs: list[Any] = []
    arrays: dict[str, np.ndarray] = {}
    mm = None
    try:
        envs = [factory(i) for i in indices]
        send(conn, ("ok", envs[0].spec))
        while True:
            msg = conn.recv_bytes()
            arg: Any
            cmd, arg = ("step", None) if msg == STEP else ("reset", None) if msg == RESET else pickle.loads(msg)
            try:
                if cmd == "attach":
                    path, n_envs = arg
                    mm, arrays = map_arrays(path, n_envs, envs[0].spec)
                    reply: Any = None
                elif cmd == "reset":
                    for i, env in zip(indices, envs):
                        _write(arrays, i, env.reset())
                    reply = None
                elif cmd == "step":
                    for i, env in zip(indices, envs):
                        tr = env.step(arrays["actions"][i])
                        _write(arrays, i, tr.arrays)
                        arrays["reward"][i] = tr.reward
                        arrays["terminated"][i] = tr.terminated
                        arrays["truncated"][i] = tr.truncated
                    reply = None
                elif cmd == "stats":
                    reply = [env.episode_stats() for env in envs]
                elif cmd == "get_rng":
                    reply = [env.get_rng_state() for env in envs]
                elif cmd == "set_rng":
                    for env, st in zip(envs, arg):
                        env.set_rng_state(st)
                    reply = None
                elif cmd == "close":
                    break
                else:
                    raise ValueError(f"unknown env worker command {cmd!r}")
            except Exception as exc:  # reported to the main process, which raises it there
                send(conn, ("error", (type(exc).__name__, str(exc), traceback.format_exc())))
            else:
                if reply is None:
                    conn.send_bytes(OK)
                else:
                    send(conn, ("ok", reply))
    except (EOFError, KeyboardInterrupt):  # the main process went away
        pass
    except Exception as exc:  # building the envs failed
        with contextlib.suppress(BrokenPipeError, OSError):
            send(conn, ("error", (type(exc).__name__, str(exc), traceback.format_exc())))
    finally:
        for env in envs:
            with contextlib.suppress(Exception):
                env.close()
        arrays.clear()
        if mm is not None:
            with contextlib.suppress(BufferError):
                mm.close()
        with contextlib.suppress(BrokenPipeError, OSError):
            send(conn, ("closed", None))


def _write(arrays: dict[str, np.ndarray], i: int, a: Any) -> None:
    arrays["obs"][i] = a.obs
    arrays["state"][i] = a.state
    arrays["avail"][i] = a.avail
