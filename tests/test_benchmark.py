"""Issue 13: reward standardisation, EPyMARL presets, benchmark configs and the published-values report."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from omegaconf import OmegaConf

from runner.benchmarks import compare, load_published, paper_stats, render_markdown, t_halfwidth
from runner.build import build
from runner.config import ConfigError, validate
from runner.curves import RunSeries
from runner.learners.normalise import RunningMeanStd
from tests.conftest import ROOT, compose, runs_of, train

# -- reward standardisation -------------------------------------------------------------------------------


def test_running_mean_std_matches_a_hand_computation() -> None:
    rms = RunningMeanStd()
    a = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask_a = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])  # padding after episode 2's first step
    b = torch.tensor([10.0, -2.0])
    rms.update(a, mask_a)
    rms.update(b)
    # by hand: prior (mean 0, var 1, count 1e-4), then {1,2,3,4} (mean 2.5, var 1.25), then {10,-2} (mean 4, var 36)
    eps = 1e-4
    n1, m1, v1 = 4, 2.5, 1.25
    tot1 = eps + n1
    mean1 = 0 + (m1 - 0) * n1 / tot1
    var1 = (1 * eps + v1 * n1 + (m1 - 0) ** 2 * eps * n1 / tot1) / tot1
    n2, m2, v2 = 2, 4.0, 36.0
    tot2 = tot1 + n2
    mean2 = mean1 + (m2 - mean1) * n2 / tot2
    var2 = (var1 * tot1 + v2 * n2 + (m2 - mean1) ** 2 * tot1 * n2 / tot2) / tot2
    assert rms.count.item() == pytest.approx(tot2, abs=1e-12)
    assert rms.mean.item() == pytest.approx(mean2, rel=1e-12)
    assert rms.var.item() == pytest.approx(var2, rel=1e-12)
    # with a negligible prior these are the plain mean and population variance of the six values
    values = np.array([1, 2, 3, 4, 10, -2], dtype=float)
    assert rms.mean.item() == pytest.approx(values.mean(), rel=1e-4)
    assert rms.var.item() == pytest.approx(values.var(), rel=1e-4)
    x = torch.tensor([5.0])
    assert rms.standardise(x).item() == pytest.approx((5 - mean2) / var2**0.5, rel=1e-6)
    assert rms.standardise(x, centre=False).item() == pytest.approx(5 / var2**0.5, rel=1e-6)


def test_an_empty_mask_changes_nothing() -> None:
    rms = RunningMeanStd()
    rms.update(torch.ones(3), torch.zeros(3))
    assert (rms.mean.item(), rms.var.item(), rms.count.item()) == (0.0, 1.0, pytest.approx(1e-4))


def _learner_after_updates(*overrides: str, updates: int = 3):
    cfg = compose("+algo=qmix", "+env=twostep", "logger=[]", "learner.batch_size=4", *overrides)
    c = build(cfg, torch.device("cpu"))
    from runner.experiment import Experiment, StopRequest

    exp = Experiment(cfg, c, Path("unused"), StopRequest())
    while not c.buffer.can_sample(4):
        exp.train_iteration()
    batches = [c.buffer.sample(4) for _ in range(updates)]
    return c, batches


def test_td_targets_use_standardised_rewards_and_the_statistics_see_only_real_steps() -> None:
    torch.manual_seed(0)
    c, (batch,) = _learner_after_updates(updates=1)
    learner = c.learner
    learner.reward_stats = RunningMeanStd()  # forget the updates made while filling the buffer
    batch.data["filled"][0, 1] = False  # as if episode 0 had ended after its first step: padding
    batch.data["reward"][0, 1] = 123.0  # which must not reach the statistics
    mask = batch["filled"][:, :-1].float()
    rewards = batch["reward"][:, :-1]
    real = rewards[mask > 0].double()
    _, stats = learner.loss(batch, 0)
    rms = learner.reward_stats
    assert rms.count.item() == pytest.approx(1e-4 + mask.sum().item())
    assert mask.sum().item() == 7 and rms.mean.item() == pytest.approx(real.mean().item(), rel=1e-3)
    # the targets are built from (r - mean) / std: recompute them from the standardised rewards
    learner.cfg.standardise_rewards = False
    std_rewards = rms.standardise(rewards)
    batch.data["reward"][:, :-1] = std_rewards
    _, stats_manual = learner.loss(batch, 0)
    assert stats_manual["target_mean"].item() == pytest.approx(stats["target_mean"].item(), rel=1e-5)


def test_reward_statistics_are_checkpointed_and_restored_exactly() -> None:
    torch.manual_seed(1)
    c, batches = _learner_after_updates(updates=3)
    for b in batches[:2]:
        c.learner.train(b, 0)
    state = c.learner.state_dict()
    torch.manual_seed(1)
    c2, _ = _learner_after_updates(updates=0)
    c2.learner.load_state_dict(state)
    for k in ("mean", "var", "count"):
        assert torch.equal(getattr(c.learner.reward_stats, k), getattr(c2.learner.reward_stats, k))
    s1 = c.learner.train(batches[2], 0)
    s2 = c2.learner.train(batches[2], 0)
    assert s1 == s2


def test_checkpoints_without_reward_statistics_still_load() -> None:
    c, _ = _learner_after_updates(updates=0)
    state = c.learner.state_dict()
    del state["reward_stats"]
    c.learner.load_state_dict(state)
    assert c.learner.reward_stats.count.item() == pytest.approx(1e-4)


def test_paper_presets_turn_standardisation_off_and_the_default_is_on() -> None:
    assert compose("+algo=qmix", "+env=lbf").learner.standardise_rewards is True
    for preset in ("qmix_twostep", "vdn_twostep", "iql_twostep", "qmix_mstep", "maven_mstep"):
        assert compose(f"+experiment={preset}").learner.standardise_rewards is False, preset


# -- EPyMARL presets: every mapped key holds EPyMARL's value (docs/epymarl.md is the specification) --------

DOC = ROOT / "docs" / "epymarl.md"


def _algo_rows() -> list[tuple[str, dict[str, str]]]:
    """(hymarl key, {algo: value}) of the algorithm table of docs/epymarl.md."""
    text = DOC.read_text().split("## Algorithm keys", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 6 or cells[0].startswith(("EPyMARL", "---")):
            continue
        _, qmix, vdn, iql, key, _ = cells
        if key != "-":
            rows.append((key, {"qmix": qmix, "vdn": vdn, "iql": iql}))
    return rows


def test_the_mapping_table_covers_the_presets() -> None:
    keys = {k for k, _ in _algo_rows()}
    assert len(keys) >= 25
    assert {"learner.standardise_rewards", "learner.optim_eps", "agent.n_layers", "mixer.embed_dim"} <= keys


@pytest.mark.parametrize("algo", ["qmix", "vdn", "iql"])
def test_epymarl_presets_hold_epymarl_values_key_for_key(algo: str) -> None:
    cfg = compose(f"+experiment=epymarl_{algo}", "+env=epymarl_lbf_8x8_2p_2f_coop")
    checked = 0
    for key, values in _algo_rows():
        expected = values[algo]
        if expected == "-":
            continue
        if key == "controller.share_params":
            expected = "true"  # basic_mac: one shared network
        if key == "agent.name":
            expected = "gru" if expected == "true" else "mlp"  # use_rnn
        if key == "runner.name" and expected == "episode":
            assert cfg.runner.name == "episode"
            checked += 1
            continue
        got = OmegaConf.select(cfg, key)
        want = yaml.safe_load(expected)
        assert got == want, f"{algo}: {key} is {got!r}, EPyMARL's is {want!r}"
        checked += 1
    assert checked >= 24
    validate(cfg)


def test_epymarl_env_presets_carry_gymma_settings() -> None:
    cfg = compose("+experiment=epymarl_qmix", "+env=epymarl_lbf_8x8_2p_2f_coop")
    assert (cfg.env.episode_limit, cfg.env.time_limit, cfg.env.state, cfg.env.reward) == (50, "terminated", "concat", "sum")
    assert cfg.env.key == "lbforaging:Foraging-8x8-2p-2f-coop-v3"
    assert (cfg.t_max, cfg.test_interval, cfg.test_nepisodes, cfg.log_interval) == (2_050_000, 50_000, 100, 10_000)
    assert compose("+experiment=epymarl_vdn", "+env=epymarl_rware_tiny_2ag").env.episode_limit == 500
    m = compose("+experiment=epymarl_iql", "+env=epymarl_penalty_k75").env
    assert (m.name, m.k, m.steps) == ("penalty", -75, 25)


def test_an_lbf_time_limit_is_terminal_with_the_epymarl_preset() -> None:
    cfg = compose("+experiment=epymarl_qmix", "+env=epymarl_lbf_8x8_2p_2f_coop", "logger=[]")
    c = build(cfg, torch.device("cpu"))
    try:
        c.controller.cfg.epsilon_start = c.controller.cfg.epsilon_finish = 1.0
        for _ in range(20):  # random play rarely ends an episode before the 50-step limit
            r = c.runner.run(0)
            if int(r.lengths[0]) == 50:
                assert bool(r.batch["terminated"][0, 49])  # terminal, not bootstrapped
                return
        pytest.fail("no episode reached the 50-step time limit in 20 episodes")
    finally:
        c.runner.close()


# -- matrix games repeated over 25 steps ----------------------------------------------------------------------


def test_repeated_matrix_game_pays_every_step_and_terminates_at_the_last() -> None:
    from envs.matrix import PenaltyConfig, PenaltyGame

    env = PenaltyGame(PenaltyConfig(name="penalty", k=-25.0, steps=3), 2, 0, torch.device("cpu"))
    assert env.spec.episode_limit == 3
    env.reset()
    acts = torch.tensor([[0, 0], [0, 2]])
    rewards, terms = [], []
    for _ in range(3):
        out = env.step(acts)
        rewards.append(out.reward.tolist())
        terms.append(out.terminated.tolist())
    assert rewards == [[10.0, -25.0]] * 3
    assert terms == [[False, False], [False, False], [True, True]]
    assert env.step(acts).reward.tolist() == [0.0, 0.0]  # after the end: nothing


def test_matrix_steps_must_be_positive() -> None:
    with pytest.raises(ConfigError, match=re.escape("env.steps=0 is invalid: must be >= 1")):
        validate(compose("+algo=qmix", "+env=climbing", "env.steps=0"))


# -- benchmark configs -------------------------------------------------------------------------------------


def _jobs(*overrides: str) -> list[list[str]]:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from runner.config import register_schemas
    from runner.tools.sweep import basic_sweep_jobs

    register_schemas()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        # the sweep's own config: composed from its non-sweep overrides (a multirun composes the rest per job)
        cfg = hydra_compose("config", overrides=[o for o in overrides if "," not in o], return_hydra_config=True)
    return basic_sweep_jobs(cfg, list(overrides))


def test_the_matrix_benchmark_composes_into_its_job_list() -> None:
    jobs = _jobs("+benchmark=epymarl_matrix")
    assert len(jobs) == 3 * 6 * 5
    combos = {(j[0], j[1], j[2]) for j in jobs}
    assert ("+experiment=epymarl_qmix", "+env=epymarl_penalty_k100", "seed=4") in combos
    assert all(j[-1] == "+benchmark=epymarl_matrix" for j in jobs)
    # the command line wins over the benchmark's own lists
    short = _jobs("+benchmark=epymarl_matrix", "seed=0,1", "+env=epymarl_climbing")
    assert len(short) == 3 * 1 * 2
    assert {j[1] for j in short} == {"+env=epymarl_climbing"}


def test_the_sweep_parent_records_what_varies_once() -> None:
    """A benchmark's own lists vary unless the command line sets the key; keys appear once, without +."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from runner.config import register_schemas
    from runner.tools.sweep import varying_overrides

    register_schemas()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = hydra_compose("config", overrides=["+benchmark=epymarl_lbf", "+env=epymarl_lbf_10x10_3p_3f"],
                            return_hydra_config=True)
    task = ["+benchmark=epymarl_lbf", "+env=epymarl_lbf_10x10_3p_3f", "+experiment=epymarl_qmix,epymarl_vdn"]
    assert varying_overrides(cfg, task) == {"experiment": "epymarl_qmix,epymarl_vdn", "seed": "range(0,5)"}


