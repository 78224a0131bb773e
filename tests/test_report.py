"""runner.tools.report: the statistics, the files it writes, run selection, --parent artifacts and the CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from runner.tools import report
from runner.tools.report import (
    align_curves,
    bootstrap_ci,
    history_points,
    iqm,
    log_report,
    median_steps,
    select_runs,
    steps_to_threshold,
    write_report,
)

ROOT = Path(__file__).resolve().parent.parent
STEPS = [0, 100, 200, 300]
# env "grid": qmix, 4 seeds on steps 0..300; finals 6, 10, 2, 30 -> mean 12, IQM mean(6, 10) = 8
QMIX = {"0": [0, 2, 4, 6], "1": [0, 4, 8, 10], "2": [0, 1, 2, 2], "3": [0, 8, 9, 30]}
# vdn, 2 seeds on different steps; finals 5, 5 -> the CI is the point [5, 5]
VDN = {"0": ([0, 150, 300], [0, 5, 5]), "1": ([0, 100, 250], [0, 5, 5])}


def make_run(
    client: MlflowClient,
    exp_id: str,
    algo: str,
    env: str,
    seed: str,
    steps: list[int],
    values: list[float],
    mode: str = "train",
    parent: str | None = None,
    status: str = "FINISHED",
    metric: str = "test_return_mean",
    start_time: int | None = None,
) -> str:
    tags = {"algo": algo, "env": env, "seed": seed, "mode": mode}
    if parent:
        tags["mlflow.parentRunId"] = parent
    run_id = client.create_run(exp_id, tags=tags, run_name=f"{algo}-{env}-s{seed}", start_time=start_time).info.run_id
    metrics = [Metric(metric, float(v), 1_000 + i, s) for i, (s, v) in enumerate(zip(steps, values))]
    if metrics:
        client.log_batch(run_id, metrics=metrics, synchronous=True)
    client.set_terminated(run_id, status=status)
    return run_id


def make_grid_runs(client: MlflowClient, exp_id: str, parent: str | None = None) -> None:
    for seed, values in QMIX.items():
        make_run(client, exp_id, "qmix", "grid", seed, STEPS, values, parent=parent)
    for seed, (steps, values) in VDN.items():
        make_run(client, exp_id, "vdn", "grid", seed, steps, values, parent=parent)


def run_cli(args: list[str], cwd: Path, store_uri: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": store_uri, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "runner.tools", "report", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


# --- pure statistics --------------------------------------------------------------------------------------


def test_iqm_trims_floor_n_over_4_from_each_end() -> None:
    assert iqm([5.0]) == 5.0
    assert iqm([5.0, 1.0, 3.0]) == 3.0  # n < 4: the plain mean
    assert iqm([30.0, 2.0, 10.0, 6.0]) == 8.0  # n = 4: mean of the middle 2
    assert iqm([1, 2, 3, 4, 100]) == 3.0  # n = 5: one from each end
    assert iqm(list(range(1, 9))) == 4.5  # n = 8: two from each end -> mean(3, 4, 5, 6)
    assert iqm([-50, 1, 2, 3, 4, 5, 6, 7, 8, 900]) == 4.5  # n = 10: two from each end
    with pytest.raises(ValueError):
        iqm([])


def test_bootstrap_ci_is_deterministic_contains_the_mean_and_collapses_for_equal_values() -> None:
    values = [6.0, 10.0, 2.0, 30.0]
    lo, hi = bootstrap_ci(values)
    assert (lo, hi) == bootstrap_ci(values)
    assert lo < np.mean(values) < hi
    assert lo >= 2.0 and hi <= 30.0
    assert bootstrap_ci([0.1, 0.1, 0.1]) == (np.mean([0.1, 0.1, 0.1]),) * 2
    assert bootstrap_ci([7.0]) == (7.0, 7.0)
    # a wider spread gives a wider interval
    lo2, hi2 = bootstrap_ci([v * 10 for v in values])
    assert hi2 - lo2 == pytest.approx(10 * (hi - lo))


def test_steps_to_threshold_and_median_over_all_runs() -> None:
    pts = [(0, 0.0), (100, 4.0), (200, 8.0), (300, 6.0)]
    assert steps_to_threshold(pts, 5.0) == 200
    assert steps_to_threshold(pts, 8.0) == 200  # >=
    assert steps_to_threshold(pts, 0.0) == 0
    assert steps_to_threshold(pts, 8.5) is None
    assert median_steps([300, 200, None, 100]) == 250.0
    assert median_steps([100, None, 300]) == 300.0
    assert median_steps([100, None, None]) is None
    assert median_steps([100, 200, None, None]) is None  # the middle pair includes an unreached run
    assert median_steps([]) is None


def test_align_curves_uses_the_common_grid_and_the_last_value_at_or_before() -> None:
    a = [(0, 0.0), (100, 1.0), (200, 2.0), (300, 3.0)]
    b = [(0, 10.0), (150, 20.0), (250, 30.0)]
    grid, m = align_curves([a, b])
    assert grid == [0, 100, 150, 200, 250]  # union up to min(300, 250)
    assert m.tolist() == [[0, 1, 1, 2, 2], [10, 10, 20, 20, 30]]
    c = [(100, 5.0), (200, 6.0)]  # starts later: the grid starts where every run has a value
    grid, m = align_curves([a, c])
    assert grid == [100, 200]
    assert m.tolist() == [[1, 2], [5, 6]]
    grid, m = align_curves([[(0, 1.0), (10, 1.0)], [(20, 1.0)]])
    assert grid == [] and m.shape == (2, 0)


def test_history_points_keeps_the_latest_value_of_a_step() -> None:
    hist = [
        SimpleNamespace(step=100, value=1.0, timestamp=5),
        SimpleNamespace(step=0, value=0.0, timestamp=1),
        SimpleNamespace(step=100, value=2.0, timestamp=9),
        SimpleNamespace(step=100, value=3.0, timestamp=7),
    ]
    assert history_points(hist) == [(0, 0.0), (100, 2.0)]


# --- the report against a real store -----------------------------------------------------------------------


def test_write_report_numbers_files_and_exclusions(
    store: MlflowClient, exp_name: str, tmp_path: Path
) -> None:
    exp_id = store.create_experiment(exp_name)
    make_grid_runs(store, exp_id)
    make_run(store, exp_id, "qmix", "other", "0", [0, 50], [1.0, 3.0])
    # left out: an evaluation, a failed run, a sweep parent; never logged the metric: skipped
    make_run(store, exp_id, "qmix", "grid", "9", STEPS, [99] * 4, mode="evaluate")
    make_run(store, exp_id, "qmix", "grid", "8", STEPS, [99] * 4, status="FAILED")
    make_run(store, exp_id, "qmix", "grid", "-", STEPS, [99] * 4, mode="sweep")
    no_metric = make_run(store, exp_id, "vdn", "grid", "7", STEPS, [1] * 4, metric="return_mean")

    runs = select_runs(store, exp_name)
    assert len(runs) == 8
    md = write_report(store, runs, tmp_path / "out", thresholds={"grid": 5.0}, title="T")
    assert md == tmp_path / "out" / "report.md"
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert data["runs"] == 7 and data["skipped_runs"] == [no_metric]
    assert sorted(data["envs"]) == ["grid", "other"]

    grid = data["envs"]["grid"]
    assert (grid["threshold"], grid["threshold_source"]) == (5.0, "--threshold")
    q, v = grid["groups"]["qmix"], grid["groups"]["vdn"]
    assert q["seeds"] == 4 and sorted(r["seed"] for r in q["runs"]) == ["0", "1", "2", "3"]
    assert sorted(r["final_value"] for r in q["runs"]) == [2, 6, 10, 30]
    assert (q["final_mean"], q["iqm"]) == (12.0, 8.0)
    assert q["ci95"][0] < 12.0 < q["ci95"][1]
    assert q["ci95"] == list(bootstrap_ci([6.0, 10.0, 2.0, 30.0]))
    assert sorted(r["steps_to_threshold"] or 10**9 for r in q["runs"]) == [100, 200, 300, 10**9]
    assert (q["reached"], q["median_steps_to_threshold"]) == (3, 250.0)
    assert q["curve"]["steps"] == STEPS
    assert q["curve"]["mean"] == [0.0, 3.75, 5.75, 12.0]
    assert q["curve"]["ci_low"][0] == q["curve"]["ci_high"][0] == 0.0  # all seeds equal at t_env 0
    assert all(
        lo <= m <= hi for lo, m, hi in zip(q["curve"]["ci_low"], q["curve"]["mean"], q["curve"]["ci_high"])
    )

    assert (v["seeds"], v["final_mean"], v["iqm"], v["ci95"]) == (2, 5.0, 5.0, [5.0, 5.0])
    assert (v["reached"], v["median_steps_to_threshold"]) == (2, 125.0)  # seeds reach 5 at 150 and 100
    assert v["curve"]["steps"] == [0, 100, 150, 250]  # union of both runs' steps up to min(300, 250)
    assert v["curve"]["mean"] == [0.0, 2.5, 5.0, 5.0]

    other = data["envs"]["other"]  # default threshold: 90% of the best final mean (3)
    assert other["threshold"] == pytest.approx(2.7)
    assert "90%" in other["threshold_source"] and "qmix" in other["threshold_source"]
    assert other["groups"]["qmix"]["median_steps_to_threshold"] == 50.0

    out = tmp_path / "out"
    for png in ("grid.png", "other.png"):
        blob = (out / png).read_bytes()
        assert blob[:8] == b"\x89PNG\r\n\x1a\n" and len(blob) > 5000
    text = md.read_text()
    assert "# T" in text and "![grid](grid.png)" in text and "threshold 5 (--threshold)" in text
    assert "| qmix | 4 | 12 | 8 | [" in text and "| 250 | 3/4 | 300 |" in text
    assert "| vdn | 2 | 5 | 5 | [5, 5] | 125 | 2/2 | 250-300 |" in text
    page = (out / "report.html").read_text()
    assert page.count("src='data:image/png;base64,iVBORw0KGgo") == 2
    assert "<td>vdn</td><td>2</td><td>5</td><td>5</td><td>[5, 5]</td><td>125</td>" in page


def test_default_threshold_and_unreached_median(store: MlflowClient, exp_name: str, tmp_path: Path) -> None:
    exp_id = store.create_experiment(exp_name)
    make_grid_runs(store, exp_id)
    write_report(store, select_runs(store, exp_name), tmp_path)
    grid = json.loads((tmp_path / "report.json").read_text())["envs"]["grid"]
    assert grid["threshold"] == pytest.approx(10.8)  # 90% of qmix's final mean 12
    q = grid["groups"]["qmix"]
    assert (q["reached"], q["median_steps_to_threshold"]) == (1, None)  # only seed 3 (30 at 300)
    assert "| 12 | 8 | [" in (tmp_path / "report.md").read_text()
    assert "| - | 1/4 |" in (tmp_path / "report.md").read_text()


def test_select_runs_parent_filter_and_status(store: MlflowClient, exp_name: str, tmp_path: Path) -> None:
    exp_id = store.create_experiment(exp_name)
    other_exp = store.create_experiment(exp_name + "-other")
    p1 = make_run(store, exp_id, "sweep", "grid", "-", [], [], mode="sweep")
    p2 = make_run(store, exp_id, "sweep", "grid", "-", [], [], mode="sweep")
    make_grid_runs(store, exp_id, parent=p1)
    mine_elsewhere = make_run(store, other_exp, "iql", "grid", "0", STEPS, [1, 2, 3, 4], parent=p1)
    make_run(store, exp_id, "qmix", "grid", "5", STEPS, [1, 2, 3, 4], parent=p2)
    make_run(store, exp_id, "qmix", "grid", "6", STEPS, [1, 2, 3, 4], parent=p1, status="FAILED")
    make_run(store, exp_id, "qmix", "grid", "7", STEPS, [1, 2, 3, 4], parent=p1, mode="evaluate")

    children = select_runs(store, parent=p1)
    assert len(children) == 7 and mine_elsewhere in {r.info.run_id for r in children}
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {p1}
    assert len(select_runs(store, parent=p1, status="ALL")) == 8
    assert len(select_runs(store, parent=p2)) == 1
    assert len(select_runs(store, exp_name)) == 7  # p2's child + p1's 6 in this experiment; no parents
    assert len(select_runs(store, exp_name, filter_string="tags.algo = 'qmix' and tags.seed != '3'")) == 4
    assert select_runs(store, exp_name, status="KILLED") == []
    with pytest.raises(report.ReportError, match="no MLflow run with id 'nope'"):
        select_runs(store, parent="nope")
    with pytest.raises(report.ReportError, match="no MLflow experiment named 'absent-"):
        select_runs(store, "absent-" + exp_name)
    with pytest.raises(report.ReportError, match="cannot search runs"):
        select_runs(store, exp_name, filter_string="tags.algo ~~ 'x'")


def test_log_report_to_the_parent(store: MlflowClient, exp_name: str, tmp_path: Path) -> None:
    exp_id = store.create_experiment(exp_name, artifact_location=(tmp_path / "artifacts").as_uri())
    parent = make_run(store, exp_id, "sweep", "grid", "-", [], [], mode="sweep")
    make_grid_runs(store, exp_id, parent=parent)
    write_report(store, select_runs(store, parent=parent), tmp_path / "rep")
    log_report(store, parent, tmp_path / "rep")
    names = sorted(Path(a.path).name for a in store.list_artifacts(parent, "report"))
    assert names == ["grid.png", "report.html", "report.json", "report.md"]


# --- CLI ----------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_parent_report_and_errors(
    store: MlflowClient, store_uri: str, exp_name: str, tmp_path: Path
) -> None:
    exp_id = store.create_experiment(exp_name, artifact_location=(tmp_path / "artifacts").as_uri())
    parent = make_run(store, exp_id, "sweep", "grid", "-", [], [], mode="sweep")
    make_grid_runs(store, exp_id, parent=parent)

    ok = run_cli(["--parent", parent, "--threshold", "grid=5", "absent=1"], tmp_path, store_uri)
    assert ok.returncode == 0, ok.stderr
    out = tmp_path / "outputs" / "report" / parent
    assert f"wrote {Path('outputs') / 'report' / parent / 'report.md'}" in ok.stdout
    assert "grid: threshold 5 (--threshold)" in ok.stdout
    assert "qmix      4          12    8" in ok.stdout
    assert "warning: --threshold for envs not in the report: absent" in ok.stderr
    assert (out / "report.html").is_file()
    assert len(store.list_artifacts(parent, "report")) == 4

    bad = run_cli(["--experiment", "absent-x", "--parent", "deadbeef"], tmp_path, store_uri)
    assert (bad.returncode, bad.stderr.strip()) == (
        2,
        f"error: no MLflow run with id 'deadbeef' in {store_uri}",
    )
    bad = run_cli(["--experiment", "absent-x"], tmp_path, store_uri)
    assert (bad.returncode, bad.stderr.strip()) == (
        2,
        f"error: no MLflow experiment named 'absent-x' in {store_uri}",
    )
    bad = run_cli(["--experiment", exp_name, "--filter", "tags.algo = 'none'"], tmp_path, store_uri)
    assert bad.returncode == 2
    assert bad.stderr.strip() == (
        f"error: no FINISHED runs in experiment '{exp_name}' matching \"tags.algo = 'none'\" in {store_uri}"
    )
    bad = run_cli(["--threshold", "grid"], tmp_path, store_uri)
    assert bad.returncode == 2 and "argument --threshold: expected ENV=VALUE" in bad.stderr
    bad = run_cli(["--threshold", "grid=high"], tmp_path, store_uri)
    assert bad.returncode == 2 and "expected ENV=VALUE with a number VALUE, got 'grid=high'" in bad.stderr


def test_plots_cli_draws_the_chosen_metrics_of_a_run(tmp_path: Path, store: MlflowClient, exp_name: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from runner.tools import plots

    exp_id = store.create_experiment(exp_name)
    run = store.create_run(exp_id, run_name="traffic")
    rid = run.info.run_id
    for step in (0, 50, 100):
        store.log_metric(rid, "travel_time_machines_mean", 12.0 - step / 100, step=step)
        store.log_metric(rid, "travel_time_humans_mean", 11.2, step=step)
    drawn: dict = {}
    real = plots.metrics_figure
    monkeypatch.setattr(plots, "metrics_figure", lambda series, *a, **k: drawn.update(series) or real(series, *a, **k))
    out = tmp_path / "fig.png"
    plots.main([rid, "--metric", "travel_time_machines_mean", "--metric", "travel_time_humans_mean", "--out", str(out)])
    assert out.stat().st_size > 1000
    assert drawn == {"travel_time_machines_mean": [(0, 12.0), (50, 11.5), (100, 11.0)],
                     "travel_time_humans_mean": [(0, 11.2), (50, 11.2), (100, 11.2)]}
    with pytest.raises(SystemExit, match=f"run {rid} \\(traffic\\) has no metric 'loss'"):
        plots.main([rid, "--metric", "loss", "--out", str(out)])


# --- issue 14, item 7: repeated seeds, and a store that does not exist --------------------------------------


def make_repeated_seed_runs(client: MlflowClient, exp_id: str) -> list[str]:
    """qmix on "grid": three runs of seed 0 (finals 1, 2, 3; the last started latest) and seed 1 (final 5);
    vdn: seeds 0 and 1 once each."""
    ids = [make_run(client, exp_id, "qmix", "grid", "0", STEPS, [0, 0, 0, v], start_time=1_000 + i)
           for i, v in enumerate([1, 2, 3])]
    ids.append(make_run(client, exp_id, "qmix", "grid", "1", STEPS, [0, 0, 0, 5], start_time=1_010))
    for seed in ("0", "1"):
        make_run(client, exp_id, "vdn", "grid", seed, STEPS, [0, 0, 0, 4], start_time=1_020)
    return ids


def test_one_run_per_seed_keeps_the_latest_and_names_the_rest() -> None:
    from runner.tools.report import RunSeries, one_run_per_seed

    def rs(run_id: str, group: str, seed: str, start: int, env: str = "grid") -> RunSeries:
        return RunSeries(run_id, f"{group}-{env}-s{seed}", env, group, seed, [(0, 1.0)], start)

    series = [rs("a", "qmix", "0", 30), rs("b", "qmix", "0", 10), rs("c", "qmix", "0", 20), rs("d", "qmix", "1", 5),
              rs("e", "vdn", "0", 1), rs("f", "qmix", "0", 1, env="other"), rs("g", "qmix", "?", 1), rs("h", "qmix", "?", 2)]
    kept, repeats = one_run_per_seed(series)
    assert [s.run_id for s in kept] == ["a", "d", "e", "f", "g", "h"]  # other envs, groups, unknown seeds: separate
    assert repeats == [{"env": "grid", "group": "qmix", "seed": "0", "runs": 3,
                        "kept": {"run_id": "a", "run_name": "qmix-grid-s0"},
                        "left_out": [{"run_id": "b", "run_name": "qmix-grid-s0"},
                                     {"run_id": "c", "run_name": "qmix-grid-s0"}]}]
    assert one_run_per_seed(kept) == (kept, [])


def test_runs_that_repeat_a_seed_are_one_sample_and_are_named(store: MlflowClient, exp_name: str, tmp_path: Path) -> None:
    exp_id = store.create_experiment(exp_name)
    q0a, q0b, q0c, q1 = make_repeated_seed_runs(store, exp_id)
    write_report(store, select_runs(store, exp_name), tmp_path)
    data = json.loads((tmp_path / "report.json").read_text())
    assert (data["runs"], data["runs_used"]) == (6, 4)
    q = data["envs"]["grid"]["groups"]["qmix"]
    assert (q["seeds"], q["repeated_runs"]) == (2, 2)
    assert sorted(r["run_id"] for r in q["runs"]) == sorted([q0c, q1])  # seed 0: only its latest run
    assert (q["final_mean"], q["ci95"]) == (4.0, list(bootstrap_ci([3.0, 5.0])))
    assert data["repeated_seeds"] == [{
        "env": "grid", "group": "qmix", "seed": "0", "runs": 3,
        "kept": {"run_id": q0c, "run_name": "qmix-grid-s0"},
        "left_out": [{"run_id": q0a, "run_name": "qmix-grid-s0"}, {"run_id": q0b, "run_name": "qmix-grid-s0"}],
    }]
    v = data["envs"]["grid"]["groups"]["vdn"]
    assert (v["seeds"], "repeated_runs" in v) == (2, False)
    md = (tmp_path / "report.md").read_text()
    assert "Metric `test_return_mean`, 6 runs (2 of them repeat a seed of their group and are left out of the statistics)" in md
    assert "| qmix | 2 (4 runs) | 4 | 4 | [" in md and "| vdn | 2 | 4 | 4 | [4, 4] |" in md
    assert (
        f"- qmix on grid: 3 runs with seed 0 are not independent samples; only the latest, qmix-grid-s0 ({q0c[:8]}), "
        f"enters the statistics; left out: qmix-grid-s0 ({q0a[:8]}), qmix-grid-s0 ({q0b[:8]})"
    ) in md
    assert "only the latest, qmix-grid-s0" in (tmp_path / "report.html").read_text()


@pytest.mark.slow
def test_runs_all_of_one_seed_give_one_seed_and_no_interval(
    store: MlflowClient, store_uri: str, exp_name: str, tmp_path: Path
) -> None:
    """The issue's case: three runs, all seed 0, reported as "seeds 3" with a bootstrap CI over them."""
    exp_id = store.create_experiment(exp_name)
    ids = [make_run(store, exp_id, "qmix", "grid", "0", STEPS, [0, 0, 0, v], start_time=1_000 + i)
           for i, v in enumerate([1, 2, 3])]
    out = run_cli(["--experiment", exp_name, "--out", str(tmp_path / "rep")], tmp_path, store_uri)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == (
        f"warning: qmix on grid: 3 runs with seed 0 are not independent samples; only the latest, qmix-grid-s0 "
        f"({ids[2][:8]}), enters the statistics; left out: qmix-grid-s0 ({ids[0][:8]}), qmix-grid-s0 ({ids[1][:8]})"
    )
    q = json.loads((tmp_path / "rep" / "report.json").read_text())["envs"]["grid"]["groups"]["qmix"]
    assert (q["seeds"], q["final_mean"], q["ci95"]) == (1, 3.0, None)
    assert "| qmix | 1 (3 runs) | 3 | 3 | - |" in (tmp_path / "rep" / "report.md").read_text()
    assert re.search(r"\n  qmix  1 \(3 runs\) +3 +3 +- +300 +1/1\n", out.stdout), out.stdout


