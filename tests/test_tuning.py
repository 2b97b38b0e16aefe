"""`tune`: Optuna studies over a config's search section, kept away from the test data.

Tiny random models on the demo data, a few steps each. What a researcher relies on: no trial
reads a test sentence, every trial is a normal run directory, hopeless trials are pruned, dead
workers' trials are retried and never counted, and a stopped study continues where it was.
"""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backend.ml.cli import main
from backend.ml.config import load_yaml_config
from backend.ml.run_directory import RunLayout, read_results
from support.cli import REPO_ROOT, cli_environment
from support.configs import tiny_config, write_config
from support.postgres import running_postgres, server_binaries

SPACE = {"training.learning_rate": {"low": 1.0e-4, "high": 3.0e-3, "log": True},
         "model.dropout": {"choices": [0.0, 0.1]}}


def _config(tmp_path: Path, name: str = "config.yaml", **search) -> Path:
    return write_config(tmp_path, tiny_config(
        training={"epochs": 2}, data={"max_samples": 120},
        logging={"log_steps": 2, "save_steps": 0},
        search={"trials": 3, "space": SPACE, **search}), name)


def _tune(tmp_path: Path, config: Path, *args: str) -> int:
    return main(["tune", str(config), "--output-dir", str(tmp_path / "runs"), *args])


def _summary(tmp_path: Path, study: str = "tiny") -> dict:
    return json.loads((tmp_path / "studies" / f"{study}.json").read_text())


def _trial_states(tmp_path: Path, study: str = "tiny") -> dict[int, str]:
    with sqlite3.connect(tmp_path / "studies" / "tiny.db") as database:
        rows = database.execute(
            "SELECT trials.number, trials.state FROM trials JOIN studies USING (study_id) "
            "WHERE studies.study_name = ? ORDER BY trials.number", (study,)).fetchall()
    return dict(rows)


def assert_never_read_test_data(run_dir: Path) -> None:
    """A trial's directory holds no test predictions, metrics or scalars, and no test data."""
    layout = RunLayout(run_dir)
    results = read_results(run_dir)
    assert "test" not in results and "test" not in results.get("calibration", {})
    assert results["data"]["splits"]["test"]["size"] == 0
    assert not layout.test_predictions.exists()
    logged = layout.metrics.read_text(encoding="utf-8")
    assert '"test/' not in logged


# ---- the search section -------------------------------------------------------------------------

def test_a_bad_search_section_is_reported_whole_with_dotted_paths(tmp_path, capsys):
    config = write_config(tmp_path, tiny_config(search={
        "trails": 3, "sampler": "grid",
        "space": {"training.learning_rat": {"low": 1e-5, "high": 1e-4},
                  "training.batch_size": {"low": 8, "high": 32.5},
                  "model.dropout": {"low": 0.5, "high": 0.2},
                  "training.lr_schedule": {"choices": ["linear", "cosin"]},
                  "training.learning_rate": {"low": 0, "high": 1e-4, "log": True}}}))
    assert _tune(tmp_path, config) == 2
    err = capsys.readouterr().err
    for expected in ("search.trails: unknown field (did you mean 'trials'?)",
                     "search.space.training.learning_rat: not a config field that can be "
                     "searched (did you mean 'training.learning_rate'?)",
                     "search.space.training.batch_size: training.batch_size is a whole number",
                     "search.space.model.dropout: low must be below high",
                     "search.space.training.lr_schedule.choices[1]: must be one of linear",
                     "search.space.training.learning_rate.low: must be > 0 on a log scale",
                     "search.sampler: grid searches every combination of choices"):
        assert expected in err
    assert "Traceback" not in err and not (tmp_path / "runs").exists()


def test_tune_needs_a_space_and_nested_needs_folds(tmp_path, capsys):
    assert _tune(tmp_path, write_config(tmp_path, tiny_config(), "plain.yaml")) == 2
    assert "search.space: is empty" in capsys.readouterr().err
    assert _tune(tmp_path, _config(tmp_path), "--nested") == 2
    assert "--nested needs outer folds" in capsys.readouterr().err
    cv = write_config(tmp_path, tiny_config(data={"cv_folds": 3}, search={"space": SPACE}),
                      "cv.yaml")
    assert _tune(tmp_path, cv) == 2
    assert "is tuned with --nested" in capsys.readouterr().err