@pytest.mark.parametrize(("bench", "n"), [("epymarl_lbf", 3 * 7 * 5), ("epymarl_rware", 3 * 3 * 5), ("epymarl_mpe", 3 * 2 * 5)])
def test_every_benchmark_job_composes_and_validates(bench: str, n: int) -> None:
    jobs = _jobs(f"+benchmark={bench}")
    assert len(jobs) == n
    for job in {tuple(j[:2]) for j in jobs}:  # one seed of each task x algorithm
        cfg = compose(*job, f"+benchmark={bench}")
        validate(cfg)
        assert cfg.benchmark.published == "papoudakis2021"


def test_a_benchmark_with_unknown_published_values_is_refused() -> None:
    with pytest.raises(ConfigError, match="benchmark.published='nope' is invalid"):
        validate(compose("+experiment=epymarl_qmix", "+env=epymarl_climbing", "+benchmark=epymarl_matrix",
                         "benchmark.published=nope"))


def test_benchmark_tasks_have_published_rows() -> None:
    pub = load_published("papoudakis2021")
    envs = set()
    for f in (ROOT / "conf" / "benchmark").glob("*.yaml"):
        params = yaml.safe_load(f.read_text())["hydra"]["sweeper"]["params"]
        envs |= set(params["+env"].split(","))
    assert envs == set(pub["tasks"])