def test_stats_counts_distinct_seeds(store: MlflowClient, exp_name: str, capsys: pytest.CaptureFixture[str]) -> None:
    from runner.tools.stats import table

    exp_id = store.create_experiment(exp_name)
    q0a, q0b, q0c, _ = make_repeated_seed_runs(store, exp_id)
    text = table(store, exp_name, "test_return_mean", [300], "algo", "FINISHED")
    assert capsys.readouterr().err == (
        f"warning: algo=qmix on grid: 3 runs with seed 0 are not independent samples; only the latest, qmix-grid-s0 "
        f"({q0c[:8]}), is counted; left out: qmix-grid-s0 ({q0a[:8]}), qmix-grid-s0 ({q0b[:8]})\n"
    )
    rows = text.splitlines()[2:]
    assert rows[0].startswith("| qmix | 2 (4 runs) | 4.00 [3.50, 4.50] (4.00) |")  # seeds 0 (latest: 3) and 1 (5)
    assert rows[1].startswith("| vdn | 2 | 4.00 [4.00, 4.00] (4.00) |")


@pytest.mark.slow
def test_a_store_that_does_not_exist_is_refused_and_not_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from runner.tools import plots, stats

    db = tmp_path / "typo" / "mlflow.db"
    uri = f"sqlite:///{db}"
    msg = f"error: no MLflow store at {db} ({uri}): check the path, MLFLOW_TRACKING_URI or --tracking-uri"
    out = run_cli([], tmp_path, uri)  # via MLFLOW_TRACKING_URI
    assert (out.returncode, out.stderr.strip(), out.stdout) == (2, msg, "")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert report.main(["--tracking-uri", uri]) == 2
    assert capsys.readouterr().err.strip() == msg
    with pytest.raises(SystemExit) as e:
        stats.main(["--tracking-uri", uri, "--at", "100"])
    assert e.value.code == 2 and capsys.readouterr().err.strip() == msg
    with pytest.raises(SystemExit) as e:
        plots.main(["abc", "--metric", "loss", "--out", str(tmp_path / "f.png"), "--tracking-uri", uri])
    assert e.value.code == 2 and capsys.readouterr().err.strip() == msg
    assert not (tmp_path / "typo").exists() and not (tmp_path / "outputs").exists() and not (tmp_path / "f.png").exists()
