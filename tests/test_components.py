"""Networks, mixers, targets, buffer, controller: the pieces behave as their papers say."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from envs.base import EnvConfig, EnvSpec, Observation, StepResult, VecEnv
from modules.agents.grouped import GroupedLinear
from modules.mixers.qmix import QMixConfig, QMixer
from modules.mixers.simple import VDNConfig, VDNMixer
from runner.buffers.episode import EpisodeBatch, base_scheme
from runner.build import build, seed_everything
from runner.controllers.schedules import epsilon_at
from runner.experiment import Experiment, StopRequest
from runner.learners.q_learner import td_lambda_targets
from runner.registry import ENVS
from tests.conftest import compose


def test_grouped_linear_per_agent_matches_separate_layers() -> None:
    torch.manual_seed(0)
    layer = GroupedLinear(3, 4, 5)
    x = torch.randn(7, 3, 4)
    expected = torch.stack([x[:, g] @ layer.weight[g].T + layer.bias[g] for g in range(3)], 1)
    assert torch.allclose(layer(x), expected, atol=1e-6)


def test_grouped_linear_shared_applies_one_weight_to_all_agents() -> None:
    layer = GroupedLinear(1, 4, 5)
    x = torch.randn(2, 3, 4)
    x[:, 1] = x[:, 0]
    y = layer(x)
    assert torch.allclose(y[:, 0], y[:, 1])


@pytest.mark.parametrize("layers", [1, 2])
def test_qmix_is_monotonic_in_every_agent_q(layers: int) -> None:
    torch.manual_seed(0)
    mixer = QMixer(QMixConfig(name="qmix", embed_dim=8, hypernet_layers=layers), n_agents=3, state_dim=5)
    qs = torch.randn(64, 3, requires_grad=True)
    q_tot = mixer(qs, torch.randn(64, 5))
    (grad,) = torch.autograd.grad(q_tot.sum(), qs)
    assert q_tot.shape == (64, 1)
    assert (grad >= 0).all()


def test_vdn_is_the_sum() -> None:
    qs = torch.randn(4, 6, 3)
    assert torch.allclose(VDNMixer(VDNConfig(name="vdn"), 3, 1)(qs, torch.zeros(4, 6, 1)).squeeze(-1), qs.sum(-1))


def test_td_lambda_zero_is_one_step_and_one_is_monte_carlo() -> None:
    r = torch.tensor([[1.0, 2.0, 3.0]])
    term = torch.tensor([[0.0, 0.0, 1.0]])
    mask = torch.ones(1, 3)
    next_v = torch.tensor([[[10.0], [20.0], [30.0]]])
    one = td_lambda_targets(r, term, mask, next_v, 0.5, 0.0).squeeze(-1)
    assert one.tolist() == [[1 + 0.5 * 10, 2 + 0.5 * 20, 3.0]]
    mc = td_lambda_targets(r, term, mask, next_v, 0.5, 1.0).squeeze(-1)
    assert mc.tolist() == [[1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3.0]]


def test_td_lambda_bootstraps_a_truncated_episode() -> None:
    r = torch.tensor([[1.0, 1.0, 0.0]])
    term = torch.zeros(1, 3)
    mask = torch.tensor([[1.0, 1.0, 0.0]])  # two real steps, cut by a time limit
    next_v = torch.tensor([[[4.0], [8.0], [99.0]]])
    g = td_lambda_targets(r, term, mask, next_v, 0.5, 1.0).squeeze(-1)
    assert g[0, 1].item() == 1 + 0.5 * 8  # the value after the last real step, not 0
    assert g[0, 0].item() == 1 + 0.5 * (1 + 0.5 * 8)


def test_epsilon_schedules() -> None:
    assert epsilon_at(0, 1.0, 0.05, 100, "linear") == 1.0
    assert epsilon_at(50, 1.0, 0.0, 100, "linear") == 0.5
    assert epsilon_at(100, 1.0, 0.05, 100, "linear") == 0.05
    assert epsilon_at(50, 1.0, 0.01, 100, "exp") == pytest.approx(0.1)
    assert epsilon_at(10**6, 1.0, 0.01, 100, "exp") == 0.01


def _components(*overrides: str):
    cfg = compose("+algo=qmix", "+env=twostep", "logger=[]", *overrides)
    seed_everything(cfg.seed)
    return cfg, build(cfg, torch.device("cpu"))


def test_buffer_is_compact_preallocated_and_wraps() -> None:
    cfg, c = _components("buffer.buffer_size=40", "runner=parallel", "runner.n_envs=16")
    st = c.buffer.storage
    assert st["actions"].dtype == torch.uint8 and st["filled"].dtype == torch.bool
    assert st["avail_actions"].dtype == torch.bool and st["obs"].shape == (40, 3, 2, 3)
    for _ in range(3):
        c.buffer.insert(c.runner.run(0).batch)
    assert (c.buffer.size, c.buffer.pos) == (40, 8)
    b = c.buffer.sample(32)
    assert b.batch_size == 32 and b.max_t == 2 and b["filled"][:, :2].all() and not b["filled"][:, 2].any()


def test_rollout_records_masks_and_bootstrap_slot() -> None:
    _, c = _components("runner=parallel", "runner.n_envs=4")
    r = c.runner.run(0)
    b = r.batch
    assert r.returns.shape == (4,) and (r.lengths == 2).all() and r.steps == 8
    assert b["filled"][:, :2].all() and not b["filled"][:, 2].any()
    assert not b["terminated"][:, 0].any() and b["terminated"][:, 1].all()
    assert (b["state"][:, 2].abs().sum(-1) == 0).all()  # the terminal state after the last step
    assert torch.equal(b["reward"].sum(1), r.returns)


def test_greedy_and_random_actions_respect_availability() -> None:
    _, c = _components("runner=parallel", "runner.n_envs=512")
    batch = EpisodeBatch.empty(base_scheme(c.spec), 512, 2, torch.device("cpu"))
    avail = torch.zeros(512, 2, 2, dtype=torch.bool)
    avail[:256, :, 1] = True
    avail[256:, :, 0] = True
    batch.write(0, obs=torch.rand(512, 2, 3), avail_actions=avail)
    c.controller.init_hidden(512)
    for t_env, test in ((0, False), (0, True)):  # epsilon 1 (all random) and greedy
        a = c.controller.select_actions(batch, 0, t_env, test_mode=test)
        assert (a[:256] == 1).all() and (a[256:] == 0).all()


def test_per_agent_networks_hold_one_parameter_set_per_agent() -> None:
    _, shared = _components("controller.share_params=true")
    _, separate = _components("controller.share_params=false")
    assert separate.controller.agent.out.weight.shape[0] == 2 and shared.controller.agent.out.weight.shape[0] == 1


@pytest.mark.parametrize("mixer", ["none", "vdn", "qmix"])
@pytest.mark.parametrize("agent", ["mlp", "gru"])
@pytest.mark.parametrize("runner", ["episode", "parallel"])
def test_one_train_step_for_every_mixer_agent_runner(tmp_path: Path, mixer: str, agent: str, runner: str) -> None:
    extra = ["controller.obs_last_action=true", "learner.td_lambda=0.6", "learner.optimizer=rmsprop",
             "controller.share_params=false"] if agent == "gru" else []
    cfg, c = _components(f"mixer={mixer}", f"agent={agent}", f"runner={runner}", "learner.batch_size=4", *extra)
    exp = Experiment(cfg, c, tmp_path, StopRequest())
    before = [p.detach().clone() for p in c.learner.params]
    while not c.buffer.can_sample(4):
        exp.train_iteration()
    stats = c.learner.train(c.buffer.sample(4), exp.state.t_env)
    joint = {"q_tot_taken_mean", "target_tot_mean"} if mixer != "none" else set()
    assert set(stats) == {"loss", "grad_norm", "td_error_abs", "q_taken_mean", "target_mean"} | joint
    assert all(torch.isfinite(torch.tensor(v)) for v in stats.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, c.learner.params))


def test_hard_target_update_copies_every_interval() -> None:
    _, c = _components("learner.target_update_interval=3", "learner.batch_size=2")
    for _ in range(2):
        c.buffer.insert(c.runner.run(0).batch)
    tgt = c.learner.targets["mixer"]
    for i in range(1, 4):
        c.learner.train(c.buffer.sample(2), 0)
        same = all(torch.equal(a, b) for a, b in zip(tgt.parameters(), c.learner.mixer.parameters()))
        assert same == (i == 3)


def test_hard_target_interval_counts_episodes_of_batched_rollouts() -> None:
    # PyMARL's clock: an update after a rollout of 4 episodes advances it by 4, so with an
    # interval of 10 episodes the copies come after updates 3 (12 episodes) and 5 (20)
    _, c = _components("learner.target_update_interval=10", "learner.batch_size=2")
    for _ in range(2):
        c.buffer.insert(c.runner.run(0).batch)
    tgt = c.learner.targets["mixer"]
    copied = []
    for i in range(1, 7):
        c.learner.train(c.buffer.sample(2), 0, episodes=4)
        if all(torch.equal(a, b) for a, b in zip(tgt.parameters(), c.learner.mixer.parameters())):
            copied.append(i)
    assert copied == [3, 5]
    assert c.learner.state_dict()["target_clock"] == 24


def test_soft_target_update_moves_by_tau() -> None:
    _, c = _components("learner.target_update=soft", "learner.tau=0.5", "learner.batch_size=2")
    for _ in range(2):
        c.buffer.insert(c.runner.run(0).batch)
    tgt = c.learner.targets["agent"]
    old = [p.clone() for p in tgt.parameters()]
    c.learner.train(c.buffer.sample(2), 0)
    for o, t, p in zip(old, tgt.parameters(), c.learner.controller.agent.parameters()):
        assert torch.allclose(t, 0.5 * o + 0.5 * p)


@dataclass
class _CountConfig(EnvConfig):
    length: int = 3


@ENVS.register("_count_test_env", config=_CountConfig)
class _CountEnv(VecEnv):
    """Pays 1 per step and never terminates: every episode is cut by the time limit."""

    def __init__(self, cfg: _CountConfig, n_envs: int, seed: int, device: torch.device) -> None:
        self.n_envs, self.device = n_envs, torch.device(device)
        self.spec = EnvSpec(2, 2, 4, 4, cfg.length, ("a", "b"))
        self.t = torch.zeros(n_envs, dtype=torch.long)

    def _obs(self) -> Observation:
        s = torch.nn.functional.one_hot(self.t, 4).float()
        return Observation(s.unsqueeze(1).expand(-1, 2, -1), s, torch.ones(self.n_envs, 2, 2, dtype=torch.bool))

    def reset(self) -> Observation:
        self.t.zero_()
        return self._obs()

    def step(self, actions: torch.Tensor) -> StepResult:
        self.t = (self.t + 1).clamp(max=3)
        z = torch.zeros(self.n_envs, dtype=torch.bool)
        return StepResult(self._obs(), torch.ones(self.n_envs), z, z)


def test_time_limit_is_a_truncation_and_is_bootstrapped() -> None:
    cfg = compose("+algo=vdn", "+env=twostep", "logger=[]", "runner=parallel", "runner.n_envs=2", "learner.batch_size=2",
                  "learner.standardise_rewards=false")
    cfg.env = {"name": "_count_test_env", "length": 3, "t_max": 100, "test_interval": 50, "log_interval": 50}
    c = build(cfg, torch.device("cpu"))
    r = c.runner.run(0)
    b = r.batch
    assert (r.lengths == 3).all() and b["filled"][:, :3].all()
    assert not b["terminated"].any()  # cut by the time limit, not terminated
    assert (b["state"][:, 3].argmax(-1) == 3).all()  # the state after the last step is stored
    c.buffer.insert(b)
    batch, learner = c.buffer.sample(2), c.learner
    with torch.no_grad():  # V(s_3) as the learner computes it: target net at the online argmax (double Q)
        best = learner.controller.forward_seq(batch).argmax(-1, keepdim=True)
        tq = learner.controller.forward_seq(batch, agent=learner.targets["agent"]).gather(-1, best).squeeze(-1)
        v3 = learner.targets["mixer"](tq, batch["state"])[:, 3, 0]
    _, stats = learner.loss(batch, 0)
    targets = td_lambda_targets(batch["reward"][:, :3], torch.zeros(2, 3), torch.ones(2, 3),
                                learner.targets["mixer"](tq, batch["state"])[:, 1:], cfg.learner.gamma, 0.0)
    assert torch.allclose(targets[:, 2, 0], 1 + cfg.learner.gamma * v3)  # bootstrapped, not 1 + 0
    assert v3.abs().min() > 1e-3
    # PyMARL's target_mean is per agent (Q_tot / n_agents); target_tot_mean is Q_tot's
    assert stats["target_tot_mean"] == pytest.approx(targets.mean().item(), rel=1e-5)
    assert stats["target_mean"] == pytest.approx(targets.mean().item() / 2, rel=1e-5)


def test_grouped_gru_cell_matches_torch_gru_cell() -> None:
    from modules.agents.grouped import GroupedGRUCell

    torch.manual_seed(0)
    cell = GroupedGRUCell(1, 4, 5)
    ref = torch.nn.GRUCell(4, 5)
    with torch.no_grad():
        ref.weight_ih.copy_(cell.w_ih.weight[0])
        ref.bias_ih.copy_(cell.w_ih.bias[0])
        ref.weight_hh.copy_(cell.w_hh.weight[0])
        ref.bias_hh.copy_(cell.w_hh.bias[0])
    x, h = torch.randn(6, 4), torch.randn(6, 5)
    assert torch.allclose(cell(x, h), ref(x, h), atol=1e-6)


def test_stop_request_ignores_the_same_ctrl_c_twice_and_aborts_on_a_second_one(monkeypatch):
    import signal as _signal

    import runner.experiment as experiment

    clock = [100.0]
    monkeypatch.setattr(experiment.time, "monotonic", lambda: clock[0])
    stop = StopRequest()
    stop(_signal.SIGINT)
    assert stop.signum == _signal.SIGINT
    clock[0] += 0.2  # the terminal's SIGINT and the sweep launcher's forwarded copy
    stop(_signal.SIGINT)
    assert stop.signum == _signal.SIGINT
    clock[0] += 1.5  # the user presses Ctrl-C again
    with pytest.raises(KeyboardInterrupt):
        stop(_signal.SIGINT)


# --- issue 14, item 7: long setups say what they do, and a Ctrl-C is not kept waiting -----------------------


def test_a_rollout_is_abandoned_when_the_runner_is_asked_to() -> None:
    from runner.rollout.parallel import RolloutAborted

    _, c = _components("runner=parallel", "runner.n_envs=4")
    asked = []
    c.runner.should_abort = lambda: asked.append(1) or len(asked) > 2  # False before reset and step 0, then True
    with pytest.raises(RolloutAborted) as e:
        c.runner.run(0)
    assert str(e.value) == "rollout of 4 env copies abandoned at step 1 of at most 2"
    c.runner.should_abort = lambda: True
    with pytest.raises(RolloutAborted, match="^rollout of 4 env copies abandoned before it started$"):
        c.runner.run(0)
    c.runner.should_abort = None  # nothing is left half-done: the next rollout is whole
    r = c.runner.run(0)
    assert (r.lengths == 2).all() and r.steps == 8


def test_small_setups_print_nothing_and_large_ones_say_what_they_allocate(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from runner import build as build_mod

    _components("runner=parallel", "runner.n_envs=8")
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(build_mod, "MANY_BYTES", 10_000)  # as if it were 1 GB
    _components("runner=parallel", "runner.n_envs=8", "buffer.buffer_size=1000")
    assert capsys.readouterr().err == (
        "allocating the replay buffer: 1,000 episodes of up to 2 steps, 0.00 GB on cpu (each rollout batch of 8 "
        "copies: 0.00 GB on cpu) ...\n"
    )


def test_many_python_env_copies_are_announced(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from runner import build as build_mod

    monkeypatch.setattr(build_mod, "MANY_COPIES", 4)  # as if it were 1,000
    # the two-step game through the PettingZoo adapter: a Python env, here with its copies in this process
    cfg = compose("+algo=qmix", "+env=pettingzoo", "logger=[]", "env.factory={_target_: envs.pz_matrix.parallel_env, "
                  "name: twostep}", "env.episode_limit=2", "runner=parallel", "runner.n_envs=4", "runner.n_workers=0")
    comps = build(cfg, torch.device("cpu"))
    comps.runner.close()
    assert capsys.readouterr().err == (
        "creating 4 env copies in this process (every rollout, test phases included, steps all of them: up to 8 env "
        "steps each) ...\n"
    )


@pytest.mark.slow
def test_ctrl_c_while_env_copies_are_created_stops_at_once(tmp_path: Path, store_uri: str, store, exp_name: str) -> None:
    """1,000 copies that take 20 ms each to build, in 2 worker processes (10 s): a Ctrl-C (SIGINT to the
    process group, as a terminal sends it) once the workers are building copies abandons the setup (not all copies
    get built) and ends the process with one line, exit code 130, no MLflow run and no process left."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT, runs_of

    env = {**os.environ, "MLFLOW_TRACKING_URI": store_uri, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests' / 'fakes'}"}
    built = tmp_path / "built.txt"
    args = ["+algo=qmix", "+env=pettingzoo",
            f"env.factory={{_target_: slow_env.parallel_env, build_seconds: 0.02, built_file: '{built}'}}",
            "env.episode_limit=2", "runner=parallel", "runner.n_envs=1000", "runner.n_workers=2", "buffer.buffer_size=1000",
            f"logger.mlflow.experiment_name={exp_name}", f"hydra.run.dir={tmp_path / 'run'}"]
    proc = subprocess.Popen([sys.executable, "-m", "runner", *args], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            # as from a terminal: Ctrl-C's default disposition, whatever an earlier test left in
                            # this process (an ignored SIGINT is inherited, and Python then never raises KeyboardInterrupt)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        first = proc.stderr.readline()
        assert first.startswith("creating 1,000 env copies in 2 worker processes"), first
        deadline = time.monotonic() + 30  # the workers are building copies (on a loaded machine they start late)
        while time.monotonic() < deadline and not (built.exists() and built.read_text().strip()):
            time.sleep(0.05)
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)
        rest = proc.stderr.read()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130 and rest.strip() == "interrupted", rest
    n_built = len(built.read_text().splitlines())
    assert 0 < n_built < 1000, n_built  # setup was abandoned at the Ctrl-C, not finished first
    assert runs_of(store, exp_name) == []
    deadline = time.monotonic() + 10  # the workers, the fork server, the resource tracker: none is left
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        pytest.fail("processes of the run's process group are still alive 10 s after it ended")


def test_console_logger_prints_one_line_per_log_round_whatever_the_key_order(capsys) -> None:
    """The console prints at the end of a log round (Loggers.end_round), not when it happens to see a
    particular key: 'episode' may come first or not at all."""
    from runner.logging.base import Loggers
    from runner.logging.console import ConsoleLogger, ConsoleLoggerConfig

    loggers = Loggers([ConsoleLogger(ConsoleLoggerConfig(name="console"))])
    loggers.log_stats({"episode": 7.0, "return_mean": 1.5}, 100)
    assert capsys.readouterr().err == ""  # nothing before the round ends
    loggers.end_round(100)
    loggers.log_stats({"return_mean": 2.5}, 200)
    loggers.end_round(200)
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["t_env       100 | episode       7 | return_mean: 1.5",
                     "t_env       200 | episode       7 | return_mean: 2.5"]
