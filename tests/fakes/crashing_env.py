"""A PettingZoo ParallelEnv that crashes on purpose, for the sweep tests: the two-step game
(``envs.pz_matrix``) whose ``step`` raises after ``crash_at_step`` steps (-1: never).

Used through tests/fakes/conf/env/crashing_twostep.yaml with
``hydra.searchpath=[file://<tests/fakes/conf>]`` and tests/fakes on PYTHONPATH.
"""

from __future__ import annotations

from typing import Any

from envs.pz_matrix import parallel_env as matrix_parallel_env


class EnvCrashed(RuntimeError):
    pass


def parallel_env(crash_at_step: int = -1, **kwargs: Any) -> Any:
    env = matrix_parallel_env("twostep", **kwargs)
    step = env.step
    count = {"steps": 0}

    def crashing_step(actions: dict[str, Any]) -> Any:
        count["steps"] += 1
        if 0 <= crash_at_step < count["steps"]:
            raise EnvCrashed(f"the env crashed on purpose at step {count['steps']}")
        return step(actions)

    env.step = crashing_step
    return env
