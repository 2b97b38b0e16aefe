"""Experiment management on runs produced by real tiny trainings through the CLI."""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from backend.ml.experiment_config import ExperimentManager
from backend.ml.experiments.comparison import seed_groups
from backend.ml.experiments.rundir import RunInfo
from support.cli import run_cli, run_main
from support.configs import tiny_config, write_config

# The runs compared here are trained through the real CLI.
pytestmark = pytest.mark.slow


LOW, HIGH = "lr__learning_rate-0.0001", "lr__learning_rate-0.003"  # names the sweep gives


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory) -> tuple[Path, str]:
    """In one CLI call: a two-point learning-rate sweep, a run whose data file is broken, a
    2-fold CV run, a two-seed sweep, and two recipes swept over two seeds on fixed splits. The
    broken run fails at data loading; the runs after it still run."""
    workspace = tmp_path_factory.mktemp("experiments_training")
    small = {"epochs": 1}
    data = {"max_samples": 120}
    broken_data = workspace / "final_labels_SG2.csv"
    broken_data.write_text("\ufefftext;label_bias\nA sentence.;Biased\nAnother one.;Maybe\n",
                           encoding="utf-8")
    configs = [
        write_config(workspace, tiny_config(experiment_name="lr", training=small, data=data,
                                            sweep={"training.learning_rate": [1e-4, 3e-3]}),
                     "lr_sweep.yaml"),
        write_config(workspace, tiny_config(experiment_name="broken", training=small, data={
            "dataset": "babe", "path": str(broken_data)}), "broken.yaml"),
        write_config(workspace, tiny_config(experiment_name="cv_two", training=small,
                                            data=dict(data, cv_folds=2)), "cv_two.yaml"),
        write_config(workspace, tiny_config(experiment_name="seeds", training=small, data=data,
                                            sweep={"seed": [1, 2]}), "seeds.yaml"),
        write_config(workspace, tiny_config(experiment_name="fixed", training=small,
                                            data=dict(data, split_seed=5),
                                            sweep={"seed": [1, 2]}), "fixed_splits.yaml"),
        write_config(workspace, tiny_config(experiment_name="fixed_fast",
                                            training=dict(small, learning_rate=3e-3),
                                            data=dict(data, split_seed=5),
                                            sweep={"seed": [1, 2]}), "fixed_fast.yaml"),
    ]
    completed = run_cli(*map(str, configs), "--output-dir", str(workspace / "runs"))
    assert completed.returncode == 1, completed.stderr  # one run failed
    return workspace / "runs", completed.stdout + completed.stderr


def _run_id(runs_dir: Path, name: str) -> str:
    (match,) = [path.name for path in runs_dir.iterdir() if path.name.startswith(name + "_")]
    return match


def test_multi_config_run_ends_with_a_table_of_all_runs(trained_runs):
    runs_dir, stdout = trained_runs
    table = stdout[stdout.rindex("test/accuracy") - 200:]
    for name in (LOW, HIGH, "cv_two"):
        assert re.search(rf"{re.escape(_run_id(runs_dir, name))}\s+completed", table)
    assert re.search(r"cv_two_\w+\s+completed \(cv\)", table)
    assert "FAILED broken" in stdout and "'Maybe'" in stdout  # the failure is named, not hidden
    assert "Traceback" not in stdout


def test_manager_reads_real_runs_and_compares_them(trained_runs):
    runs_dir, _ = trained_runs
    manager = ExperimentManager(runs_dir, num_resamples=200)
    assert {run.experiment_name: run.status for run in manager.list_runs()} == {
        LOW: "completed", HIGH: "completed", "cv_two": "completed",
        "seeds__seed-1": "completed", "seeds__seed-2": "completed",
        "fixed__seed-1": "completed", "fixed__seed-2": "completed",
        "fixed_fast__seed-1": "completed", "fixed_fast__seed-2": "completed"}
    low, high = _run_id(runs_dir, LOW), _run_id(runs_dir, HIGH)
    comparison = manager.compare_runs([low, high])
    assert comparison["config_differences"]["training.learning_rate"] == {low: 1e-4, high: 3e-3}
    for run_id in (low, high):
        results = manager.load_run(run_id).results
        assert comparison["summary"]["f1_macro"][run_id] == results["test"]["f1_macro"]
        interval = comparison["confidence_intervals"][run_id]["f1_macro"]
        # the bootstrap recomputes F1 from the predictions CSV: it must agree with the trainer
        assert interval["estimate"] == pytest.approx(results["test"]["f1_macro"], abs=1e-9)
        assert interval["low"] <= interval["estimate"] <= interval["high"]
        assert set(comparison["per_class"][run_id]) == set(results["test"]["label_names"])
    (significance,) = comparison["significance"]
    assert "error" not in significance, significance
    assert significance["n"] == manager.load_run(low).results["data"]["splits"]["test"]["size"]
    # The paired test's observed difference is the difference of the two runs' test F1, and its
    # verdict is its p-value against 0.05.
    first, second = (manager.load_run(significance[key]).results["test"]["f1_macro"]
                     for key in ("run_a", "run_b"))
    assert significance["bootstrap"]["difference"] == pytest.approx(first - second, abs=1e-9)
    assert significance["significant"] == (significance["bootstrap"]["p_value"] < 0.05)


