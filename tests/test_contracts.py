"""The declared contracts between components (runner/contracts.py): every registered part declares
what it provides and requires, the combination is checked before anything is built, and the
default run goes through the same team of agent groups as a run with ``groups``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from runner import contracts, registry
from runner.build import build
from runner.config import check_combination, validate
from runner.contracts import CAPABILITIES, Buffer, Controller, Learner, Logger, Runner, check_parts
from runner.controllers.grouped import GroupedController
from runner.errors import ConfigError
from runner.policies import ScriptedPolicy
from tests.conftest import compose

ROOT = Path(__file__).resolve().parent.parent
BASES = {"controller": Controller, "learner": Learner, "buffer": Buffer, "runner": Runner, "logger": Logger}


@pytest.mark.parametrize("kind", sorted(registry.ALL))
def test_every_registered_part_declares_its_contract(kind: str) -> None:
    for name, cls, _cfg in registry.ALL[kind].items():
        what = f"{kind} '{name}'"
        assert isinstance(cls.provides, frozenset) and isinstance(cls.requires, frozenset), what
        assert set(cls.provides) | set(cls.requires) <= set(CAPABILITIES), what
        if kind != "env":  # env configs have required keys (env.key, ...): their checks run in test_config
            assert isinstance(cls.check_config(_own_defaults(kind, name)), list), what
        if kind in BASES:
            assert issubclass(cls, BASES[kind]), f"{what} does not subclass runner.contracts.{BASES[kind].__name__}"
        if kind == "env":
            assert isinstance(cls.natively_batched, bool) and isinstance(cls.reports_agent_returns, bool), what
        if kind == "agent":
            assert isinstance(cls.recurrent, bool) and isinstance(cls.conditioned, bool), what
        if kind == "mixer":
            assert isinstance(cls.joint, bool), what


def _own_defaults(kind: str, name: str):
    """The component's own config node with its defaults (what check_config receives)."""
    from omegaconf import OmegaConf

    cfg_cls = registry.ALL[kind].config_class(name)
    node = OmegaConf.structured(cfg_cls)
    return node


def test_no_component_probes_another() -> None:
    """Components talk through runner.contracts, not hasattr/getattr (tools and tracking inspect
    third-party objects; env adapters inspect the wrapped third-party envs)."""
    probe = re.compile(r"\b(hasattr|getattr)\(")
    core = [p for p in (ROOT / "runner").rglob("*.py") if not {"tools", "tracking"} & set(p.parts)]
    core += list((ROOT / "modules").rglob("*.py"))
    found = [f"{p.relative_to(ROOT)}:{i}" for p in core for i, line in enumerate(p.read_text().splitlines(), 1)
             if probe.search(line.split("#")[0]) and "``" not in line]
    assert found == []


