"""Config composition, registry <-> yaml correspondence, and clear errors for bad input."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigAttributeError, ValidationError

from runner import registry
from runner.checkpoint import CheckpointError
from runner.config import ConfigError, available_options, check_required_groups
from tests.conftest import ROOT, cli, compose, runs_of, train

CONF = ROOT / "conf"
BASE = ["+algo=qmix", "+env=twostep"]


@pytest.mark.parametrize("kind", sorted(registry.ALL))
def test_yaml_file_names_equal_registry_keys(kind: str) -> None:
    files = {p.stem for p in (CONF / kind).glob("*.yaml")}
    keys = {n for n in registry.ALL[kind].names() if not n.startswith("_")}
    presets = set()
    if kind == "env":  # env presets: one adapter (pettingzoo, gymnasium, smacv2), many envs
        for name in files - keys:
            node = yaml.safe_load((CONF / kind / f"{name}.yaml").read_text())
            assert node["name"] in keys, f"conf/env/{name}.yaml: name {node['name']} is not a registered env"
            assert node.get("label") == name, f"conf/env/{name}.yaml is a preset: it must set label: {name}"
            presets.add(name)
    # names starting with "_" are private registrations (the tests' own fakes), not config options
    assert files - presets == keys
    for name in files - presets:
        text = (CONF / kind / f"{name}.yaml").read_text()
        assert yaml.safe_load(text)["name"] == name, f"conf/{kind}/{name}.yaml must set name: {name}"
        assert f"/schema/{kind}@_here_: {name}" in text, f"conf/{kind}/{name}.yaml must start from its schema"


@pytest.mark.parametrize(("option", "key"), [("gymnasium", "env.key"), ("pettingzoo", "env.factory")])
def test_generic_adapter_without_its_env_is_refused(option: str, key: str) -> None:
    from runner.config import validate

    with pytest.raises(ConfigError) as err:
        validate(compose("+algo=qmix", f"+env={option}"))
    assert str(err.value) == (
        f"invalid config:\n  {key} is required: set {key}=<value> (the chosen options leave it unset)"
    )


# options valid only with their algorithm's other parts (runner.contracts capabilities; the tests of
# each algorithm check the errors): the algo preset and env to compose them with
NEEDS_ALGO = {("agent", "noise_gru"): ("maven", "mstep"), ("controller", "maven"): ("maven", "mstep"),
              ("learner", "maven_learner"): ("maven", "mstep"), ("learner", "qplex_learner"): ("qplex", "twostep"),
              ("mixer", "qplex"): ("qplex", "twostep"), ("learner", "qtran_learner"): ("qtran", "twostep"),
              ("learner", "ippo_learner"): ("ippo", "twostep"), ("learner", "mappo_learner"): ("mappo", "twostep"),
              ("controller", "stochastic"): ("ippo", "twostep"), ("buffer", "rollout"): ("ippo", "twostep"),
              ("learner", "maddpg_learner"): ("maddpg", "twostep"), ("learner", "matd3_learner"): ("matd3", "twostep"),
              ("controller", "deterministic"): ("maddpg", "twostep"),
              ("buffer", "transition_replay"): ("maddpg", "twostep", "agent=mlp")}  # a GRU needs whole episodes
# env presets with continuous actions
CONTINUOUS_ENVS = ("point_game", "pz_simple_spread_continuous", "pz_simple_speaker_listener_continuous")
# generic adapter options leave the env to the user
NEEDS_VALUE = {
    ("env", "gymnasium"): ["env.key=lbforaging:Foraging-8x8-2p-3f-v3"],
    ("env", "pettingzoo"): ["env.factory={_target_: mpe2.simple_spread_v3.parallel_env, continuous_actions: false}"],
    ("env", "smacv2"): ["env.map_name=10gen_zerg", "env.capability_config={n_units: 5, n_enemies: 5}"],
}


def _options() -> list[tuple[str, str]]:
    out = []
    for group in sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name not in ("hydra",)):
        for f in sorted((CONF / group).glob("*.yaml")):
            out.append((group, f.stem))
    return out


@pytest.mark.parametrize(("group", "option"), _options())
def test_every_option_of_every_group_composes(group: str, option: str) -> None:
    if group == "experiment":
        overrides = [f"+experiment={option}"]
        if option.startswith("epymarl_"):  # EPyMARL's algorithm presets: the task is an env preset
            overrides.append("+env=epymarl_climbing")
        if option == "qmix_tuned":  # pymarl2's QMIX: the task is an env preset
            overrides.append("+env=lbf")
        if option == "mappo_paper":  # the MAPPO paper's code defaults: the task is an env preset
            overrides.append("+env=twostep")
    elif group == "benchmark":  # a job of the benchmark (test_benchmark composes every job)
        overrides = [f"+benchmark={option}", "+experiment=epymarl_qmix", "+env=epymarl_climbing"]
    elif group == "tune":  # Optuna presets (they select hydra/sweeper=optuna; test_sweep runs one)
        overrides = [*BASE, f"+tune={option}"]
    elif group in ("algo", "env"):
        overrides = ["+algo=qmix", "+env=twostep"]
        overrides[0 if group == "algo" else 1] = f"+{group}={option}"
        if group == "env" and option in CONTINUOUS_ENVS:  # QMIX needs discrete actions: an actor-critic runs them
            overrides[0] = "+algo=maddpg"
    elif group == "logger":
        overrides = [*BASE, f"logger=[{option}]"]
    elif (group, option) in NEEDS_ALGO:
        algo, env, *extra = NEEDS_ALGO[group, option]
        overrides = [f"+algo={algo}", f"+env={env}", f"{group}={option}", *extra]
    else:
        overrides = [*BASE, f"{group}={option}"]
    cfg = compose(*overrides, *NEEDS_VALUE.get((group, option), []))
    from omegaconf import OmegaConf

    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["t_max"] > 0
    if group in registry.ALL and group != "logger":
        assert cfg[group].name == option or (group == "env" and cfg.env.label == option)
    from runner.config import validate

    if cfg.env.name == "smacv2":  # tests/test_smacv2.py validates these against the fake smacv2
        from envs.smacv2 import missing_requirements, requirements_error

        if missing_requirements():
            with pytest.raises(ConfigError, match=re.escape(requirements_error(missing_requirements()))):
                validate(cfg)
            return
    if cfg.env.name == "routerl":  # tests/test_routerl.py validates these in .venv-routerl
        try:
            import routerl  # noqa: F401
        except ImportError:
            with pytest.raises(ConfigError, match="RouteRL is not installed in this environment"):
                validate(cfg)
            return
    validate(cfg)


def test_presets_pin_the_paper_setup() -> None:
    cfg = compose("+experiment=qmix_twostep")
    assert (cfg.algo_name, cfg.env.name, cfg.mixer.name) == ("qmix", "twostep", "qmix")
    assert cfg.controller.epsilon_start == cfg.controller.epsilon_finish == 1.0
    assert (cfg.mixer.embed_dim, cfg.agent.hidden_dim, cfg.learner.gamma) == (8, 64, 0.99)
    assert cfg.t_max == 10_000  # 5,000 two-step episodes


def test_env_sets_the_default_budget_and_cli_overrides_it() -> None:
    assert compose(*BASE).t_max == 10_000
    assert compose(*BASE, "t_max=123").t_max == 123


@pytest.mark.slow
def test_cfg_job_prints_the_composed_config(tmp_path: Path) -> None:
    out = cli([*BASE, "--cfg", "job"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    printed = yaml.safe_load(out.stdout)
    assert printed["mixer"]["name"] == "qmix" and printed["env"]["name"] == "twostep"
    assert printed["learner"]["lr"] == 0.0005


# -- bad input: clear message, non-zero exit, no run created -------------------------------------


def test_missing_algo_lists_the_options(tmp_path: Path, store_uri: str) -> None:
    out = cli(["+env=twostep"], cwd=tmp_path, store_uri=store_uri)
    assert out.returncode == 2
    assert f"missing +algo=<option>. Available options in 'algo': {', '.join(available_options('algo'))}" in out.stderr
    assert {"iql", "vdn", "qmix", "maven", "qtran", "qplex", "ow_qmix", "cw_qmix"} <= set(available_options("algo"))


def test_missing_env_lists_the_options() -> None:
    with pytest.raises(ConfigError) as e:
        check_required_groups({"algo": "qmix"})
    assert f"missing +env=<option>. Available options in 'env': {', '.join(available_options('env'))}" in str(e.value)
    assert "climbing" in available_options("env") and "twostep" in available_options("env")


@pytest.mark.slow
def test_unknown_algo_option_lists_available(tmp_path: Path) -> None:
    out = cli(["+algo=qmx", "+env=twostep"], cwd=tmp_path)
    assert out.returncode != 0
    assert "Could not find 'algo/qmx'" in out.stderr
    assert "Available options in 'algo':\n\t" + "\n\t".join(available_options("algo")) in out.stderr


def test_unknown_env_option_lists_available() -> None:
    with pytest.raises(ConfigCompositionException) as e:
        compose("+algo=qmix", "+env=twostp")
    assert "Could not find 'env/twostp'" in str(e.value)
    assert "\ttwostep" in str(e.value)


def test_unknown_key_is_named() -> None:
    with pytest.raises(ConfigCompositionException) as e:
        compose(*BASE, "learner.lrr=0.1")
    cause = e.value.__cause__
    assert isinstance(cause, ConfigAttributeError) and "Key 'lrr' not in 'QLearnerConfig'" in str(cause)


def test_unknown_top_level_key_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown top-level key 'sed'"):
        train(tmp_path, *BASE, "+sed=3")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+learner.lrr=1e-3", "unknown key 'learner.lrr' for learner 'q_learner'. Valid keys: batch_size, double_q,"),
        ("+env.payof=1", "unknown key 'env.payof' for env 'twostep'. Valid keys: bystanders, label, log_interval, name, payoff_2a,"),
        ("+logger.mlflow.uri=x", "unknown key 'logger.mlflow.uri' for logger 'mlflow'. Valid keys: experiment_name,"),
    ],
)
def test_keys_appended_to_a_group_must_exist(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        train(tmp_path, *BASE, override)
    assert message in str(e.value)


@pytest.mark.slow
def test_refused_run_leaves_no_run_dir(tmp_path: Path) -> None:
    out = cli([*BASE, "learner.gamma=2", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert out.returncode == 2 and "learner.gamma=2.0 is invalid" in out.stderr
    assert not (tmp_path / "run").exists()


def test_wrong_type_is_named() -> None:
    with pytest.raises(ConfigCompositionException) as e:
        compose(*BASE, "mixer.embed_dim=wide")
    assert isinstance(e.value.__cause__, ValidationError)
    assert "Value 'wide' of type 'str' could not be converted to Integer" in str(e.value.__cause__)


@pytest.mark.parametrize(
    ("override", "valid"),
    [
        ("learner.optimizer=sgd", "[adam, rmsprop]"),
        ("learner.target_update=polyak", "[hard, soft]"),
        ("controller.epsilon_schedule=cosine", "[linear, exp]"),
    ],
)
def test_enum_options_are_checked_by_hydra(override: str, valid: str) -> None:
    """optimizer, target_update and epsilon_schedule are Enum fields: a bad name is a composition
    error that names the key and lists the valid names."""
    key, value = override.split("=")
    with pytest.raises(ConfigCompositionException) as e:
        compose(*BASE, override)
    cause = e.value.__cause__
    assert isinstance(cause, ValidationError)
    assert f"Invalid value '{value}', expected one of {valid}" in str(cause)
    assert f"full_key: {key}" in str(cause)


def test_enum_options_keep_their_names() -> None:
    """The names are what the yaml, MLflow params and checkpoints hold; str-valued, so they compare equal."""
    from omegaconf import OmegaConf

    from runner.controllers.schedules import EpsilonSchedule
    from runner.learners.base import Optimizer, TargetUpdate

    cfg = compose(*BASE, "learner.optimizer=rmsprop", "learner.target_update=soft", "controller.epsilon_schedule=exp")
    assert cfg.learner.optimizer is Optimizer.rmsprop and cfg.learner.optimizer == "rmsprop"
    assert cfg.learner.target_update is TargetUpdate.soft and cfg.controller.epsilon_schedule is EpsilonSchedule.exp
    plain = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    assert (plain["learner"]["optimizer"], plain["learner"]["target_update"], plain["controller"]["epsilon_schedule"]) == (
        "rmsprop", "soft", "exp")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("learner.lr=0", "learner.lr=0.0 is invalid: must be > 0"),
        ("learner.lr=-1e-3", "learner.lr=-0.001 is invalid: must be > 0"),
        ("controller.epsilon_start=1.5", "controller.epsilon_start=1.5 is invalid: must be in [0.0, 1.0]"),
        ("controller.epsilon_finish=-0.1", "controller.epsilon_finish=-0.1 is invalid: must be in [0.0, 1.0]"),
        ("learner.gamma=0", "learner.gamma=0.0 is invalid: must be in (0.0, 1.0]"),
        ("learner.gamma=1.01", "learner.gamma=1.01 is invalid: must be in (0.0, 1.0]"),
        ("buffer.buffer_size=16", "learner.batch_size=32 is invalid: larger than buffer.buffer_size=16"),
        ("mixer.hypernet_layers=3", "mixer.hypernet_layers=3 is invalid: must be 1 or 2"),
        ("t_max=0", "t_max=0 is invalid: must be > 0"),
        ("env.payoff_2b=[[1,2,3]]", "env.payoff_2b=[[1, 2, 3]] is invalid: must be a 2x2 matrix of numbers"),
    ],
)
def test_invalid_values_fail_before_a_run_is_created(
    tmp_path: Path, store, exp_name: str, override: str, message: str
) -> None:
    with pytest.raises(ConfigError) as e:
        train(tmp_path, *BASE, override, f"logger.mlflow.experiment_name={exp_name}")
    assert message in str(e.value)
    assert runs_of(store, exp_name) == []


@pytest.mark.slow
def test_invalid_value_exits_non_zero_from_the_cli(tmp_path: Path, store_uri: str, store, exp_name: str) -> None:
    out = cli([*BASE, "learner.lr=0", f"logger.mlflow.experiment_name={exp_name}"], cwd=tmp_path, store_uri=store_uri)
    assert out.returncode == 2
    assert "Error: invalid config:\n  learner.lr=0.0 is invalid: must be > 0" in out.stderr
    assert runs_of(store, exp_name) == []


def test_bad_matrix_payoff_is_explained(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"env.payoff=\[\[1, 2\], \[3\]\] is invalid: must be nested lists"):
        train(tmp_path, "+algo=qmix", "+env=matrix", "env.payoff=[[1,2],[3]]")


def test_missing_checkpoint(tmp_path: Path, store, exp_name: str) -> None:
    missing = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError, match=f"checkpoint not found: {missing} does not exist"):
        train(tmp_path, *BASE, "evaluate=true", f"checkpoint={missing}", f"logger.mlflow.experiment_name={exp_name}")
    assert runs_of(store, exp_name) == []


def test_corrupt_checkpoint(tmp_path: Path, store, exp_name: str) -> None:
    bad = tmp_path / "step_10.pt"
    bad.write_bytes(b"\x80\x04 definitely not a checkpoint")
    with pytest.raises(CheckpointError, match=f"checkpoint {bad} is corrupt or not a hymarl checkpoint"):
        train(tmp_path, *BASE, "evaluate=true", f"checkpoint={bad}", f"logger.mlflow.experiment_name={exp_name}")
    assert runs_of(store, exp_name) == []


def test_evaluate_needs_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="checkpoint=None is invalid: evaluate=true needs checkpoint=<path>"):
        train(tmp_path, *BASE, "evaluate=true")


def test_registry_lookup_names_the_options() -> None:
    with pytest.raises(KeyError) as e:
        registry.MIXERS.get("qmixx")
    assert str(e.value) == "unknown mixer 'qmixx'. Available mixers: none, qmix, qplex, vdn"


# --- issue 14, item 7: clear refusals before any run exists ----------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("runner.n_envs=4", "runner.n_envs=4 is invalid: the episode runner (runner=episode, the default) steps one env "
                            "copy; for 4 copies use runner=parallel runner.n_envs=4"),
        ("runner.n_workers=2", "runner.n_workers=2 is invalid: the episode runner (runner=episode, the default) steps "
                               "its one env copy in this process; for worker processes use runner=parallel "
                               "runner.n_workers=2"),
    ],
)
def test_parallel_keys_without_the_parallel_runner_say_how_to_get_it(
    tmp_path: Path, store, exp_name: str, override: str, message: str
) -> None:
    with pytest.raises(ConfigError) as e:
        train(tmp_path, *BASE, override, f"logger.mlflow.experiment_name={exp_name}")
    assert str(e.value) == f"invalid config:\n  {message}"
    assert runs_of(store, exp_name) == []
    # the same keys at their only values (1 copy, in this process) are fine, and parallel takes them
    assert compose(*BASE, "runner.n_envs=1", "runner.n_workers=0").runner.n_envs == 1
    assert compose(*BASE, "runner=parallel", override).runner.name == "parallel"


@pytest.mark.slow
def test_n_envs_without_runner_parallel_on_the_cli(tmp_path: Path) -> None:
    out = cli([*BASE, "runner.n_envs=4", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().endswith("for 4 copies use runner=parallel runner.n_envs=4")
    assert "+runner.n_envs" not in out.stderr  # Hydra's misleading hint is gone
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "logger.mlflow.experiment_name='' is invalid: must be a non-empty name (the MLflow experiment the runs "
             "are filed under; default 'hymarl')"),
        ("'   '", "logger.mlflow.experiment_name='   ' is invalid: must be a non-empty name (the MLflow experiment the "
                "runs are filed under; default 'hymarl')"),
        ("x" * 501, f"logger.mlflow.experiment_name={'x' * 40!r}... is invalid: 501 characters, MLflow allows at most 500"),
    ],
)
def test_invalid_mlflow_experiment_name_is_a_config_error(tmp_path: Path, store, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        train(tmp_path, *BASE, f"logger.mlflow.experiment_name={value}")
    assert str(e.value) == f"invalid config:\n  {message}"


@pytest.mark.slow
def test_empty_mlflow_experiment_name_on_the_cli(tmp_path: Path, store_uri: str) -> None:
    out = cli([*BASE, "logger.mlflow.experiment_name=", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path,
              store_uri=store_uri)
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "Error: invalid config:\n  logger.mlflow.experiment_name='' is invalid: must be a non-empty name (the MLflow "
        "experiment the runs are filed under; default 'hymarl')"
    )
    assert not (tmp_path / "run").exists()


def test_a_replay_buffer_that_cannot_fit_is_refused_before_it_is_allocated(
    tmp_path: Path, store, exp_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runner import build

    monkeypatch.setattr(build, "available_memory", lambda device: (2 * 10**9, "MemAvailable in /proc/meminfo"))
    with pytest.raises(ConfigError) as e:  # 144 GB: torch would fail (or swap) if it were allocated
        train(tmp_path, *BASE, "buffer.buffer_size=1000000000", f"logger.mlflow.experiment_name={exp_name}")
    assert str(e.value) == (
        "buffer.buffer_size=1000000000 is invalid: the replay buffer needs about 144.00 GB (1,000,000,000 episodes "
        "of 3 steps x 48 bytes), more than the 2.00 GB of memory available on cpu (MemAvailable in /proc/meminfo). "
        "Lower buffer.buffer_size"
    )
    assert runs_of(store, exp_name) == []


def test_many_env_copies_that_cannot_fit_are_refused_before_they_are_created(
    tmp_path: Path, store, exp_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from envs import vector
    from runner import build

    monkeypatch.setattr(build, "available_memory", lambda device: (10**9, "MemAvailable in /proc/meminfo"))
    monkeypatch.setattr(vector.SubprocVecEnv, "__init__", lambda *a, **k: pytest.fail("env copies were created"))
    with pytest.raises(ConfigError) as e:
        train(tmp_path, "+algo=qmix", "+env=lbf", "runner=parallel", "runner.n_envs=2000", "buffer.buffer_size=100000",
              f"logger.mlflow.experiment_name={exp_name}")
    assert str(e.value) == (
        "buffer.buffer_size=100000 is invalid: the replay buffer needs about 1.33 GB (100,000 episodes of 51 steps "
        "x 260 bytes) and a rollout batch of runner.n_envs=2000 env copies 0.03 GB: 1.35 GB, more than the 1.00 GB "
        "of memory available on cpu (MemAvailable in /proc/meminfo). Lower buffer.buffer_size, runner.n_envs or "
        "env.episode_limit"
    )
    assert runs_of(store, exp_name) == []


def test_available_memory_reads_memavailable() -> None:
    import torch

    from runner.build import available_memory

    avail = available_memory(torch.device("cpu"))
    if not Path("/proc/meminfo").is_file():
        assert avail is None
        return
    kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
              if line.startswith("MemAvailable:"))
    assert avail is not None and avail[1] == "MemAvailable in /proc/meminfo"
    assert abs(avail[0] - kb * 1024) < 2**30  # read a moment apart