# -- ours beside theirs --------------------------------------------------------------------------------------


def _series(env: str, algo: str, seed: int, values: list[float], step: int = 100) -> RunSeries:
    return RunSeries(f"{env}-{algo}-{seed}", f"{algo}-{env}-s{seed}", env, algo, str(seed),
                     [(i * step, v) for i, v in enumerate(values)])


def test_paper_statistics_by_hand() -> None:
    runs = [_series("t", "qmix", 0, [0, 4, 6, 5]), _series("t", "qmix", 1, [0, 2, 8, 9]), _series("t", "qmix", 2, [0, 3, 7, 4])]
    s = paper_stats(runs)
    # means over seeds per step: 0, 3, 7, 6 -> the max is at step 200 with values 6, 8, 7
    assert s["max_return"]["step"] == 200 and s["max_return"]["mean"] == pytest.approx(7.0)
    assert s["max_return"]["ci95"] == pytest.approx(4.303 * 1.0 / 3**0.5, rel=1e-4)  # sd(6, 8, 7) = 1
    # per-seed averages 3.75, 4.75, 3.5 -> mean 4.0
    assert s["average_return"]["mean"] == pytest.approx(4.0)
    assert s["average_return"]["ci95"] == pytest.approx(t_halfwidth([3.75, 4.75, 3.5]))
    assert t_halfwidth([1.0]) is None
    halved = paper_stats(runs, divide_by=2)
    assert halved["max_return"]["mean"] == pytest.approx(3.5)


