"""Knowledge distillation on tiny models: the student learns the teacher's probabilities, each
cross-validation fold learns from the teacher's same fold only, and unlabelled sentences that
are evaluation sentences never reach training."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.ml import distillation
from backend.ml.config import ExperimentConfig
from backend.ml.data import DataSplits, SplitData, prepare_cv_folds, prepare_splits
from backend.ml.errors import UserError
from backend.ml.inference.loading import cross_validation_models
from backend.ml.models import load_saved_model
from backend.ml.run import run_cross_validation, run_experiment
from backend.ml.run_directory import RunLayout, read_results
from backend.ml.training.distributed import World
from backend.ml.training.precision import resolve_precision
from support.cli import REPO_ROOT, cli_environment, run_cli, run_main
from support.configs import tiny_config, write_config

pytestmark = pytest.mark.usefixtures("no_network")

QUIET = {"tensorboard": False, "log_steps": 50, "save_steps": 0, "save_minutes": 0}
CV_DATA = {"cv_folds": 2, "max_samples": 60}  # two folds of a few optimiser steps each


def _config(**sections) -> ExperimentConfig:
    return ExperimentConfig.from_dict(tiny_config(logging=QUIET, **sections))


def _distilled(teacher: Path | str, **distillation_fields) -> dict:
    return {"distillation": {"teacher": str(teacher), **distillation_fields}}


def _probabilities(model_dir: Path, texts: list[str]) -> np.ndarray:
    model, tokenizer = load_saved_model(model_dir)
    with torch.no_grad():
        logits = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits
    return torch.softmax(logits, dim=-1).numpy()


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory) -> Path:
    """A teacher with an opinion no label gives: "No agreement" at 0.9 for every sentence (its
    classifier ignores the sentence), saved in a run directory as training saves one."""
    from backend.ml.models import ModelFactory, save_model

    config = _config()
    splits = prepare_splits(config.data, config.seed)
    torch.manual_seed(0)
    built = ModelFactory.create(config.model, splits.label_names, splits.train.texts)
    classifier = built.model.classifier
    assert isinstance(classifier, torch.nn.Linear)
    with torch.no_grad():
        classifier.weight.zero_()
        classifier.bias.copy_(torch.log(torch.tensor([0.05, 0.05, 0.9])))
    run_dir = tmp_path_factory.mktemp("teacher") / "teacher"
    save_model(built.model, built.tokenizer, RunLayout(run_dir).final_model, splits.label_names)
    return run_dir


def test_a_distilled_student_learns_the_teachers_probabilities(teacher_run, tmp_path):
    splits = prepare_splits(_config().data, 7)
    new = ["The reckless mayor wrecked the budget again.", "Rain is expected on Tuesday."]
    (tmp_path / "unlabelled.txt").write_text("\n".join([*new, splits.test.texts[0]]) + "\n")
    run_dir = run_experiment(_config(training={
        "epochs": 2, "learning_rate": 1e-2, "lr_schedule": "constant", "warmup_steps": 0,
        **_distilled(
        teacher_run, soft_weight=1.0, temperature=1.0,
        unlabelled_files=[str(tmp_path / "unlabelled.txt")])}), tmp_path, run_id="student")

    # The gold labels hold about 1 in 6 "No agreement"; the student follows the teacher's 0.9.
    student = _probabilities(RunLayout(run_dir).final_model, splits.test.texts)
    np.testing.assert_allclose(student.mean(axis=0), [0.05, 0.05, 0.9], atol=0.05)
    results = read_results(run_dir)
    assert results["distillation"]["teacher_models"] == [str(RunLayout(teacher_run).final_model)]
    assert results["distillation"]["unlabelled"]["added"] == 2
    assert results["distillation"]["unlabelled"]["in_evaluation_dropped"] == 1
    # The teacher labelled the new sentences once; the test sentence never reached training.
    cache = json.loads(RunLayout(run_dir).teacher_logits.read_text())
    assert np.array(cache["logits"]).shape == (1, len(splits.train) + 2, 3)
    assert results["training"]["planned_steps"] == 2 * -(-(len(splits.train) + 2) // 16)


def test_teacher_logits_are_computed_once_and_read_back_from_the_run(teacher_run, tmp_path,
                                                                    monkeypatch):
    config = _config(training=_distilled(teacher_run))
    splits = prepare_splits(config.data, config.seed)
    world = World(rank=0, size=1, device=torch.device("cpu"))
    precision = resolve_precision("no", world.device)
    first = distillation.prepare_distillation(config, splits, tmp_path, world, precision)

    def no_second_teacher_pass(*args, **kwargs):
        raise AssertionError("the teacher ran again instead of the cache being read")

    monkeypatch.setattr(distillation, "_model_outputs", no_second_teacher_pass)
    again = distillation.prepare_distillation(config, splits, tmp_path, world, precision)
    assert first is not None and again is not None
    np.testing.assert_allclose(again.soft_targets, first.soft_targets)


def _embeddings(model_dir: Path, texts: list[str]) -> np.ndarray:
    """The mean of the model's last hidden states over each text's tokens, computed here."""
    model, tokenizer = load_saved_model(model_dir)
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**encoded, output_hidden_states=True).hidden_states[-1]
    mask = encoded["attention_mask"].unsqueeze(-1).float()
    return ((hidden * mask).sum(dim=1) / mask.sum(dim=1)).numpy()


def test_an_embedding_distilled_run_caches_the_teachers_sentence_embeddings(teacher_run,
                                                                            tmp_path):
    from safetensors.torch import load_file

    config = ExperimentConfig.from_dict(tiny_config(
        training={"epochs": 2, "mixed_precision": "no",
                  **_distilled(teacher_run, embedding_weight=1.0)},
        logging={**QUIET, "save_steps": 4}))
    splits = prepare_splits(config.data, config.seed)
    run_dir = run_experiment(config, tmp_path, run_id="student")

    with np.load(RunLayout(run_dir).teacher_embeddings) as stored:
        cached = stored["embeddings"]
    assert cached.shape == (len(splits.train), 32)  # the tiny teacher's hidden size
    np.testing.assert_allclose(cached[:5], _embeddings(RunLayout(teacher_run).final_model,
                                                       splits.train.texts[:5]), atol=1e-4)
    summary = read_results(run_dir)["distillation"]
    assert summary["embedding_weight"] == 1.0 and summary["teacher_embedding_size"] == 32
    # The map to the teacher's width trains with the student and resumes with it, but the
    # saved model is the plain classifier.
    checkpoint = sorted((run_dir / "checkpoints").glob("step-*"))[0]
    state = torch.load(checkpoint / "training_state.pt", weights_only=False)
    assert state["embedding_projection"]["weight"].shape == (32, 32)
    saved = load_file(RunLayout(run_dir).final_model / "model.safetensors")
    assert not any("embedding_projection" in name for name in saved)


def test_the_embedding_loss_turns_the_students_embeddings_toward_the_teachers(teacher_run,
                                                                             tmp_path):
    from backend.ml.models import ModelFactory
    from backend.ml.training.classification import ClassificationObjective
    from backend.ml.training.recipes import embedding_distances

    config = _config(training=_distilled(teacher_run, embedding_weight=1.0, soft_weight=0.0))
    splits = prepare_splits(config.data, config.seed)
    world = World(rank=0, size=1, device=torch.device("cpu"))
    precision = resolve_precision("no", world.device)
    data = distillation.prepare_distillation(config, splits, tmp_path, world, precision)
    assert data is not None
    torch.manual_seed(0)
    built = ModelFactory.create(config.model, splits.label_names, splits.train.texts)
    objective = ClassificationObjective(built.model, built.tokenizer, data.splits, config,
                                        precision, data.teacher_targets())
    batch = objective.collate([objective.train_data[index]
                               for index in range(len(objective.train_data))])

    def mean_distance() -> float:
        objective.trained.eval()
        with torch.no_grad():
            mapped = objective.trained(batch["input_ids"], batch["attention_mask"]).embedding
        objective.trained.train()
        return float(embedding_distances(mapped, batch["teacher_embeddings"]).mean())

    before = mean_distance()
    optimizer = torch.optim.AdamW(objective.trained.parameters(), lr=1e-2)
    for _ in range(30):
        losses, _ = objective.losses(objective.trained, batch)
        losses.mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    after = mean_distance()
    assert before > 0.5 and after < before / 4, (before, after)


@pytest.mark.slow
def test_two_processes_distil_embeddings_as_one_process_does(teacher_run, tmp_path):
    """gloo on CPU: the main process alone runs the teacher; both read its cache, and the map
    to the teacher's width trains under DistributedDataParallel like the classifier."""
    from test_training_engine import torchrun

    sections = {"model": {"dropout": 0.0}, "logging": QUIET}
    distilled = _distilled(teacher_run, embedding_weight=1.0)
    single = write_config(tmp_path, tiny_config(training={
        "batch_size": 16, "mixed_precision": "no", **distilled}, **sections), "single.yaml")
    pair = write_config(tmp_path, tiny_config(training={
        "batch_size": 8, "mixed_precision": "no", **distilled}, **sections), "pair.yaml")
    runs = tmp_path / "runs"
    run_cli(str(single), "--output-dir", str(runs), "--run-id", "single", check=True)
    completed = torchrun(str(pair), "--output-dir", str(runs), "--run-id", "pair")
    assert completed.returncode == 0, completed.stderr[-3000:]
    # One teacher bar, begun once (its 100% line may be drawn twice: on the last update and on
    # closing), so only the main process ran the teacher.
    assert completed.stderr.count("teacher:   0%") == 1

    one, two = read_results(runs / "single"), read_results(runs / "pair")
    assert two["training"]["world_size"] == 2
    assert two["distillation"]["teacher_embedding_size"] == 32
    for split in ("eval", "test"):
        assert two[split]["loss"] == pytest.approx(one[split]["loss"], abs=1e-5)


