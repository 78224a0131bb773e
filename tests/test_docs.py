"""The docs (README.md, docs/*.md) against the code: what they show must exist and be current.

- every ``+algo=``, ``+env=``, ``+experiment=``, ``+benchmark=``, ``+tune=`` option and every
  ``hydra/launcher=``/``hydra/sweeper=`` named in a page is an option Hydra can compose;
- every ``python -m <module>`` and ``make <target>`` shown exists;
- the option lists of the Config guide (docs/extending.md) are the files in ``conf/<group>/``, and
  the table of every env option (docs/environments.md) is the one :func:`env_table` generates
  from ``conf/env/`` (``python tests/test_docs.py`` prints it);
- the README's links resolve to files;
- every ``$ python -m runner ...`` in a ``text`` block is run, and each output line the page shows
  must be in what it prints (slow: one process per command).

The mkdocs build itself (links and anchors between pages) is ``make docs`` (``mkdocs build
--strict``), which CI runs.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# options named in the docs on purpose although conf/ does not have them: typos in examples of
# error messages, and the components that "Adding a learner, mixer or env" writes
EXAMPLES = {
    "algo": {"qmixx", "vdnx", "wvdn"},
    "env": {"coordination"},
    "mixer": {"weighted"},
}
# launchers and sweepers that come from Hydra plugins rather than conf/hydra/
PLUGINS = {
    "hydra/launcher": {"joblib", "submitit_local", "submitit_slurm", "ray"},  # ray: the ray extra
    "hydra/sweeper": {"optuna"},
}
GROUPS = ("algo", "env", "experiment", "benchmark", "tune", "mixer", "agent", "runner", "learner",
          "controller", "buffer", "logger")


def page_text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def conf_options(group: str) -> set[str]:
    return {p.stem for p in (ROOT / "conf" / group).glob("*.yaml")}


def _values(raw: str) -> list[str]:
    """The option names of an override value: ``qmix,vdn`` -> [qmix, vdn]; placeholders dropped."""
    out = []
    for v in raw.split(","):
        v = re.sub(r"<\w+>", "*", v.strip().strip("'\"`").rstrip(".:;"))  # epymarl_<algo> -> epymarl_*
        if not v or v == "*" or v in ("...", "X") or "$" in v or "{" in v:
            continue
        out.append(v)
    return out


def mentioned(group: str) -> dict[str, set[str]]:
    """Option (or glob pattern) -> the pages naming it, from ``+group=...`` and ``group=...``."""
    pat = re.compile(r"(?<![\w./])\+?" + re.escape(group) + r"=([\w*.,<>'\-|]+)")
    found: dict[str, set[str]] = {}
    for page in PAGES:
        for m in pat.finditer(page_text(page)):
            for v in (x for part in m.group(1).split("|") for x in _values(part)):
                found.setdefault(v, set()).add(page.name)
    return found


@pytest.mark.parametrize("group", ["algo", "env", "experiment", "benchmark", "tune"])
def test_plus_options_exist(group):
    have = conf_options(group)
    bad = {}
    for opt, pages in mentioned(group).items():
        if opt in EXAMPLES.get(group, set()):
            assert opt not in have, f"{group}={opt} is used as a made-up example but conf/{group}/ has it"
            continue
        ok = fnmatch.filter(have, opt) if "*" in opt else opt in have
        if not ok:
            bad[opt] = sorted(pages)
    assert not bad, f"options of '{group}' named in the docs but not in conf/{group}/: {bad}"


@pytest.mark.parametrize("group", ["hydra/launcher", "hydra/sweeper"])
def test_hydra_plugins_exist(group):
    have = conf_options(group) | PLUGINS[group]
    bad = {o: sorted(p) for o, p in mentioned(group).items() if o not in have}
    assert not bad, f"{group} options named in the docs that neither conf/ nor a plugin has: {bad}"


def test_plugin_launchers_are_installed():
    """The plugin launchers the docs name (but ray, an extra not in `make install`) are importable."""
    for mod in ("hydra_plugins.hydra_joblib_launcher", "hydra_plugins.hydra_submitit_launcher",
                "hydra_plugins.hydra_optuna_sweeper"):
        if importlib.util.find_spec("hydra_plugins") is None:
            pytest.skip("no Hydra plugins installed (the sweep extra)")
        assert importlib.util.find_spec(mod) is not None, mod


def test_python_modules_exist():
    bad = {}
    for page in PAGES:
        for m in re.finditer(r"python3? -m ([\w.]+)", page_text(page)):
            mod = m.group(1)
            if mod in ("venv", "pip", "pytest"):
                continue
            top = mod.split(".")[0]
            if top not in ("runner", "envs", "modules"):
                continue
            if importlib.util.find_spec(mod) is None:
                bad.setdefault(mod, set()).add(page.name)
    assert not bad, f"python -m modules named in the docs that do not exist: {bad}"


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-z][\w-]*):", text, re.M))


def test_make_targets_exist():
    have = make_targets()
    bad = {}
    for page in PAGES:
        for m in re.finditer(r"(?:^|`|&& |; )make ([a-z][\w-]*)", page_text(page), re.M):
            t = m.group(1)
            if t not in have:
                bad.setdefault(t, set()).add(page.name)
    assert not bad, f"make targets named in the docs that the Makefile lacks: {bad}"


def config_guide_rows() -> dict[str, str]:
    """group -> the options cell of the Config guide's table in docs/extending.md."""
    rows = {}
    for line in page_text(ROOT / "docs" / "extending.md").splitlines():
        m = re.match(r"\| `(\w+)` \| (.*?) \| ", line)
        if m and m.group(1) in GROUPS:
            rows[m.group(1)] = m.group(2)
    return rows


