"""Episode rollouts in B env copies with one batched action selection per step.

``parallel`` steps ``n_envs`` copies in lock-step; ``episode`` is the same loop with one copy
(handy for debugging). Natively batched envs (matrix games) step all copies as tensor ops; Python
envs (PettingZoo, Gymnasium, SMACv2 adapters) step their copies in worker processes that share
memory with this one (``runner.n_workers``), or in this process (``n_workers=0``, and always in
the episode runner).
Components that need per-episode work (e.g. sampling a latent) implement the hooks of
:class:`runner.contracts.RolloutHooks` instead of editing this loop: ``on_episode_start(batch,
observation, test_mode)`` is called after reset with the first observation of every copy; the
controller's ``rollout_stats(returns, env_stats)`` may add per-episode stats (agent groups: the
return of each group).
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from omegaconf import MISSING

from envs.adapter import make_copy
from envs.base import VecEnv
from envs.vector import SubprocVecEnv, SyncVecEnv
from runner.buffers.episode import EpisodeBatch, FieldSpec
from runner.contracts import Controller, RolloutHooks, Runner
from runner.registry import RUNNERS


class Rollout(NamedTuple):
    batch: EpisodeBatch
    returns: torch.Tensor  # [B] episode returns
    lengths: torch.Tensor  # [B] episode lengths
    env_stats: dict[str, torch.Tensor]  # [B] each
    steps: int  # env steps taken (sum of lengths)


@dataclass
class ParallelRunnerConfig:
    name: str = MISSING
    n_envs: int = 8
    """Env copies stepped together (one batched forward per step)."""
    n_workers: int | None = None
    """Worker processes for Python envs (copies are split over them). None: min(n_envs, CPUs);
    0: step the copies in this process. Natively batched envs ignore it."""
    start_method: str = "forkserver"
    """How worker processes start: forkserver (safe with threads, fast), spawn, or fork."""


@dataclass
class EpisodeRunnerConfig:
    name: str = MISSING
    n_envs: int = 1
    """Always 1: the episode runner steps one env copy (more copies: runner=parallel runner.n_envs=B)."""
    n_workers: int = 0
    """Always 0: the copy is stepped in this process (worker processes: runner=parallel)."""


class RolloutAborted(Exception):
    """A rollout abandoned part-way because ``should_abort`` said so (a stop request that the end of
    a long rollout would keep waiting). Nothing of it is stored; the env copies are reset by the
    next rollout."""


@RUNNERS.register("parallel", config=ParallelRunnerConfig)
class ParallelRunner(Runner):
    def __init__(
        self,
        env: VecEnv,
        scheme: dict[str, FieldSpec],
        controller: Controller,
        device: torch.device,
        hooks: list[RolloutHooks] = (),  # type: ignore[assignment]
    ) -> None:
        self.env = env
        self.n_envs = env.n_envs
        self.spec = env.spec
        self.scheme = scheme
        self.controller = controller
        self.device = device
        self.hooks = list(hooks)
        # Set by the experiment: checked before every step of a rollout; True abandons the rollout
        # (raises RolloutAborted), e.g. once a Ctrl-C has waited long enough for a huge rollout.
        self.should_abort: Callable[[], bool] | None = None

    @classmethod
    def make_env(cls, cfg: Any, env_cls: Any, env_cfg: Any, seed: int, device: torch.device) -> VecEnv:
        """The env copies this runner steps: copy i is seeded with seed + i."""
        n = cls.copies(cfg)
        if env_cls.natively_batched:  # all copies step as tensor ops in this process
            return env_cls(env_cfg, n_envs=n, seed=seed, device=device)
        factory = functools.partial(make_copy, env_cls, env_cfg, seed)
        workers = cls.workers(cfg, n)
        if workers == 0:
            return SyncVecEnv(factory, n, device)
        return SubprocVecEnv(factory, n, device, workers, cfg.start_method, preload=(env_cls.__module__,))

    @staticmethod
    def copies(cfg: Any) -> int:
        return cfg.n_envs

    @staticmethod
    def workers(cfg: Any, n: int) -> int:
        return min(n, os.cpu_count() or 1) if cfg.n_workers is None else min(cfg.n_workers, n)

    @staticmethod
    def check_config(cfg: Any) -> list[str]:
        n = cfg.get("n_envs", 1)
        errs = []
        if n < 1:
            errs.append(f"runner.n_envs={n} is invalid: must be >= 1")
        workers = cfg.get("n_workers")
        if workers is not None and workers < 0:
            errs.append(f"runner.n_workers={workers} is invalid: must be >= 0 (0 = in this process)")
        method = cfg.get("start_method")
        if method is not None and method not in mp.get_all_start_methods():
            errs.append(f"runner.start_method={method} is invalid: must be one of {', '.join(mp.get_all_start_methods())}")
        return errs

    @torch.no_grad()
    def run(self, t_env: int, test_mode: bool = False) -> Rollout:
        env, B, T = self.env, self.n_envs, self.spec.episode_limit
        if self.should_abort is not None and self.should_abort():
            raise RolloutAborted(f"rollout of {B:,} env copies abandoned before it started")
        batch = EpisodeBatch.empty(self.scheme, B, T, self.device)
        ob = env.reset()
        self.controller.init_hidden(B)
        for hook in self.hooks:
            hook.on_episode_start(batch, ob, test_mode)
        active = torch.ones(B, dtype=torch.bool, device=self.device)
        returns = torch.zeros(B, device=self.device)
        lengths = torch.zeros(B, dtype=torch.long, device=self.device)
        t = 0
        for t in range(T):  # noqa: B007 (t is used after the loop)
            if self.should_abort is not None and self.should_abort():
                raise RolloutAborted(f"rollout of {B:,} env copies abandoned at step {t} of at most {T}")
            batch.write(t, obs=ob.obs.to(self.device), state=ob.state.to(self.device), avail_actions=ob.avail_actions.to(self.device))
            actions = self.controller.select_actions(batch, t, t_env, test_mode)
            res = env.step(actions)
            reward = res.reward.to(self.device) * active
            terminated = res.terminated.to(self.device) & active
            batch.write(t, actions=actions, reward=reward, terminated=terminated, filled=active)
            returns += reward
            lengths += active
            ob = res.observation
            active = active & ~(res.terminated.to(self.device) | res.truncated.to(self.device))
            if not bool(active.any()):
                break
        # the observation that followed each episode's last step, for bootstrapping
        batch.write(t + 1, obs=ob.obs.to(self.device), state=ob.state.to(self.device), avail_actions=ob.avail_actions.to(self.device))
        stats = env.episode_stats()
        stats = self.controller.rollout_stats(returns, stats)  # e.g. per-group returns of agent groups
        return Rollout(batch, returns, lengths, stats, int(lengths.sum().item()))

    def close(self) -> None:
        self.env.close()


@RUNNERS.register("episode", config=EpisodeRunnerConfig)
class EpisodeRunner(ParallelRunner):
    """One env copy: the simplest loop to step through in a debugger."""

    @staticmethod
    def copies(cfg: Any) -> int:
        return 1

    @staticmethod
    def workers(cfg: Any, n: int) -> int:
        return 0

    @staticmethod
    def check_config(cfg: Any) -> list[str]:
        """``runner.n_envs``/``n_workers`` exist for the episode runner only to be refused with the
        way to get them (Hydra's own error would suggest appending ``+runner.n_envs``)."""
        errs = []
        n, workers = cfg.get("n_envs", 1), cfg.get("n_workers", 0)
        if n != 1:
            errs.append(f"runner.n_envs={n} is invalid: the episode runner (runner=episode, the default) steps one "
                        f"env copy; for {n} copies use runner=parallel runner.n_envs={n}")
        if workers != 0:
            errs.append(f"runner.n_workers={workers} is invalid: the episode runner (runner=episode, the default) "
                        f"steps its one env copy in this process; for worker processes use runner=parallel "
                        f"runner.n_workers={workers}")
        return errs