def test_unlabelled_sentences_in_the_evaluation_splits_are_dropped_and_counted(tmp_path):
    splits = DataSplits(SplitData(["Train one."], [0]), SplitData(["Valid one."], [1]),
                        SplitData(["Test one.", "Test two."], [0, 1]), ["a", "b"], "memory",
                        "demo")
    (tmp_path / "news.txt").write_text("Test one.\nA new sentence.\n\n  test  ONE.\n")
    (tmp_path / "news.jsonl").write_text(
        '{"text": "Valid one."}\n{"text": "Train one."}\n{"text": "A new sentence."}\n'
        '{"text": "Another new one."}\n')
    (tmp_path / "news.csv").write_text("id,text\n1,Test two.\n2,A third new one.\n")
    files = [str(tmp_path / name) for name in ("news.txt", "news.jsonl", "news.csv")]
    kept, counts = distillation.unlabelled_sentences(files, splits, "none")
    assert kept == ["A new sentence.", "Another new one.", "A third new one."]
    assert counts == {"read": 9, "in_evaluation_dropped": 4, "in_training_dropped": 1,
                      "duplicates_dropped": 1, "added": 3}


def test_unlabelled_articles_are_split_into_sentences_before_the_evaluation_check(tmp_path):
    splits = DataSplits(SplitData(["Train one."], [0]), SplitData(["Valid one."], [1]),
                        SplitData(["Mr. Smith lied to the U.S. Senate again."], [1]),
                        ["a", "b"], "memory", "demo")
    (tmp_path / "articles.txt").write_text(
        "Mr. Smith lied to the U.S. Senate again. The vote is on Monday. Train one.\n"
        "Critics called the plan reckless. The vote is on Monday.\n")
    files = [str(tmp_path / "articles.txt")]

    kept, counts = distillation.unlabelled_sentences(files, splits, "none", split_articles=True)
    # The test sentence hidden inside the first article is found and dropped, not taught.
    assert kept == ["The vote is on Monday.", "Critics called the plan reckless."]
    assert counts == {"read": 5, "in_evaluation_dropped": 1, "in_training_dropped": 1,
                      "duplicates_dropped": 1, "added": 2}
    # Without splitting each line is one input, and the test sentence inside it goes unseen.
    whole, _ = distillation.unlabelled_sentences(files, splits, "none")
    assert len(whole) == 2 and whole[0].startswith("Mr. Smith lied")