# ---- a study ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """One finished study of two trials, confirmed with two seeds."""
    workspace = tmp_path_factory.mktemp("study")
    assert _tune(workspace, _config(workspace, trials=2), "--confirm-seeds", "2") == 0
    return workspace


def test_every_trial_is_a_tagged_run_that_never_read_the_test_split(study):
    summary = _summary(study)
    trials = summary["study"]["trials"]
    assert [trial["number"] for trial in trials] == [0, 1]
    for trial in trials:
        run_dir = study / "runs" / trial["run_id"]
        results = read_results(run_dir)
        assert results["status"] == "completed"
        assert results["tuning"] == {"study": "tiny", "trial": trial["number"], "role": "trial",
                                     "params": trial["params"], "metric": "eval/f1_macro"}
        assert {"study:tiny", f"trial:{trial['number']}"} <= set(results["tags"])
        assert results["eval"]["f1_macro"] == pytest.approx(trial["value"])
        assert list((run_dir / "logs").glob("events.out.tfevents.*"))  # TensorBoard sees it
        assert not RunLayout(run_dir).checkpoints.exists()  # nothing resumes a finished trial
        assert_never_read_test_data(run_dir)
        # the trial trained the sampled values
        config = load_yaml_config(RunLayout(run_dir).config)
        assert config.training.learning_rate == pytest.approx(
            trial["params"]["training.learning_rate"])
        assert config.model.dropout == trial["params"]["model.dropout"]


def test_the_best_config_is_confirmed_on_the_test_split_with_seeds(study):
    summary = _summary(study)
    best = summary["study"]["best"]
    values = [trial["value"] for trial in summary["study"]["trials"]]
    assert best["value"] == max(values)
    runs = summary["confirmation"]["runs"]
    assert [run["seed"] for run in runs] == [7, 8]
    for run in runs:
        results = read_results(study / "runs" / run["run_id"])
        assert results["tuning"]["role"] == "confirmation"
        assert results["tuning"]["seed"] == run["seed"]
        assert load_yaml_config(RunLayout(study / "runs" / run["run_id"]).config).seed == \
            run["seed"]
        assert results["test"]["f1_macro"] == run["test"]["f1_macro"]
        assert RunLayout(study / "runs" / run["run_id"]).test_predictions.is_file()
        assert results["data"]["splits"]["test"]["size"] > 0
    scores = [run["test"]["f1_weighted"] for run in runs]
    assert summary["confirmation"]["test"]["f1_weighted"]["mean"] == pytest.approx(
        sum(scores) / 2)
    best_config = load_yaml_config(summary["best_config"])
    assert best_config.training.learning_rate == pytest.approx(
        best["params"]["training.learning_rate"])
    assert best_config.search.space == {}  # ready to train as it is


def test_the_study_page_labels_the_optimistic_and_the_unbiased_figure(study):
    page = (study / "studies" / "tiny.html").read_text(encoding="utf-8")
    assert "test, untouched by the search" in page and "validation, optimistic" in page
    assert page.count("<svg") >= 1  # the optimisation history
    for run in _summary(study)["confirmation"]["runs"]:
        link = f'href="../runs/{run["run_id"]}/results.json"'
        assert link in page
        assert (study / "studies" / f"../runs/{run['run_id']}/results.json").is_file()


def test_compare_lists_trials_as_runs_and_links_the_study_page(study, capsys):
    report = study / "comparison.html"
    assert main(["compare", "--runs-dir", str(study / "runs"), "--report", str(report)]) == 0
    html = report.read_text(encoding="utf-8")
    for trial in _summary(study)["study"]["trials"]:
        assert trial["run_id"] in html
    assert 'href="studies/tiny.html"' in html
    confirmed = _summary(study)["confirmation"]["test"]["f1_weighted"]
    assert f"{confirmed['mean']:.4f} ± {confirmed['sd']:.4f}" in html
    assert "incomplete" not in capsys.readouterr().out  # a trial without test is complete