def test_config_guide_lists_every_option():
    rows = config_guide_rows()
    assert set(rows) == set(GROUPS) - {"tune"}, sorted(rows)
    for group, cell in rows.items():
        names = set(re.findall(r"`([\w*]+)`", cell))
        have = conf_options(group)
        covered = {o for o in have if any(fnmatch.fnmatch(o, n) for n in names)}
        assert covered == have, f"Config guide, group '{group}': conf/{group}/ also has {sorted(have - covered)}"
        dead = {n for n in names if not fnmatch.filter(have, n)}
        assert not dead, f"Config guide, group '{group}': no conf/{group}/ option for {sorted(dead)}"


def _parse(value: str):
    v = yaml.safe_load(value)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


def option_defaults(group: str) -> dict[str, list]:
    """key -> the values it has in the options of the group (each composed as the CLI does)."""
    from omegaconf import OmegaConf

    from runner.compose import compose_config

    values: dict[str, list] = {}
    options = sorted(conf_options(group))
    if group == "env":  # the row describes the envs themselves, not their presets
        options = [o for o in options if (yaml.safe_load((ROOT / "conf/env" / f"{o}.yaml").read_text()) or {}).get("name") == o]
    for opt in options:
        if group == "logger":
            base = ["+algo=qmix", "+env=twostep", f"logger=[{opt}]"]
        elif group == "env":
            base = ["+algo=qmix", f"+env={opt}"]
        elif opt in ("maven", "maven_learner", "noise_gru"):
            base = ["+algo=maven", "+env=mstep"]
        else:
            base = ["+algo=qmix", "+env=twostep", f"{group}={opt}"]
        cfg = compose_config(base)
        node = cfg.logger[opt] if group == "logger" else cfg[group]
        for k, v in OmegaConf.to_container(node, resolve=True).items():
            values.setdefault(k, []).append(v)
    return values


@pytest.mark.parametrize("group", ["learner", "mixer", "controller", "agent", "runner", "buffer", "logger", "env"])
def test_config_guide_defaults(group):
    """Every `key=value` of a group's row in the Config guide is the default of one of its options."""
    row = next(ln for ln in page_text(ROOT / "docs" / "extending.md").splitlines() if ln.startswith(f"| `{group}` |"))
    values = option_defaults(group)
    stale = []
    for key, value in re.findall(r"`(\w+)=([^`]+)`", row):
        if key not in values:
            continue
        want = _parse(value)
        if not any(v == want or _parse(str(v)) == want for v in values[key]):
            stale.append(f"{key}={value} (conf: {values[key][:5]})")
    assert not stale, f"Config guide, group '{group}': defaults that no option has: {stale}"


def test_config_guide_top_level_defaults():
    from omegaconf import OmegaConf

    from runner.compose import compose_config

    text = page_text(ROOT / "docs" / "extending.md")
    para = text[text.index("Top level (") :].split("\n\n")[0]
    cfg = OmegaConf.to_container(compose_config(["+algo=qmix", "+env=twostep"]), resolve=False)
    pairs = re.findall(r"`(\w+)=([^`]+)`", para)
    assert len(pairs) >= 15, pairs
    stale = [f"{k}={v} (conf: {cfg.get(k, 'no such key')})" for k, v in pairs
             if k != "algo_name" and cfg.get(k, "<missing>") != _parse(v) and str(cfg.get(k)) != v]
    assert not stale, f"Config guide, top level: {stale}"


SKIP = {"defaults", "name", "label", "t_max", "test_interval", "log_interval"}


def env_table() -> str:
    """The table of every ``+env=`` option, generated from conf/env/*.yaml."""
    lines = ["| `+env=` | env (`name`) | what it runs |", "|---|---|---|"]
    for path in sorted((ROOT / "conf" / "env").glob("*.yaml")):
        cfg = {k: v for k, v in (yaml.safe_load(path.read_text()) or {}).items() if v != "???"}
        what = ""
        if isinstance(cfg.get("factory"), dict):
            what = f"`{cfg['factory'].get('_target_')}`"
        elif cfg.get("key"):
            what = f"`{cfg['key']}`"
        elif cfg.get("network"):
            what = f"network `{cfg['network']}`"
        elif cfg.get("map_name"):
            cap = cfg.get("capability_config") or {}
            what = f"map `{cfg['map_name']}`, {cap.get('n_units')} v {cap.get('n_enemies')} units"
        elif cfg.get("name") in ("pettingzoo", "gymnasium", "routerl", "smacv2"):
            what = "the adapter alone: set its keys"
        else:  # the games of envs/: the keys the preset sets
            keys = [f"`{k}={v}`" for k, v in cfg.items() if k not in SKIP and not isinstance(v, (dict, list))]
            what = ", ".join(keys) or "defaults"
        lines.append(f"| `{path.stem}` | `{cfg.get('name')}` | {what} |")
    return "\n".join(lines) + "\n"