def test_the_comparison_joins_published_values(tmp_path: Path) -> None:
    pub = load_published("papoudakis2021")
    pub["tasks"]["epymarl_climbing"]["max_returns"]["qmix"] = [175.0, 54.77]  # a fixture value, not the paper's
    pub["tasks"]["epymarl_mpe_spread"]["average_returns"]["vdn"] = -150.0
    series = [_series("epymarl_climbing", "qmix", s, [0, 125, 175 + s]) for s in range(3)]
    series += [_series("epymarl_mpe_spread", "vdn", s, [-600, -450 + 3 * s]) for s in range(2)]
    series += [_series("my_task", "iql", 0, [1, 2])]
    data = compare(series, pub, "epymarl_matrix")
    rows = {(r["task"], r["algo"]): r for r in data["rows"]}
    climb = rows[("epymarl_climbing", "qmix")]
    assert climb["published"]["max_return"] == {"mean": 175.0, "ci95": 54.77}
    assert climb["published"]["average_return"] is None
    assert climb["ours"]["max_return"]["mean"] == pytest.approx(176.0) and climb["shorter_budget"]
    spread = rows[("epymarl_mpe_spread", "vdn")]
    assert spread["divide_by"] == 3 and spread["ours"]["max_return"]["mean"] == pytest.approx((-450 + 1.5) / 3)
    assert spread["published"]["average_return"] == {"mean": -150.0, "ci95": None}
    assert data["unknown_tasks"] == ["my_task"] and rows[("my_task", "iql")]["published"] is None
    md = render_markdown(data)
    assert "| epymarl_climbing (Climbing) | qmix | 3 | 200* | 176 ± 2.484 (at 200) | 175 ± 54.77 | " in md
    assert "| epymarl_mpe_spread (Spread), ÷3 | vdn |" in md and "| -150 |" in md
    assert "not in the data" in md and "Table 3" in md