def test_running_the_same_command_again_continues_and_adds_nothing(study, capsys):
    before = _summary(study)
    assert _tune(study, _config(study, trials=2), "--confirm-seeds", "2") == 0
    assert "2/2 trials finished before this run" in capsys.readouterr().out
    after = _summary(study)
    assert after["study"]["trials"] == before["study"]["trials"]
    assert after["confirmation"]["runs"] == before["confirmation"]["runs"]


def test_an_unfinished_confirmation_run_is_named_with_the_command_that_resumes_it(
        study, tmp_path, capsys):
    workspace = tmp_path / "copy"
    shutil.copytree(study, workspace)
    unfinished = workspace / "runs" / _summary(workspace)["confirmation"]["runs"][0]["run_id"]
    results = read_results(unfinished)
    (unfinished / "results.json").write_text(json.dumps({**results, "status": "interrupted"}))
    assert _tune(workspace, _config(workspace, trials=2), "--confirm-seeds", "2") != 0
    error = capsys.readouterr().err
    assert f"python run_experiment.py resume {unfinished}" in error
    assert "Traceback" not in error


# ---- pruning, workers, killed workers, Ctrl-C ---------------------------------------------------

def test_a_learning_rate_that_cannot_learn_is_pruned_not_failed(tmp_path, capsys):
    # Validation loss, evaluated every 2 steps. Two trials that learn first; then one whose
    # learning rate moves nothing is worse than their median by its second evaluation.
    def config(low: float, high: float, trials: int) -> Path:
        return write_config(tmp_path, tiny_config(
            training={"epochs": 2, "eval_steps": 2}, data={"max_samples": 120},
            logging={"save_steps": 0},
            search={"trials": trials, "metric": "loss", "space": {
                "training.learning_rate": {"low": low, "high": high, "log": True}}}))

    assert _tune(tmp_path, config(3.0e-3, 3.1e-3, 2), "--confirm-seeds", "1") == 0
    assert _tune(tmp_path, config(1.0e-9, 1.1e-9, 3), "--confirm-seeds", "1") == 0
    assert _trial_states(tmp_path) == {0: "COMPLETE", 1: "COMPLETE", 2: "PRUNED"}
    pruned = read_results(tmp_path / "runs" / "tiny_trial-002")
    assert pruned["status"] == "pruned" and pruned["pruned_at_step"] == 4
    assert "pruned at step 4: validation loss" in pruned["error"]
    assert_never_read_test_data(tmp_path / "runs" / "tiny_trial-002")
    assert "trial   2 (3/3) pruned after 2 evaluation(s)" in capsys.readouterr().out


@pytest.mark.slow
def test_two_local_workers_share_one_study(tmp_path):
    config = _config(tmp_path, trials=3)
    assert _tune(tmp_path, config, "--workers", "2", "--confirm-seeds", "1") == 0
    states = _trial_states(tmp_path)
    assert sorted(states) == list(range(len(states)))  # unique numbers from the storage
    assert list(states.values()).count("COMPLETE") == 3
    assert set(states.values()) <= {"COMPLETE", "FAIL"}  # a surplus ask is failed, not run
    runs = sorted(path.name for path in (tmp_path / "runs").glob("tiny_trial-*"))
    assert len(runs) == 3
    rates = [read_results(tmp_path / "runs" / run)["tuning"]["params"]["training.learning_rate"]
             for run in runs]
    assert len(set(rates)) == 3  # the two workers do not draw the same points