def test_cv_run_has_fold_runs_and_mean_std_and_competes_for_best(trained_runs):
    runs_dir, _ = trained_runs
    manager = ExperimentManager(runs_dir)
    parent = manager.load_run(_run_id(runs_dir, "cv_two"))
    assert [fold.status for fold in parent.folds] == ["completed", "completed"]
    fold_values = [fold.metric("test/f1_macro") for fold in parent.folds]
    assert parent.metric("test/f1_macro") == pytest.approx(np.mean(fold_values))
    assert parent.metric_std("test/f1_macro") == pytest.approx(np.std(fold_values, ddof=1))
    completed = manager.list_runs(status="completed")
    best = manager.load_run(manager.get_best_run("eval/f1_macro"))
    assert best.metric("eval/f1_macro") == max(run.metric("eval/f1_macro") for run in completed)


def test_a_recipe_run_at_several_seeds_is_summarised_over_its_seeds(trained_runs, capsys):
    runs_dir, stdout = trained_runs
    manager = ExperimentManager(runs_dir)
    seeded = [manager.load_run(_run_id(runs_dir, f"seeds__seed-{seed}")) for seed in (1, 2)]
    values = [run.results["test"]["f1_macro"] for run in seeded]
    summary = (f"seeds: {np.mean(values):.4f} ± {np.std(values, ddof=1):.4f} over 2 seeds "
               f"(1, 2; splits drawn by each seed), {min(values):.4f} to {max(values):.4f}")
    # The sweep's closing table: the learning rates and the CV run differ in more than the
    # seed, so the two seed sweeps are the only recipes summarised.
    closing = stdout[stdout.rindex("across seeds (test/f1_macro"):].splitlines()
    assert closing[1] == f"  {summary}"
    for line, recipe in zip(closing[2:4], ("fixed", "fixed_fast")):
        assert line.startswith(f"  {recipe}: ") and "(1, 2; the same splits (split seed 5))" in line
    assert not closing[4].startswith("  ")

    completed = run_main(capsys, "compare", "--runs-dir", str(runs_dir), check=True)
    assert f"  {summary}\n" in completed.stdout
    report = (runs_dir.parent / "comparison.html").read_text(encoding="utf-8")
    section = report[report.index('<section id="across-seeds">'):]
    section = section[:section.index("</section>")]
    assert section.count("<tr data-recipe=") == 3
    rows = dict(re.findall(r'<tr data-recipe="(\w+)"><td>\w+</td><td class="splits">([^<]+)<',
                           section))
    assert rows == {"seeds": "splits drawn by each seed",
                    "fixed": "the same splits (split seed 5)",
                    "fixed_fast": "the same splits (split seed 5)"}
    assert f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}" in section
    for seed, run in zip((1, 2), seeded):
        assert f'data-seed="{seed}">{seed}: <a href="runs/{run.run_id}/">' in section


def _test_sentences(run: RunInfo) -> list[int]:
    with (run.path / "predictions" / "test_predictions.csv").open(encoding="utf-8") as handle:
        return sorted(int(row["source_row"]) for row in csv.DictReader(handle))


def _probabilities(run: RunInfo) -> list[str]:
    with (run.path / "predictions" / "test_predictions.csv").open(encoding="utf-8") as handle:
        return [row[name] for row in csv.DictReader(handle) for name in row
                if name.startswith("prob")]


