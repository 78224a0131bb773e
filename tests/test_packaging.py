"""The wheel: ``conf/`` ships in it (as ``hymarl_conf``), ``py.typed`` too, and the ``hymarl`` script of a
non-editable install runs from another directory, with no source checkout on its path."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

SOURCES = ("pyproject.toml", "README.md", "conf", "runner", "modules", "envs")


def test_py_typed_is_present() -> None:
    assert (ROOT / "runner" / "py.typed").is_file()


def test_conf_dir_is_the_checkouts_conf_here() -> None:
    from runner.paths import conf_dir

    assert conf_dir() == ROOT / "conf" and (conf_dir() / "config.yaml").is_file()


def test_the_package_list_in_pyproject_is_the_tree() -> None:
    """pyproject.toml lists the packages (so conf/ can ship as hymarl_conf): a new package or config group
    directory must be added there, or the wheel would miss it."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    code = {".".join(p.parent.relative_to(ROOT).parts) for top in ("runner", "modules", "envs")
            for p in (ROOT / top).rglob("__init__.py") if "__pycache__" not in p.parts}
    conf = {"hymarl_conf"} | {"hymarl_conf." + ".".join(d.relative_to(ROOT / "conf").parts)
                              for d in (ROOT / "conf").rglob("*") if d.is_dir() and any(d.glob("*.yaml"))}
    assert listed == code | conf


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """hymarl's wheel, built from a copy of the sources (no build/ left in the checkout) and installed
    with ``pip install --target`` (its dependencies are this venv's)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    r = subprocess.run([*pip, "wheel", str(src), "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    (whl,) = (tmp / "dist").glob("hymarl-*.whl")
    names = set(zipfile.ZipFile(whl).namelist())
    shipped = {n.removeprefix("hymarl_conf/") for n in names if n.startswith("hymarl_conf/")}
    assert shipped == {str(p.relative_to(ROOT / "conf")) for p in (ROOT / "conf").rglob("*.yaml")}
    assert "runner/py.typed" in names and "runner/paths.py" in names
    target = tmp / "site"
    r = subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(whl)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return target


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_installed_hymarl_script_runs_from_another_directory(installed: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # the wheel's packages come first on the path; this venv's editable finder (if any) comes after them
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PYTHON"))}
    env["PYTHONPATH"] = str(installed)
    probe = subprocess.run(
        [sys.executable, "-c", "import runner; from runner.paths import conf_dir; print(runner.__file__); print(conf_dir())"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert probe.returncode == 0, probe.stderr[-3000:]
    runner_file, conf = probe.stdout.split()
    # both from the wheel: a wheel without conf/ fails here (FileNotFoundError, or the checkout's conf/)
    assert Path(runner_file).is_relative_to(installed) and Path(conf) == installed / "hymarl_conf"
    r = subprocess.run([str(installed / "bin" / "hymarl"), "+algo=qmix", "+env=twostep", "t_max=200", "progress=false"],
                       cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert list((elsewhere / "outputs" / "runs").glob("*/*/.hydra/config.yaml"))
    assert (elsewhere / "outputs" / "mlflow.db").is_file()
    missing = subprocess.run([str(installed / "bin" / "hymarl"), "+env=twostep"], cwd=elsewhere, env=env,
                             capture_output=True, text=True, timeout=300)
    assert missing.returncode != 0
    assert "Available options in 'algo': " in missing.stderr and "qmix" in missing.stderr  # the wheel's conf/algo