def test_augmented_copies_perturb_training_sentences_and_skip_evaluation_ones():
    train = ["Good news.", "The reckless senator lied again today.", "Rain on Monday."]
    splits = DataSplits(SplitData(train, [0, 1, 0]), SplitData(["news."], [1]),
                        SplitData(["Good", "Good Good"], [0, 1]), ["a", "b"], "memory", "demo")
    made = distillation.augmented_sentences(train, 20, 0.5, np.random.default_rng(3))
    assert made == distillation.augmented_sentences(train, 20, 0.5, np.random.default_rng(3))
    assert len(made) == 60
    vocabulary = {word for text in train for word in text.split()}
    assert all(copy.split() and set(copy.split()) <= vocabulary for copy in made)
    assert all(copy not in train for copy in made[1::3])  # the long one always changes

    kept, counts = distillation.new_sentences(made, splits, already_kept=["Rain on"])
    # Two-word "Good news." often becomes "news." or "Good", the held-out sentences.
    assert counts["in_evaluation_dropped"] > 0
    assert not {"news.", "Good", "Good Good", "Rain on"} & set(kept)
    assert not set(kept) & set(train)
    assert len(kept) == len(set(kept)) == counts["added"]
    assert counts["read"] == 60 == counts["added"] + sum(
        counts[kind] for kind in ("in_evaluation_dropped", "in_training_dropped",
                                  "duplicates_dropped"))