def test_a_fixed_split_seed_keeps_the_test_sentences_while_the_training_seed_changes(
        trained_runs):
    runs_dir, _ = trained_runs
    fixed = [RunInfo.read(runs_dir / _run_id(runs_dir, f"fixed__seed-{seed}")) for seed in (1, 2)]
    drawn = [RunInfo.read(runs_dir / _run_id(runs_dir, f"seeds__seed-{seed}")) for seed in (1, 2)]
    assert _test_sentences(fixed[0]) == _test_sentences(fixed[1])
    assert _test_sentences(drawn[0]) != _test_sentences(drawn[1])
    # The training seed still differs: another initialisation gives other probabilities.
    assert _probabilities(fixed[0]) and _probabilities(fixed[0]) != _probabilities(fixed[1])
    groups = seed_groups([*fixed, *drawn], "test/f1_macro")
    assert [(group.recipe, group.fold_seed, group.seeds) for group in groups] == [
        ("fixed", 5, [1, 2]), ("seeds", None, [1, 2])]


def test_recipes_run_at_several_seeds_on_the_same_splits_are_tested_against_each_other(
        trained_runs, capsys):
    runs_dir, _ = trained_runs
    means = {}
    for recipe in ("fixed", "fixed_fast"):
        runs = [RunInfo.read(runs_dir / _run_id(runs_dir, f"{recipe}__seed-{seed}"))
                for seed in (1, 2)]
        means[recipe] = np.mean([run.results["test"]["f1_macro"] for run in runs])
    completed = run_main(capsys, "compare", "--runs-dir", str(runs_dir), check=True)
    lines = completed.stdout[completed.stdout.index("between recipes"):].splitlines()
    # Only the two recipes on shared splits are tested; the seed sweep drew its own splits.
    line = lines[1]
    assert not lines[2].startswith("  ")
    best, other = sorted(means, key=means.get, reverse=True)
    match = re.fullmatch(rf"  {best} vs {other} \(seeds 1, 2 vs 1, 2\): ([+-][\d.]+) "
                         rf"\[([+-][\d.]+), ([+-][\d.]+)\], p = ([\d.]+), (not )?significant",
                         line)
    assert match, line
    difference, low, high, p_value = map(float, match.groups()[:4])
    assert difference == pytest.approx(means[best] - means[other], abs=1e-4)
    assert low <= difference <= high and 0 <= p_value <= 1
    assert (match.group(5) is None) == (p_value < 0.05)
    report = (runs_dir.parent / "comparison.html").read_text(encoding="utf-8")
    assert f'<tr data-recipe-a="{best}" data-recipe-b="{other}">' in report


def test_a_run_from_before_a_config_field_existed_still_joins_its_recipe(trained_runs, tmp_path):
    runs_dir, _ = trained_runs
    seeded = [RunInfo.read(runs_dir / _run_id(runs_dir, f"seeds__seed-{seed}")) for seed in (1, 2)]
    # The same run as an older version wrote it: no augmented_copies field yet, seed 3.
    older = tmp_path / "seeds_older"
    shutil.copytree(seeded[1].path, older)
    config = yaml.safe_load((older / "config.yaml").read_text())
    del config["training"]["distillation"]["augmented_copies"]
    config["seed"] = 3
    (older / "config.yaml").write_text(yaml.safe_dump(config))
    (group,) = seed_groups([*seeded, RunInfo.read(older)], "test/f1_macro")
    assert group.recipe == "seeds" and group.seeds == [1, 2, 3]
    # A changed setting is another recipe.
    config["training"]["distillation"]["augmented_copies"] = 2
    (older / "config.yaml").write_text(yaml.safe_dump(config))
    (group,) = seed_groups([*seeded, RunInfo.read(older)], "test/f1_macro")
    assert group.seeds == [1, 2]


def test_compare_cli_writes_the_report_for_real_runs(trained_runs, capsys):
    runs_dir, _ = trained_runs
    completed = run_main(capsys, "compare", "--runs-dir", str(runs_dir), check=True)
    report = runs_dir.parent / "comparison.html"
    assert str(report) in completed.stdout
    text = report.read_text(encoding="utf-8")
    for name in (LOW, HIGH, "cv_two"):
        assert f'data-run-id="{_run_id(runs_dir, name)}"' in text
    # Learning curves drawn from metrics.jsonl: one chart per metric, each run in its legend.
    curves = text[text.index('id="learning-curves"'):]
    curves = curves[:curves.index("</section>")]
    assert curves.count("<svg") >= 1
    assert _run_id(runs_dir, LOW) in curves and _run_id(runs_dir, HIGH) in curves
    typo = _run_id(runs_dir, LOW)[:-1] + "z"
    unknown = run_main(capsys, "compare", typo, "--runs-dir", str(runs_dir))
    assert unknown.returncode != 0
    assert f"unknown run '{typo}'" in unknown.stderr
    assert _run_id(runs_dir, LOW) in unknown.stderr  # the close match is suggested
    assert "Traceback" not in unknown.stderr
