"""Agent groups and policy mapping: resolution and its errors, parameter sharing and separation,
fixed, scripted and frozen policies, heterogeneous shapes, per-group metrics, learning."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from envs.base import EnvSpec
from runner.build import build
from runner.config import ConfigError, validate
from runner.controllers.grouped import GroupedController
from runner.groups import resolve
from tests.conftest import ROOT, cli, compose, runs_of, train

TWOSTEP3 = ["+algo=qmix", "+env=twostep3", "logger=[console]", "test_nepisodes=4"]
RANDOM_THIRD = "groups={learners:[agent_0,agent_1],others:{agents:[agent_2],policy:random}}"
SPLIT = "groups={pair:[agent_0,agent_1],solo:[agent_2]}"

SPEC = EnvSpec(4, 5, 11, 20, 25, ("speaker_0", "speaker_1", "listener_0", "listener_1"),
               (3, 3, 11, 11), (3, 3, 5, 5))


def _components(*overrides: str):
    cfg = compose(*overrides)
    validate(cfg)
    return build(cfg, torch.device("cpu"))


# -- resolution ------------------------------------------------------------------------------------
def test_patterns_lists_default_group_and_shorthands_resolve_in_env_order() -> None:
    groups = resolve({"listeners": "listener_*", "speakers": {"agents": ["speaker_1", "speaker_0"]}}, SPEC)
    assert [(g.name, g.agents, g.index, g.obs_dim, g.n_actions) for g in groups] == [
        ("listeners", ("listener_0", "listener_1"), (2, 3), 11, 5),
        ("speakers", ("speaker_0", "speaker_1"), (0, 1), 3, 3),
    ]
    groups = resolve({"one": ["speaker_0"], "rest": {"default": True, "agents": ["speaker_1"]}, "l": "listener_*"}, SPEC)
    assert [g.agents for g in groups] == [("speaker_0",), ("speaker_1",), ("listener_0", "listener_1")]
    homo = EnvSpec(3, 2, 3, 3, 2, ("agent_0", "agent_1", "agent_2"))
    assert [g.agents for g in resolve("all", homo)] == [("agent_0", "agent_1", "agent_2")]
    assert [g.name for g in resolve("per_agent", homo)] == ["agent_0", "agent_1", "agent_2"]
    assert [g.agents for g in resolve({"a": "agent_0", "b": {"default": True}}, homo)] == [("agent_0",), ("agent_1", "agent_2")]


@pytest.mark.parametrize(
    "groups, message",
    [
        ({"a": ["speaker_0", "speaker_1"], "b": ["speaker_1"], "l": "listener_*"},
         "agent 'speaker_1' is in two groups: 'a' and 'b' (an agent belongs to one group)"),
        ({"s": "speaker_*"},
         "agent(s) listener_0, listener_1 of the env are in no group: list them in a group, or mark one group default: true"),
        ({"s": "speaker_*", "l": "lis_*", "r": {"default": True}},
         "groups.l.agents: 'lis_*' matches no agent of the env (agents: speaker_0, speaker_1, listener_0, listener_1)"),
        ({"s": "speaker_*", "l": ["listener_0", "listener_9"], "r": {"default": True}},
         "groups.l.agents: 'listener_9' is not an agent of the env (agents: speaker_0, speaker_1, listener_0, listener_1)"),
        ({"everyone": "all"},
         "groups.everyone mixes agents of different shapes (speaker_0: obs 3, 3 actions, speaker_1: obs 3, 3 actions, "
         "listener_0: obs 11, 5 actions, listener_1: obs 11, 5 actions): a group's agents share one network; split them into groups"),
    ],
)
def test_resolution_errors_name_the_agents(groups: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        resolve(groups, SPEC, "the env")
    assert str(err.value) == f"invalid agent groups:\n  {message}"


@pytest.mark.parametrize(
    "override, message",
    [
        ("groups={a:[agent_0,agent_1],b:{agents:[agent_2],policy:randm}}",
         "groups.b.policy='randm' is invalid: must be learn, random, frozen or a scripted policy given as {_target_: module.Class, ...}"),
        ("groups={a:[agent_0,agent_1],b:{agents:[agent_2],policy:frozen}}",
         "groups.b.checkpoint is required with policy frozen: a run dir or a .pt file of an earlier run"),
        ("groups={a:[agent_0,agent_1],b:{agents:[agent_2],policy:frozen,checkpoint:/nonexistent/run}}",
         "groups.b.checkpoint=/nonexistent/run is invalid: no such file or directory"),
        ("groups={a:{agents:all,policy:random}}",
         "groups: no group learns (every group has a fixed or frozen policy): give at least one group policy: learn"),
        ("groups={a:[agent_0,agent_1],b:{agents:[agent_2],policy:{_target_:nowhere.Policy}}}",
         "groups.b.policy._target_=nowhere.Policy cannot be imported: Error loading 'nowhere.Policy':"),
        ("groups={a:[agent_0,agent_1],b:{agents:[agent_2],policy:random,agent:{hidden_dim:8}}}",
         "groups.b.agent overrides only apply to learning groups (this group's policy is random)"),
        ("groups={a:{agents:[agent_0,agent_1],controller:{epsilon:0.1}},b:[agent_2]}",
         "groups.a.controller has unknown key(s) epsilon. Known keys: epsilon_anneal_time, epsilon_finish, "
         "epsilon_schedule, epsilon_start, obs_agent_id, obs_last_action, share_params"),
        ("groups={a:{agnts:[agent_0]}}",
         "groups.a has unknown key(s) agnts. Known keys: agents, policy, default, checkpoint, source_group, controller, agent"),
        ("groups=each", "groups='each' is invalid: must be all, per_agent or a mapping of group names to agents"),
    ],
)
def test_invalid_group_configs_fail_validation_with_the_key_and_value(override: str, message: str) -> None:
    cfg = compose(*TWOSTEP3, override)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert message in str(err.value)


def test_groups_with_the_maven_controller_are_refused() -> None:
    cfg = compose("+algo=maven", "+env=mstep", "logger=[console]", "groups=per_agent")
    with pytest.raises(ConfigError, match="groups are not supported with controller 'maven'"):
        validate(cfg)


@pytest.mark.slow
def test_cli_group_errors_exit_2_before_any_mlflow_run(tmp_path: Path, store_uri: str, exp_name: str) -> None:
    common = ["+env=twostep3", "+algo=qmix", f"logger.mlflow.experiment_name={exp_name}", "progress=false",
              f"hydra.run.dir={tmp_path}/run"]
    bad_policy = cli([*common, "groups={a:[agent_0,agent_1],b:{agents:[agent_2],policy:randm}}"], ROOT, store_uri)
    assert bad_policy.returncode == 2, bad_policy.stderr
    assert "groups.b.policy='randm' is invalid" in bad_policy.stderr
    in_none = cli([*common, "groups={a:[agent_0,agent_1]}"], ROOT, store_uri)
    assert in_none.returncode == 2, in_none.stderr
    assert ("Error: invalid agent groups:\n  agent(s) agent_2 of env 'twostep3' are in no group: list them in a group, "
            "or mark one group default: true") in in_none.stderr
    assert runs_of(MlflowClient(tracking_uri=store_uri), exp_name) == []


# -- sharing and separation -------------------------------------------------------------------------
def test_a_group_shares_one_parameter_set_and_groups_are_separate() -> None:
    c = _components(*TWOSTEP3, SPLIT, "agent.hidden_dim=8")
    ctrl = c.controller
    try:
        assert isinstance(ctrl, GroupedController) and list(ctrl.agent) == ["pair", "solo"]
        # one parameter set per group: shared weights (no per-agent copies) of the agent network
        for net in ctrl.agent.values():
            assert all(p.shape[0] == 1 for n, p in net.named_parameters() if n.endswith(("weight", "bias")) and p.dim() >= 2)
        assert {id(p) for p in c.learner.params} == {id(p) for p in ctrl.agent.parameters()} | {id(p) for p in c.learner.mixer.parameters()}

        r = c.runner.run(0, test_mode=False)
        q = ctrl.forward_seq(r.batch)  # [B, T+1, 3, A]

        def grads(agent: int) -> dict[str, float]:
            ctrl.agent.zero_grad(set_to_none=True)
            ctrl.forward_seq(r.batch)[..., agent, :].sum().backward()
            return {g: sum(float(p.grad.abs().sum()) if p.grad is not None else 0.0 for p in net.parameters())
                    for g, net in ctrl.agent.items()}

        g0, g1, g2 = grads(0), grads(1), grads(2)
        assert g0["pair"] > 0 and g1["pair"] > 0 and g0["solo"] == 0 and g1["solo"] == 0  # both pair agents train it
        assert g2["solo"] > 0 and g2["pair"] == 0  # the solo group's loss never reaches the pair's network
        # one Q row per agent of the env (2 actions each), the rows of both groups in env order
        assert q.shape[2:] == (3, 2)
    finally:
        c.runner.close()


def test_fixed_policy_agents_are_outside_the_learner_and_get_no_gradients(tmp_path: Path) -> None:
    res = train(tmp_path / "run", *TWOSTEP3, RANDOM_THIRD, "t_max=300", "learner.batch_size=8")
    assert res.status == "FINISHED"
    c = _components(*TWOSTEP3, RANDOM_THIRD)
    try:
        assert list(c.controller.agent) == ["learners"]
        assert c.controller.learn_idx.tolist() == [0, 1]
        assert len(c.learner.params) == len(list(c.controller.agent.parameters())) + len(list(c.learner.mixer.parameters()))
        # QMIX's hypernetworks mix the two learners only
        assert c.learner.mixer(torch.zeros(1, 1, 2), torch.zeros(1, 1, 3)).shape == (1, 1, 1)
        with pytest.raises(RuntimeError):
            c.learner.mixer(torch.zeros(1, 1, 3), torch.zeros(1, 1, 3))
        # the random agent really acts at random; the learners act by their network
        acts = torch.cat([c.runner.run(0, test_mode=True).batch["actions"][:, 0] for _ in range(40)]).long()
        assert set(acts[:, 2].tolist()) == {0, 1}
    finally:
        c.runner.close()


def test_scripted_policy_acts_as_written_and_bad_actions_are_named() -> None:
    pol = "groups={learners:[agent_0,agent_1],others:{agents:[agent_2],policy:{_target_:runner.policies.ConstantAction,action:1}}}"
    c = _components(*TWOSTEP3, pol)
    try:
        for test_mode in (False, True):
            a = c.runner.run(0, test_mode=test_mode).batch["actions"][:, :2].long()
            assert (a[..., 2] == 1).all()
    finally:
        c.runner.close()
    bad = "groups={learners:[agent_0,agent_1],others:{agents:[agent_2],policy:{_target_:runner.policies.ConstantAction,action:5}}}"
    c = _components(*TWOSTEP3, bad)
    try:
        with pytest.raises(ValueError, match=r"ConstantAction\(action=5\): the group has only 2 actions"):
            c.runner.run(0, test_mode=False)
    finally:
        c.runner.close()


# -- frozen policies ---------------------------------------------------------------------------------
def test_frozen_group_loads_an_earlier_run_and_stays_bit_identical(tmp_path: Path) -> None:
    src = train(tmp_path / "src", *TWOSTEP3, RANDOM_THIRD, "t_max=400", "learner.batch_size=8")
    saved = torch.load(src.checkpoint, weights_only=False)["learner"]["modules"]["agent"]
    frozen = ("groups={learners:{agents:[agent_0,agent_1],policy:frozen,checkpoint:" + str(src.run_dir)
              + "},third:[agent_2]}")
    c = _components(*TWOSTEP3, frozen, "learner.batch_size=8")
    try:
        net = c.controller.nets["learners"]
        before = {k: v.clone() for k, v in net.agent.state_dict().items()}
        assert all(torch.equal(before[k], saved[f"learners.{k}"]) for k in before)
        assert list(c.controller.agent) == ["third"] and all(not p.requires_grad for p in net.parameters())
        for _ in range(12):
            r = c.runner.run(0)
            c.buffer.insert(r.batch)
            if c.buffer.can_sample(4):
                c.learner.train(c.buffer.sample(4), 0)
        assert c.learner.n_updates > 0
        after = net.agent.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)
        assert all(p.grad is None for p in net.parameters())
    finally:
        c.runner.close()

    misfit = "groups={learners:{agents:[agent_0],policy:frozen,checkpoint:" + str(src.run_dir) + "},rest:{default:true}}"
    with pytest.raises(ConfigError) as err:
        _components(*TWOSTEP3, misfit)
    assert str(err.value).startswith(
        f"groups.learners.checkpoint={src.checkpoint} does not fit group 'learners' (1 agents, obs 3, 2 actions): "
        "Error(s) in loading state_dict for MLPAgent:"
    )
    wrong = ("groups={x:{agents:[agent_2],policy:frozen,source_group:others,checkpoint:" + str(src.run_dir)
             + "},rest:{default:true}}")
    with pytest.raises(ConfigError, match=r"group 'others' did not learn in that run \(its learning groups: learners\); set groups.x.source_group"):
        _components(*TWOSTEP3, wrong)


def test_a_frozen_group_can_come_from_a_run_without_groups(tmp_path: Path) -> None:
    src = train(tmp_path / "src", "+algo=vdn", "+env=twostep", "logger=[console]", "test_nepisodes=4", "t_max=200")
    saved = torch.load(src.checkpoint, weights_only=False)["learner"]["modules"]["agent"]
    frozen = "groups={pair:{agents:[agent_0,agent_1],policy:frozen,checkpoint:" + str(src.checkpoint) + "},third:[agent_2]}"
    c = _components(*TWOSTEP3, frozen)
    try:
        got = c.controller.nets["pair"].agent.state_dict()
        assert got.keys() == saved.keys() and all(torch.equal(got[k], saved[k]) for k in got)
        # the frozen pair acts greedily with the source run's Q-values
        obs = torch.eye(3)[0].expand(1, 3, 3)
        q = c.controller.nets["pair"].q_values(obs[:, :2])
        a = c.runner.run(0, test_mode=False).batch["actions"][:, 0, :2].long()
        assert torch.equal(a, q.argmax(-1))
    finally:
        c.runner.close()


# -- heterogeneous teams ---------------------------------------------------------------------------
def test_speaker_listener_groups_get_networks_of_their_own_shape() -> None:
    c = _components("+experiment=qmix_speaker_listener", "logger=[console]", "runner.n_envs=2", "runner.n_workers=0")
    try:
        spec = c.spec
        assert spec.agent_ids == ("speaker_0", "listener_0")
        assert (spec.agent_obs_dims, spec.agent_n_actions) == ((3, 11), (3, 5))
        speaker, listener = c.controller.agent["speaker"], c.controller.agent["listener"]
        # inputs: own observation + last action (obs_last_action=true, no agent id)
        assert speaker.fc1.weight.shape[-1] == 3 + 3 and speaker.fc2.weight.shape[1] == 3
        assert listener.fc1.weight.shape[-1] == 11 + 5 and listener.fc2.weight.shape[1] == 5
        r = c.runner.run(0)
        assert int(r.batch["actions"][:, :, 0].max()) <= 2  # the speaker only ever picks its 3 actions
        c.buffer.insert(r.batch)
        stats = c.learner.train(c.buffer.sample(2), 50)
        assert {"q_taken_mean_speaker", "q_taken_mean_listener", "grad_norm_speaker", "grad_norm_listener"} <= set(stats)
        assert "loss_speaker" not in stats  # a joint mixer has one team TD loss
        # each agent's own return (both get the team reward here)
        assert torch.allclose(r.env_stats["return_speaker"], r.returns) and torch.allclose(r.env_stats["return_listener"], r.returns)
    finally:
        c.runner.close()


# -- metrics, resume, learning ------------------------------------------------------------------------
def test_per_group_metrics_in_mlflow(tmp_path: Path, store: MlflowClient, exp_name: str) -> None:
    mlflow = [f"logger.mlflow.experiment_name={exp_name}", "logger=[console,mlflow]"]
    train(tmp_path / "q", *TWOSTEP3, *mlflow, RANDOM_THIRD, "t_max=400", "log_interval=100", "learner.batch_size=8",
          "run_name=qmix")
    train(tmp_path / "i", "+algo=iql", "+env=twostep3", "test_nepisodes=4", *mlflow, SPLIT, "t_max=400",
          "log_interval=100", "learner.batch_size=8", "run_name=iql")
    runs = {r.info.run_name: r for r in runs_of(store, exp_name)}
    q = runs["qmix"].data
    assert q.tags["groups"] == "learners=learn others=random" and runs["iql"].data.tags["groups"] == "pair=learn solo=learn"
    assert (q.params["groups.learners"], q.params["groups.others.agents"], q.params["groups.others.policy"]) == (
        "['agent_0', 'agent_1']", "['agent_2']", "random")
    for key in ("return_learners_mean", "return_others_mean", "test_return_learners_mean", "test_return_others_mean",
                "q_taken_mean_learners", "grad_norm_learners"):
        assert key in q.metrics, key
    # a shared team reward: each group's return is the team's
    assert q.metrics["test_return_learners_mean"] == q.metrics["test_return_mean"] == q.metrics["test_return_others_mean"]
    assert "loss_learners" not in q.metrics and "q_taken_mean_others" not in q.metrics
    i = runs["iql"].data
    # independent learners: one TD loss per group, and they add up to the total
    n = {"pair": 2, "solo": 1}
    assert abs(sum(i.metrics[f"loss_{g}"] * k for g, k in n.items()) / 3 - i.metrics["loss"]) < 1e-5


def test_resume_with_groups_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    base = [*TWOSTEP3, RANDOM_THIRD, "runner=parallel", "runner.n_envs=4", "learner.batch_size=8",
            "test_interval=200", "log_interval=100", "save_interval=0"]
    full = train(tmp_path / "full", *base, "t_max=800")
    train(tmp_path / "part", *base, "t_max=400")
    resumed = train(tmp_path / "unused", *base, "t_max=800", f"resume={tmp_path / 'part'}")
    a = torch.load(full.checkpoint, weights_only=False)
    b = torch.load(resumed.checkpoint, weights_only=False)
    for k, v in a["learner"]["modules"]["agent"].items():
        assert torch.equal(v, b["learner"]["modules"]["agent"][k]), k
    assert full.stats["test_return_mean"] == resumed.stats["test_return_mean"]
    assert a["loop"]["curves"]["test_return_mean"] == b["loop"]["curves"]["test_return_mean"]


@pytest.mark.slow
def test_learners_reach_the_optimum_with_a_random_teammate(tmp_path: Path) -> None:
    """The QMIX paper's two-step setup with a third agent acting at random: the two learners still
    find the optimal joint policy (8) and its value, on every seed."""
    for seed in range(3):
        res = train(tmp_path / f"s{seed}", "+experiment=qmix_twostep3_random", "logger=[console]", f"seed={seed}")
        assert res.stats["test_return_mean"] == 8.0, seed
        q_2b = torch.tensor(res.q_tables[2]["q_tot"])
        assert res.q_tables[2]["agents"] == ["agent_0", "agent_1"]
        assert int(q_2b.argmax()) == 3 and abs(float(q_2b[1, 1]) - 8.0) < 0.5, q_2b


def test_agent_returns_are_the_sums_of_each_agents_own_rewards() -> None:
    """simple_spread's rewards differ per agent (local collision penalties): the adapter's
    per-agent returns are the sums of what PettingZoo gave each agent, with the same seed and actions."""
    import mpe2.simple_spread_v3 as spread

    from tests.test_adapters import _sync

    env = _sync("+env=pz_simple_spread", "env.agent_returns=true", "env.factory.local_ratio=0.9", n=1, seed=3)
    raw = spread.parallel_env(N=3, local_ratio=0.9, max_cycles=25, continuous_actions=False)
    raw.reset(seed=3)
    gen = torch.Generator().manual_seed(0)
    env.reset()
    sums = dict.fromkeys(raw.possible_agents, 0.0)
    team = 0.0
    for _ in range(25):
        acts = torch.randint(0, 5, (1, 3), generator=gen)
        _, rewards, _, _, _ = raw.step({a: int(x) for a, x in zip(raw.possible_agents, acts[0])})
        for a, r in rewards.items():
            sums[a] += r
        res = env.step(acts)
        team += float(res.reward[0])
    stats = env.episode_stats()
    env.close()
    got = {a: float(stats[f"agent_return/{a}"][0]) for a in raw.possible_agents}
    assert got == pytest.approx(sums, abs=1e-4)
    assert len({round(v, 3) for v in got.values()}) > 1  # the agents' returns really differ
    assert sum(got.values()) == pytest.approx(team, abs=1e-3)  # reward=sum: the team return is their sum
