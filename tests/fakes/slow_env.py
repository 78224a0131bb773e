"""A PettingZoo ParallelEnv that is slow, for the tests of long setups and long rollouts: the two-step
game (``envs.pz_matrix``), each copy taking ``build_seconds`` to construct and ``step_seconds`` per step
(and, with ``stepped_file``, creating that file at its first step: a test knows a rollout is under way;
with ``built_file``, appending a line to it per copy built: a test counts them).

Used with ``+env=pettingzoo "env.factory={_target_: slow_env.parallel_env, build_seconds: 0.01}"``
and tests/fakes on PYTHONPATH (env worker processes import it too).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from envs.pz_matrix import parallel_env as matrix_parallel_env


def parallel_env(build_seconds: float = 0.0, step_seconds: float = 0.0, stepped_file: str | None = None,
                 built_file: str | None = None, **kwargs: Any) -> Any:
    time.sleep(build_seconds)
    if built_file:  # one line per copy built (appends are atomic across the worker processes)
        with open(built_file, "a") as f:
            f.write("built\n")
    env = matrix_parallel_env("twostep", **kwargs)
    if step_seconds or stepped_file:
        step = env.step

        def slow_step(actions: dict[str, Any]) -> Any:
            if stepped_file:
                Path(stepped_file).touch()
            time.sleep(step_seconds)
            return step(actions)

        env.step = slow_step
    return env