def test_a_missing_capability_names_the_parts_and_the_providers(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = compose("+algo=qmix", "+env=twostep")
    chosen = {g: (cfg[g].name, registry.ALL[g].get(cfg[g].name)) for g in contracts.GROUPS}

    class OnPolicyLearner(Learner):
        requires = frozenset({contracts.ON_POLICY.name})

    chosen["learner"] = ("ppo_test", OnPolicyLearner)
    assert check_parts(chosen, registry.ALL) == [
        "learner=ppo_test needs the episodes of the latest rollout only (on-policy data): buffer=rollout "
        "(got buffer='episode_replay')"
    ]
    # a capability that no registered part provides says so
    monkeypatch.setitem(contracts.CAPABILITIES, "telepathy", contracts.Capability("telepathy", "buffer", "a telepathic buffer"))

    class TelepathicLearner(Learner):
        requires = frozenset({"telepathy"})

    chosen["learner"] = ("telepathic", TelepathicLearner)
    assert check_parts(chosen, registry.ALL) == [
        "learner=telepathic needs a telepathic buffer: no registered buffer provides it (got buffer='episode_replay')"
    ]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("+algo=maven", "+env=twostep", "agent=gru"),
         "controller=maven needs a latent-conditioned agent: agent=noise_gru (got agent='gru')"),
        (("+algo=qmix", "+env=twostep", "agent=noise_gru"),
         "agent=noise_gru needs a latent z drawn per episode: controller=maven (got controller='basic')"),
        (("+algo=qmix", "+env=twostep", "buffer.buffer_size=16"),
         "learner.batch_size=32 is invalid: larger than buffer.buffer_size=16"),
        (("+algo=qmix", "+env=twostep", "runner=parallel", "runner.n_envs=64", "buffer.buffer_size=40", "learner.batch_size=8"),
         "runner.n_envs=64 is invalid: larger than buffer.buffer_size=40"),
        (("+algo=maven", "+env=twostep", "groups=per_agent"),
         "groups are not supported with controller 'maven': it acts for the whole team (use controller=basic, e.g. +algo=qmix)"),
    ],
)
def test_combinations_are_refused_before_anything_is_built(overrides: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate(compose(*overrides))
    assert message in str(err.value)


def test_the_shipped_algorithms_fit_together() -> None:
    for algo in ("iql", "vdn", "qmix", "maven"):
        assert check_combination(compose(f"+algo={algo}", "+env=twostep")) == [], algo


def test_a_run_without_groups_is_the_team_of_one_group() -> None:
    plain = build(compose("+algo=qmix", "+env=twostep", "logger=[]"), torch.device("cpu"))
    explicit = build(compose("+algo=qmix", "+env=twostep", "logger=[]", "groups=all"), torch.device("cpu"))
    try:
        for comps in (plain, explicit):
            assert isinstance(comps.controller, GroupedController)
            assert [g.name for g in comps.controller.groups] == ["all"] and comps.controller.whole
            assert comps.controller.learn_idx is None and comps.controller.learn_positions == {}
        # the learner's checkpoint layout is as before: the one network without groups, by group name with them
        assert not isinstance(plain.controller.agent, nn.ModuleDict)
        assert not any(k.startswith("all.") for k in plain.learner.state_dict()["modules"]["agent"])
        assert list(explicit.controller.agent) == ["all"]
        # the same network and the same values, whichever way the group was given
        explicit.controller.agent["all"].load_state_dict(plain.controller.agent.state_dict())
        obs = torch.eye(3).unsqueeze(1).expand(-1, 2, -1)
        assert torch.equal(plain.controller.q_values(obs), explicit.controller.q_values(obs))
    finally:
        plain.runner.close()
        explicit.runner.close()


def test_scripted_policies_reset_through_the_contract() -> None:
    calls: list[int] = []

    class Counting(ScriptedPolicy):
        def __call__(self, obs, avail, t):
            return avail.long().argmax(-1)

        def reset(self, batch_size: int) -> None:
            calls.append(batch_size)

    policy = Counting()
    assert ScriptedPolicy.wrap(policy) is policy
    ScriptedPolicy.wrap(policy).reset(4)
    plain = ScriptedPolicy.wrap(lambda obs, avail, t: avail.long().argmax(-1))
    plain.reset(4)  # a plain callable: nothing to reset
    avail = torch.tensor([[[False, True]]])
    assert calls == [4] and plain(None, avail, 0).tolist() == [[1]]


@pytest.mark.parametrize("algo", sorted(p.stem for p in (ROOT / "conf" / "algo").glob("*.yaml")))
@pytest.mark.parametrize("env", ["twostep", "climbing"])
def test_every_algorithm_trains_one_step_on_every_matrix_game(algo: str, env: str) -> None:
    """The train-step matrix: every algo preset (learner, mixer, controller and agent from the
    registries) builds, rolls out, stores and takes one finite gradient step; the loss and Q tables
    have the shapes the env gives."""
    cfg = compose(f"+algo={algo}", f"+env={env}", "logger=[]", "runner=parallel", "runner.n_envs=4",
                  "learner.batch_size=4")
    validate(cfg)
    comps = build(cfg, torch.device("cpu"))
    try:
        rollout = comps.runner.run(0, test_mode=False)
        assert rollout.batch["actions"].shape[:1] == (4,) and rollout.returns.shape == (4,)
        comps.buffer.insert(rollout.batch)
        stats = comps.learner.train(comps.buffer.sample(4), rollout.steps, episodes=4)
        losses = ({"loss", "grad_norm"}, {"pg_loss", "value_loss", "entropy"}, {"critic_loss", "actor_loss"})  # value, PPO, DDPG
        assert any(keys <= set(stats) for keys in losses), sorted(stats)
        assert all(torch.isfinite(torch.tensor(v)) for v in stats.values())
        points = comps.env.q_points() if comps.controller.supports_q_tables else []  # MAVEN: Q depends on z
        for point in points:
            table = comps.learner.q_table(point.obs, point.state, point.avail_actions)
            if table is None:
                continue
            n, a = comps.spec.n_agents, comps.spec.n_actions
            assert torch.tensor(table["agent_q"]).shape == (n, a)
            for key in ("q_tot", "q_jt", "q_central"):
                if key in table:
                    assert torch.tensor(table[key]).shape == (a,) * n, key
    finally:
        comps.runner.close()
