"""The model registry: stages, history, the held-out comparison gate, load_model("production")."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from backend.ml.cli import main
from backend.ml.config import ExperimentConfig
from backend.ml.inference import BiasClassifier
from backend.ml.registry import ModelRegistry, RegistryError, compare_with_production
from backend.ml.run import run_experiment
from support.configs import tiny_config
from support.runs import train_tiny


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("registry") / "runs"
    train_tiny(runs, "tiny_a", 1e-3)
    shutil.copytree(runs / "tiny_a", runs / "tiny_a_copy")  # the same model under another id
    other_seed = ExperimentConfig.from_dict(tiny_config(
        seed=11, training={"epochs": 1}, logging={"tensorboard": False, "save_steps": 1000}))
    run_experiment(other_seed, runs, run_id="tiny_other_split")
    return runs


def promote(runs_dir: Path, registry_dir: Path, *args: str) -> int:
    return main(["promote", *args, "--runs-dir", str(runs_dir),
                 "--registry-dir", str(registry_dir)])


def test_promotion_records_who_when_why_and_metrics(runs_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("REGISTRY_USER", "editor-on-call")
    assert promote(runs_dir, tmp_path, "tiny_a", "--as", "production", "--reason", "launch") == 0
    assert "tiny_a is now production" in capsys.readouterr().out
    stored = json.loads((tmp_path / "registry.json").read_text())
    entry = stored["stages"]["production"]
    results = json.loads((runs_dir / "tiny_a" / "results.json").read_text())
    assert entry["promoted_by"] == "editor-on-call" and entry["reason"] == "launch"
    assert entry["metrics"]["test"]["f1_macro"] == results["test"]["f1_macro"]
    assert entry["run_dir"] == str((runs_dir / "tiny_a").resolve())

    classifier = BiasClassifier().load_model("production", registry_dir=tmp_path)
    direct = BiasClassifier().load_model(runs_dir / "tiny_a")
    sentence = "The senator's reckless scheme will ruin us."
    assert classifier.predict_proba([sentence]) == pytest.approx(direct.predict_proba([sentence]))

    assert main(["registry", "--registry-dir", str(tmp_path)]) == 0
    listing = capsys.readouterr().out
    assert "production  tiny_a" in listing and 'by editor-on-call  "launch"' in listing


def test_require_better_refuses_a_model_no_better_than_production(runs_dir, tmp_path, capsys):
    assert promote(runs_dir, tmp_path, "tiny_a", "--as", "production") == 0
    assert promote(runs_dir, tmp_path, "tiny_a_copy", "--as", "production",
                   "--require-better") == 1
    captured = capsys.readouterr()
    assert "difference +0.0000" in captured.out and "paired bootstrap p=1.000" in captured.out
    assert "tiny_a_copy was not promoted to production" in captured.err
    assert ModelRegistry(tmp_path).stages()["production"]["run_id"] == "tiny_a"
    assert len(ModelRegistry(tmp_path).history()) == 1

    # Without the flag it is promoted, and the comparison it was promoted on is kept.
    assert promote(runs_dir, tmp_path, "tiny_a_copy", "--as", "production") == 0
    entry = ModelRegistry(tmp_path).stages()["production"]
    assert entry["replaced_run_id"] == "tiny_a"
    assert entry["comparison"]["bootstrap"]["difference"] == 0.0
    assert entry["comparison"]["n"] == json.loads(
        (runs_dir / "tiny_a" / "results.json").read_text())["data"]["splits"]["test"]["size"]


def _run_on_the_whole_demo(runs: Path, run_id: str, learning_rate: float, epochs: int) -> Path:
    """A tiny run on all 400 demo sentences (80 test sentences: room for a real difference)."""
    config = ExperimentConfig.from_dict(tiny_config(
        data={"max_samples": 400}, training={"epochs": epochs, "learning_rate": learning_rate},
        logging={"tensorboard": False, "log_steps": 50, "save_steps": 1000}))
    return run_experiment(config, runs, run_id=run_id)


def test_require_better_promotes_a_candidate_that_is_better_on_productions_test_split(
        tmp_path, capsys):
    runs = tmp_path / "runs"
    weak = _run_on_the_whole_demo(runs, "barely_trained", learning_rate=1e-6, epochs=1)
    strong = _run_on_the_whole_demo(runs, "trained", learning_rate=5e-3, epochs=6)
    registry = tmp_path / "registry"
    assert promote(runs, registry, weak.name, "--as", "production") == 0
    capsys.readouterr()
    assert promote(runs, registry, strong.name, "--as", "production", "--require-better") == 0
    out = capsys.readouterr().out
    assert "trained is now production" in out
    entry = ModelRegistry(registry).stages()["production"]
    assert entry["run_id"] == "trained" and entry["replaced_run_id"] == "barely_trained"
    bootstrap = entry["comparison"]["bootstrap"]
    test_f1 = {run.name: json.loads((run / "results.json").read_text())["test"]["f1_macro"]
               for run in (weak, strong)}
    assert bootstrap["difference"] == pytest.approx(test_f1["trained"] - test_f1["barely_trained"])
    assert bootstrap["difference"] > 0.1 and bootstrap["p_value"] < 0.05
    assert entry["comparison"]["n"] == 80


def test_a_run_tested_on_other_sentences_cannot_be_compared(runs_dir, tmp_path, capsys):
    assert promote(runs_dir, tmp_path, "tiny_a", "--as", "production") == 0
    with pytest.raises(RegistryError, match="tested on other sentences than tiny_a"):
        compare_with_production(runs_dir / "tiny_other_split", runs_dir / "tiny_a")
    assert promote(runs_dir, tmp_path, "tiny_other_split", "--as", "candidate",
                   "--require-better") == 1
    assert "may have trained on production's test split" in capsys.readouterr().err
    assert promote(runs_dir, tmp_path, "tiny_other_split", "--as", "candidate") == 0
    assert "warning: no comparison" in capsys.readouterr().err
    assert ModelRegistry(tmp_path).stages()["candidate"]["comparison"] is None


def test_promoting_the_candidate_empties_the_candidate_stage(runs_dir, tmp_path):
    assert promote(runs_dir, tmp_path, "tiny_a", "--as", "production") == 0
    assert promote(runs_dir, tmp_path, "tiny_a_copy", "--as", "candidate") == 0
    assert promote(runs_dir, tmp_path, "candidate", "--as", "production") == 0
    stages = ModelRegistry(tmp_path).stages()
    assert stages["production"]["run_id"] == "tiny_a_copy" and "candidate" not in stages
    assert [entry["stage"] for entry in ModelRegistry(tmp_path).history()] == [
        "production", "candidate", "production"]


def test_registry_mistakes_are_explained(runs_dir, tmp_path, capsys):
    with pytest.raises(RegistryError, match="no production model in .*promote RUN_ID --as "
                                            "production"):
        BiasClassifier().load_model("production", registry_dir=tmp_path)
    assert promote(runs_dir, tmp_path, "tiny_nope", "--as", "production") == 1
    assert "No run or model named 'tiny_nope'" in capsys.readouterr().err
    unfinished = runs_dir.parent / "unfinished"
    shutil.copytree(runs_dir / "tiny_a", unfinished)
    results = json.loads((unfinished / "results.json").read_text())
    (unfinished / "results.json").write_text(json.dumps({**results, "status": "failed"}))
    assert promote(runs_dir, tmp_path, str(unfinished), "--as", "candidate") == 1
    assert "has status 'failed'; only a completed run" in capsys.readouterr().err
    (tmp_path / "registry.json").write_text("{not json")
    assert main(["registry", "--registry-dir", str(tmp_path)]) == 1
    assert "registry.json cannot be read" in capsys.readouterr().err
    assert main(["registry", "--registry-dir", str(tmp_path / "empty")]) == 0
    assert "is empty" in capsys.readouterr().out


def _promote_many(registry_dir: str, run_dir: str, count: int) -> None:
    registry = ModelRegistry(registry_dir)
    for number in range(count):
        registry.promote(run_dir, "candidate", reason=f"round {number}")


def test_promotions_from_two_processes_at_once_all_reach_the_history(tmp_path):
    import multiprocessing

    from backend.ml.run_directory import RunLayout, write_results

    run_dirs = []
    for name in ("first_run", "second_run"):
        layout = RunLayout(tmp_path / "runs" / name)
        layout.final_model.mkdir(parents=True)
        write_results(layout.root, {"status": "completed", "eval": {}, "test": {}})
        run_dirs.append(str(layout.root))
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_promote_many, args=(str(tmp_path / "registry"), run_dir, 25))
               for run_dir in run_dirs]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [worker.exitcode for worker in workers] == [0, 0]
    history = ModelRegistry(tmp_path / "registry").history()
    assert len(history) == 50
    assert {entry["run_id"] for entry in history} == {"first_run", "second_run"}