def test_a_student_learns_from_teacher_labelled_copies_of_its_training_sentences(
        teacher_run, tmp_path, capsys):
    config = _config(training={"epochs": 1, **_distilled(teacher_run, augmented_copies=2)})
    run_dir = run_experiment(config, tmp_path, run_id="student")

    train = len(prepare_splits(config.data, config.seed).train)
    augmented = read_results(run_dir)["distillation"]["augmented"]
    assert augmented["read"] == 2 * train
    assert 1.5 * train < augmented["added"] <= 2 * train
    cache = json.loads(RunLayout(run_dir).teacher_logits.read_text())
    assert np.array(cache["logits"]).shape == (1, train + augmented["added"], 3)
    planned = read_results(run_dir)["training"]["planned_steps"]
    assert planned == -(-(train + augmented["added"]) // 16)
    # The teacher's pass over them shows its progress, as training does.
    labelled = train + augmented["added"]
    progress = capsys.readouterr().err
    assert "teacher: 100%" in progress and f" {labelled}/{labelled} " in progress


@pytest.mark.slow
def test_a_signal_during_the_teachers_pass_stops_it_and_resume_starts_it_again(
        teacher_run, tmp_path):
    config = write_config(tmp_path, tiny_config(
        training={"epochs": 1, "eval_batch_size": 4, **_distilled(teacher_run)}, logging=QUIET))
    # A real SIGINT as the second of the teacher's batches starts; it has a dozen or so.
    stopped = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tests" / "support" / "kill_at.py"), "teacher-batch@2:INT",
         str(REPO_ROOT / "run_experiment.py"), str(config), "--output-dir", str(tmp_path / "runs"),
         "--run-id", "student"], cwd=REPO_ROOT, env=cli_environment(), capture_output=True,
        text=True, timeout=120)
    run_dir = tmp_path / "runs" / "student"
    assert stopped.returncode == 130, stopped.stderr[-2000:]
    assert ("Interrupted (stopped by SIGINT during the teacher's pass); the run directory is "
            f"marked 'interrupted'. Continue it with: python run_experiment.py resume "
            f"{run_dir}\n") in stopped.stderr
    assert "teacher: 100%" not in stopped.stderr and "Traceback" not in stopped.stderr
    results = read_results(run_dir)
    assert results["status"] == "interrupted" and "teacher's pass" in results["error"]
    assert not RunLayout(run_dir).teacher_logits.exists()
    assert not list(RunLayout(run_dir).checkpoints.glob("step-*"))  # no training step was taken

    resumed = run_cli("resume", str(run_dir), check=True)
    assert "teacher: 100%" in resumed.stderr
    assert read_results(run_dir)["status"] == "completed"
    assert RunLayout(run_dir).teacher_logits.is_file()