def test_report_cli_writes_the_benchmark_table_from_mlflow_runs(tmp_path: Path, store, exp_name: str) -> None:
    short = ["+experiment=epymarl_qmix", "+env=epymarl_penalty_k0", "+benchmark=epymarl_matrix", "t_max=500",
             "test_interval=250", "test_nepisodes=2", f"logger.mlflow.experiment_name={exp_name}"]
    for seed in (0, 1):
        train(tmp_path / f"r{seed}", *short, f"seed={seed}")
    runs = runs_of(store, exp_name)
    assert {r.data.tags["benchmark"] for r in runs} == {"epymarl_matrix"}
    from runner.tools.report import main

    out = tmp_path / "report"
    assert main(["--experiment", exp_name, "--published", "papoudakis2021", "--out", str(out)]) == 0
    import json

    data = json.loads((out / "benchmark.json").read_text())
    (row,) = data["rows"]
    assert (row["task"], row["algo"], row["ours"]["seeds"], row["ours"]["evaluations"]) == ("epymarl_penalty_k0", "qmix", 2, 3)
    assert row["published"] == {"max_return": None, "average_return": None}
    assert "epymarl_penalty_k0 (Penalty k=0)" in (out / "benchmark.md").read_text()
    assert main(["--experiment", exp_name, "--published", "nope", "--out", str(out)]) == 2
    assert main(["--experiment", exp_name, "--published", "nope", "--out", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()  # refused before anything was written


PYMARL2_QMIX = {  # hijkzzz/pymarl2 src/config/default.yaml + algs/qmix.yaml + learners/nq_learner.py
    "agent.name": "gru", "agent.hidden_dim": 64, "runner.name": "parallel", "runner.n_envs": 4,
    "controller.obs_agent_id": True, "controller.obs_last_action": True, "controller.epsilon_start": 1.0,
    "controller.epsilon_finish": 0.05, "controller.epsilon_anneal_time": 100000, "learner.lr": 0.001,
    "learner.optimizer": "adam", "learner.optim_eps": 1e-8, "learner.grad_norm_clip": 10.0, "learner.gamma": 0.99,
    "learner.batch_size": 128, "learner.target_update_interval": 200, "learner.double_q": True,
    "learner.td_lambda": 0.6, "learner.standardise_rewards": False, "mixer.name": "qmix", "mixer.embed_dim": 32,
    "mixer.hypernet_layers": 2, "mixer.hypernet_embed": 64, "buffer.buffer_size": 5000,
}


def test_qmix_tuned_holds_pymarl2_values_key_for_key() -> None:
    cfg = compose("+experiment=qmix_tuned", "+env=lbf")
    for key, want in PYMARL2_QMIX.items():
        got = OmegaConf.select(cfg, key)
        assert got == want, f"qmix_tuned: {key} is {got!r}, pymarl2's is {want!r}"
    validate(cfg)