def test_env_table_is_current():
    text = page_text(ROOT / "docs" / "environments.md")
    m = re.search(r"<!-- env-table:start -->\n(.*?)<!-- env-table:end -->", text, re.S)
    assert m, "docs/environments.md lost its env-table markers"
    assert m.group(1).strip() == env_table().strip(), (
        "docs/environments.md: the env table is stale; `python tests/test_docs.py` prints the current one"
    )


def test_readme_links_resolve():
    text = page_text(ROOT / "README.md")
    bad = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target) or target.startswith("#"):
            continue
        path = target.split("#")[0]
        if not (ROOT / path).exists():
            bad.append(target)
    assert not bad, f"README.md links to missing files: {bad}"


def readme_as_index() -> str:
    """docs/index.md, the site's home: the README up to its table of pages, links made relative to docs/."""
    readme = page_text(ROOT / "README.md")
    head, rest = readme.split("## Documentation", 1)
    table = rest[rest.index("| page |") : rest.index("## Development")]
    text = head + "## The pages\n\n" + table.rstrip() + "\n"
    text += "\nBuild this site with `make docs` (`mkdocs build --strict` into `outputs/site/`).\n"
    return text.replace("](docs/", "](")


def test_index_is_the_readme():
    assert page_text(ROOT / "docs" / "index.md") == readme_as_index(), (
        "docs/index.md differs from the README: `python tests/test_docs.py --index` rewrites it"
    )


def test_layout_names_every_module():
    """docs/layout.md names every module and package of runner/, envs/ and modules/."""
    text = page_text(ROOT / "docs" / "layout.md")
    missing = []
    for pkg in ("runner", "envs", "modules"):
        for p in sorted((ROOT / pkg).iterdir()):
            if p.name.startswith((".", "__")) or p.suffix in (".pyc",) or p.name == "py.typed":
                continue
            if p.is_dir() and not (p / "__init__.py").exists():
                continue
            name = p.name if p.is_file() else p.name + "/"
            if not re.search(r"(?<![\w/])" + re.escape(name), text):
                missing.append(f"{pkg}/{name}")
    assert not missing, f"docs/layout.md does not mention: {missing}"


def test_bench_writes_its_table_into_performance_page(tmp_path):
    """`make bench` replaces the table between the markers of docs/performance.md, and only that."""
    from runner.tools.bench import update_docs

    page = tmp_path / "performance.md"
    original = page_text(ROOT / "docs" / "performance.md")
    page.write_text(original)
    assert update_docs("| new | table |\n", page)
    new = page.read_text()
    assert "| new | table |" in new and "<!-- bench:start -->" in new and "<!-- bench:end -->" in new
    before, after = original.split("<!-- bench:start -->")[0], original.split("<!-- bench:end -->")[1]
    assert new.startswith(before) and new.endswith(after)


def transcripts() -> list[tuple[str, str, list[str]]]:
    """(page, command, output lines shown) of every ``$ python -m runner ...`` in a text block."""
    out = []
    for page in PAGES:
        for block in re.findall(r"```text\n(.*?)```", page_text(page), re.S):
            cmd, shown = None, []
            for line in [*block.splitlines(), "$ "]:
                if line.startswith("$ "):
                    if cmd:
                        out.append((page.name, cmd, shown))
                    cmd = line[2:].strip() if line[2:].strip().startswith("python -m runner") else None
                    shown = []
                elif cmd and line.strip():
                    shown.append(line.strip())
    return out


@pytest.mark.slow
@pytest.mark.parametrize("page,cmd,shown", transcripts(), ids=lambda x: x if isinstance(x, str) else None)
def test_transcripts_are_real(page, cmd, shown, tmp_path):
    args = cmd.split()[3:]
    proc = subprocess.run(
        [sys.executable, "-m", "runner", *args, f"hydra.run.dir={tmp_path}/run",
         f"hydra.sweep.dir={tmp_path}/sweep"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    got = [ln.strip() for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    assert proc.returncode != 0, f"{page}: `{cmd}` is shown failing but exited 0"
    i = 0
    for line in shown:
        while i < len(got) and got[i] != line:
            i += 1
        assert i < len(got), f"{page}: `{cmd}` no longer prints (in this order):\n{line}\n--- it printed:\n" + "\n".join(got)


if __name__ == "__main__":
    if "--index" in sys.argv:
        (ROOT / "docs" / "index.md").write_text(readme_as_index())
    else:
        print(env_table(), end="")