def test_the_dry_run_plan_counts_the_sentences_the_teacher_adds(teacher_run, tmp_path):
    from backend.ml.run import describe_plan

    (tmp_path / "news.txt").write_text("A new sentence.\nAnother new one.\n")
    config = _config(training=_distilled(teacher_run, augmented_copies=1,
                                         unlabelled_files=[str(tmp_path / "news.txt")]))
    train = len(prepare_splits(config.data, config.seed).train)
    plan = describe_plan(config)
    line = next(line for line in plan.splitlines() if line.startswith("  distillation: from"))
    copies = int(line.split(" perturbed")[0].rsplit(" ", 1)[1])
    assert f"labels 2 unlabelled sentence(s) and {copies} perturbed" in line
    assert 0.9 * train < copies <= train
    assert line.endswith(f"{train + 2 + copies} training sentences in all")
    embedding_config = _config(training=_distilled(teacher_run, embedding_weight=0.5))
    assert "training sentences in all; the student also matches its sentence embeddings " \
           "(weight 0.5)" in describe_plan(embedding_config)
    steps = -(-(train + 2 + copies) // 16) * config.training.epochs
    assert f"training: {steps} optimiser steps" in plan


@pytest.fixture(scope="module")
def cv_teacher(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("cv_teacher")
    return run_cross_validation(_config(data=CV_DATA, training={"epochs": 1}), runs,
                                run_id="cv_teacher")


def test_each_cross_validation_fold_learns_from_the_same_fold_of_the_teacher(cv_teacher,
                                                                            tmp_path):
    student = run_cross_validation(
        _config(data=CV_DATA, training={"epochs": 1, **_distilled(cv_teacher)}),
        tmp_path, run_id="cv_student")
    teachers = cross_validation_models(cv_teacher)
    assert teachers is not None
    for number, teacher in enumerate(teachers, start=1):
        fold = read_results(RunLayout(student).fold(number).root)
        assert fold["distillation"]["teacher_models"] == [str(teacher)]


def test_a_list_of_cross_validation_teachers_teaches_each_fold_as_an_ensemble(
        cv_teacher, tmp_path):
    second = run_cross_validation(
        _config(data=CV_DATA, training={"epochs": 3, "learning_rate": 3e-2}), tmp_path,
        run_id="second_teacher")
    config = _config(data=CV_DATA, training={"distillation": {
        "teacher": [str(cv_teacher), str(second)], "temperature": 1.0}})
    world = World(rank=0, size=1, device=torch.device("cpu"))
    fold = prepare_cv_folds(config.data, config.seed)[1]
    data = distillation.prepare_distillation(config, fold, tmp_path / "student", world,
                                             resolve_precision("no", world.device))
    members = [cross_validation_models(run)[1] for run in (cv_teacher, second)]
    assert data is not None and data.summary["teacher_models"] == [str(path) for path in members]
    texts = fold.train.texts[:4]
    expected = np.mean([_probabilities(path, texts) for path in members], axis=0)
    np.testing.assert_allclose(data.soft_targets[:4], expected, atol=1e-4)
    assert not np.allclose(expected, _probabilities(members[0], texts), atol=1e-3)


def test_a_cross_validation_student_refuses_a_teacher_that_may_have_seen_its_test_fold(
        cv_teacher, teacher_run, tmp_path):
    with pytest.raises(UserError, match="is a single model, but this run cross-validates"):
        run_cross_validation(_config(data=CV_DATA,
                                     training={"epochs": 1, **_distilled(teacher_run)}),
                             tmp_path, run_id="single_teacher")
    # Another seed draws other folds: the teacher's fold 1 trained on this fold 1's test part.
    with pytest.raises(UserError, match="fold 1 of the teacher .* was tested on other sentences"):
        run_cross_validation(_config(seed=8, data=CV_DATA,
                                     training={"epochs": 1, **_distilled(cv_teacher)}),
                             tmp_path, run_id="other_folds")
    assert list(tmp_path.iterdir()) == []  # refused before a run directory was made


def test_a_seed_placeholder_gives_each_seed_of_a_sweep_its_own_teacher(tmp_path, capsys):
    teachers = tmp_path / "teachers"
    for seed in (42, 8):  # each seed draws its own folds: a teacher per seed
        run_cross_validation(_config(seed=seed, data=CV_DATA, training={"epochs": 1}), teachers,
                             run_id=f"mpnet_seed{seed}")
    config = write_config(tmp_path, tiny_config(
        experiment_name="student", data=CV_DATA, logging=QUIET, sweep={"seed": [42, 8]},
        training={"epochs": 1, **_distilled(teachers / "mpnet_seed{seed}")}))
    runs = tmp_path / "runs"
    swept = run_main(capsys, str(config), "--output-dir", str(runs), check=True)
    for seed in (42, 8):
        (student,) = runs.glob(f"student__seed-{seed}_*")
        taught = cross_validation_models(teachers / f"mpnet_seed{seed}")
        assert taught is not None
        for number, teacher in enumerate(taught, start=1):
            fold = read_results(RunLayout(student).fold(number).root)
            assert fold["distillation"]["teacher_models"] == [str(teacher)]
    # Both students are one recipe at two seeds: the sweep's closing lines summarise them.
    closing = swept.stdout[swept.stdout.rindex("across seeds"):].splitlines()
    assert closing[1].startswith("  student: ")
    assert "over 2 seeds (8, 42; splits drawn by each seed)" in closing[1]


def test_a_teacher_placeholder_other_than_seed_is_refused():
    from backend.ml.errors import ConfigError

    with pytest.raises(ConfigError) as raised:
        _config(training={"distillation": {"teacher": "runs/mpnet_{fold}"}})
    assert raised.value.problems == [
        "training.distillation.teacher: runs/mpnet_{fold} has a placeholder other than {seed}, "
        "the only one replaced (by the run's seed)"]


def test_a_missing_teacher_is_named_before_anything_is_written(tmp_path, capsys):
    missing = tmp_path / "no_such_run"
    config = write_config(tmp_path, tiny_config(data=CV_DATA, logging=QUIET,
                                                training=_distilled(missing)))
    for dry_run in (["--dry-run"], []):
        refused = run_main(capsys, str(config), "--output-dir", str(tmp_path / "runs"), *dry_run)
        assert refused.returncode == 1, refused.stderr
        assert refused.stderr.startswith(
            f"error: training.distillation.teacher: No run or model named '{missing}'")
    assert not (tmp_path / "runs").exists()


def test_a_non_cv_student_of_a_cv_teacher_learns_from_the_fold_ensemble(cv_teacher, tmp_path):
    config = _config(training=_distilled(cv_teacher, temperature=1.0))
    splits = prepare_splits(config.data, config.seed)
    world = World(rank=0, size=1, device=torch.device("cpu"))
    data = distillation.prepare_distillation(config, splits, tmp_path, world,
                                             resolve_precision("no", world.device))
    members = cross_validation_models(cv_teacher)
    assert data is not None and members is not None
    assert data.summary["teacher_models"] == [str(path) for path in members]
    expected = np.mean([_probabilities(path, splits.train.texts[:4]) for path in members], axis=0)
    np.testing.assert_allclose(data.soft_targets[:4], expected, atol=1e-4)


def test_a_teacher_listed_twice_is_refused(cv_teacher):
    from backend.ml.errors import ConfigError

    with pytest.raises(ConfigError) as raised:
        _config(training={"distillation": {"teacher": [str(cv_teacher), "", str(cv_teacher)]}})
    assert raised.value.problems == [
        "training.distillation.teacher[1]: is empty; name a run, a run directory or a registry "
        "stage",
        f"training.distillation.teacher[2]: {cv_teacher} is listed twice; each teacher counts "
        f"once in the ensemble"]
    # One teacher stays text; a list stays a list.
    assert _config(training=_distilled(cv_teacher)).training.distillation.teacher == str(
        cv_teacher)
    listed = _config(training={"distillation": {"teacher": [str(cv_teacher)]}})
    assert listed.training.distillation.teacher == [str(cv_teacher)]


def test_distillation_settings_are_validated_with_their_fixes(tmp_path):
    from backend.ml.errors import ConfigError

    (tmp_path / "news.json").write_text("")
    with pytest.raises(ConfigError) as raised:
        _config(training={"distillation": {
            "unlabelled_files": [str(tmp_path / "news.json"), str(tmp_path / "missing.txt")],
            "temperature": 0, "soft_weight": 1.5, "augmented_copies": 2,
            "augmentation_rate": 1.0}})
    assert raised.value.problems == [
        "training.distillation.temperature: must be > 0, got 0",
        "training.distillation.soft_weight: must be <= 1, got 1.5",
        "training.distillation.augmentation_rate: must be < 1, got 1",
        "training.distillation.unlabelled_files: only a teacher can label them; set "
        "training.distillation.teacher or remove the files",
        "training.distillation.augmented_copies: only a teacher can label the copies; set "
        "training.distillation.teacher or set it to 0",
        f"training.distillation.unlabelled_files[0]: {tmp_path / 'news.json'} must be a .txt "
        f"(one sentence per line), .csv or .xlsx (a 'text' column) or .jsonl file (objects "
        f"with 'text')",
        f"training.distillation.unlabelled_files[1]: {tmp_path / 'missing.txt'} does not exist; "
        f"check the path (relative paths start from the directory you run in)"]

    with pytest.raises(ConfigError) as raised:
        _config(training={"distillation": {"embedding_weight": 1.0}})
    assert raised.value.problems == [
        "training.distillation.embedding_weight: only a teacher has embeddings to match; set "
        "training.distillation.teacher or set it to 0"]

    with pytest.raises(ConfigError) as raised:
        _config(training={"distillation": {"teacher": "babe_mpnet_cv", "split_articles": True}})
    assert raised.value.problems == [
        "training.distillation.split_articles: there are no unlabelled files to split; set "
        "training.distillation.unlabelled_files or remove it"]