def _start_tune(tmp_path: Path, config: Path, kill_at: str | None = None) -> subprocess.Popen:
    launcher = [str(REPO_ROOT / "tests" / "support" / "kill_at.py"), kill_at] if kill_at else []
    return subprocess.Popen([sys.executable, *launcher, str(REPO_ROOT / "run_experiment.py"),
                             "tune", str(config), "--output-dir", str(tmp_path / "runs"),
                             "--confirm-seeds", "1"], cwd=REPO_ROOT, env=cli_environment(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_ctrl_c_and_a_killed_worker_leave_the_study_intact_and_uncounted(tmp_path):
    config = _config(tmp_path, trials=2, heartbeat_seconds=1)
    # Ctrl-C in trial 0: the trial stops at its next step, is failed in the study, exit 130.
    process = _start_tune(tmp_path, config)
    metrics = tmp_path / "runs" / "tiny_trial-000" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.is_file() and "train/loss" in metrics.read_text(encoding="utf-8")):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "The study is intact: run the same command to continue it." in err
    assert "Traceback" not in err
    assert _trial_states(tmp_path) == {0: "FAIL"}
    assert read_results(tmp_path / "runs" / "tiny_trial-000")["status"] == "interrupted"

    # SIGKILL inside trial 1: its worker is gone without a word; the trial stays RUNNING.
    process = _start_tune(tmp_path, config, kill_at="evaluation")
    process.communicate(timeout=300)
    assert process.returncode == -signal.SIGKILL
    assert _trial_states(tmp_path) == {0: "FAIL", 1: "RUNNING"}
    time.sleep(2.5)  # past the grace period of two missed heartbeats

    # The same command again: trial 1 is failed as stale and its parameters run once more.
    process = _start_tune(tmp_path, config)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    assert "0/2 trials finished before this run" in out
    states = _trial_states(tmp_path)
    assert states[0] == states[1] == "FAIL"
    assert list(states.values()).count("COMPLETE") == 2
    trials = {trial["number"]: trial for trial in _summary(tmp_path)["study"]["trials"]}
    assert any(number > 1 and trial["state"] == "complete"
               and trial["params"] == trials[1]["params"] for number, trial in trials.items())
    # Each re-run draws new parameters: a sampler seeded as before would replay trial 0's.
    assert trials[1]["params"] != trials[0]["params"]


# ---- nested cross-validation --------------------------------------------------------------------

def test_nested_search_scores_each_folds_choice_on_its_untouched_test_fold(tmp_path):
    config = write_config(tmp_path, tiny_config(
        training={"epochs": 1}, data={"max_samples": 120, "cv_folds": 2},
        logging={"save_steps": 0}, search={"trials": 1, "space": SPACE}))
    assert _tune(tmp_path, config, "--nested") == 0
    summary = _summary(tmp_path)
    assert summary["kind"] == "nested" and [fold["fold"] for fold in summary["folds"]] == [1, 2]
    outer_texts = []
    for fold in summary["folds"]:
        assert fold["study"]["name"] == f"tiny-fold-{fold['fold']}"
        for trial in fold["study"]["trials"]:
            assert trial["run_id"].startswith(f"tiny_fold-{fold['fold']}_trial-")
            assert_never_read_test_data(tmp_path / "runs" / trial["run_id"])
        outer = read_results(tmp_path / "runs" / fold["run_id"])
        assert outer["tuning"]["params"] == fold["study"]["best"]["params"]
        assert outer["test"]["f1_weighted"] == fold["test"]["f1_weighted"]
        outer_texts.append(RunLayout(tmp_path / "runs" / fold["run_id"]).test_predictions
                           .read_text(encoding="utf-8"))
    assert outer_texts[0] != outer_texts[1]  # two different outer test folds
    means = [fold["test"]["f1_weighted"] for fold in summary["folds"]]
    assert summary["test"]["f1_weighted"]["mean"] == pytest.approx(sum(means) / 2)
    page = (tmp_path / "studies" / "tiny.html").read_text(encoding="utf-8")
    assert "outer fold 1" in page and "outer fold 2" in page


# ---- many workers on one PostgreSQL study -------------------------------------------------------

@pytest.mark.slow
@pytest.mark.skipif(server_binaries() is None,
                    reason="PostgreSQL server not installed (apt-get install postgresql)")
def test_two_workers_share_a_study_in_a_real_postgresql_server(tmp_path):
    pytest.importorskip("psycopg", reason="pip install -e '.[postgres]' (the psycopg driver)")
    import optuna

    config = _config(tmp_path, trials=3)
    with running_postgres() as url:
        assert _tune(tmp_path, config, "--workers", "2", "--storage", url,
                     "--confirm-seeds", "1") == 0
        study = optuna.load_study(study_name="tiny", storage=url)
        numbers = [trial.number for trial in study.trials]
        states = [trial.state.name for trial in study.trials]
    assert sorted(numbers) == list(range(len(numbers)))
    assert states.count("COMPLETE") == 3 and set(states) <= {"COMPLETE", "FAIL"}
    assert _summary(tmp_path)["storage"] == url  # no password in it to hide
    assert not (tmp_path / "studies" / "tiny.db").exists()  # nothing went to SQLite
