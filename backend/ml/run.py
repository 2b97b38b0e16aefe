"""Composition root: turns an ExperimentConfig into data, model, trackers and a trained run.

>>> from backend.ml.config import load_yaml_config
>>> config = load_yaml_config("experiments/configs/quickstart.yaml")  # doctest: +SKIP
>>> run_dir = run_experiment(config)  # doctest: +SKIP
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from transformers import set_seed

from .config import ExperimentConfig, config_to_yaml, load_yaml_config
from .data import DataSplits, prepare_cv_folds, prepare_splits
from .distillation import (
    check_teachers,
    prepare_distillation,
    teacher_labelled_sentences,
    teacher_references,
)
from .errors import UserError, resume_command
from .languages import training_languages, write_training_languages
from .model_factory import ModelFactory
from .models import describe_model, load_saved_model
from .run_directory import (
    FINETUNING,
    PRETRAINING,
    RunLayout,
    read_results_or_empty,
    write_predictions,
)
from .training.checkpoints import latest_valid_checkpoint, load_checkpoint
from .training.classification import check_hidden_state_options
from .training.distributed import World, pick_device, start_world
from .training.evaluation import evaluate
from .training.precision import Precision, resolve_precision
from .training.session import RunSession
from .training.steps import global_batch_size, planned_steps
from .training.summary import format_model_info, format_run_summary
from .training.trainer import (
    ClassifierTrainer,
    EvaluationHook,
    TrainingOutcome,
    check_resume_world,
)


def _data_section(splits: DataSplits) -> dict:
    """results.json's ``data``: the splits' sizes and the training sentences' languages."""
    return {**splits.summary(), "languages": training_languages(splits.train.texts)}


def _training_section(outcome: TrainingOutcome, config: ExperimentConfig, world: World,
                      precision: Precision, train_size: int) -> dict:
    best, state, training = outcome.best_evaluation, outcome.state, config.training
    metric = training.early_stopping_metric
    return {
        "total_steps": state.global_step,
        "planned_steps": planned_steps(train_size, training, world.size),
        "epochs_completed": round(outcome.epochs_completed, 4),
        "stopped_early": outcome.stopped_early,
        "best_step": state.best_step,
        "best_epoch": round(state.best_epoch, 4),
        "best_metric": f"eval/{metric}",
        "best_value": best.metrics[metric] if best else None,
        "final_train_loss": outcome.final_train_loss,
        "world_size": world.size,
        "global_batch_size": global_batch_size(training, world.size),
        "mixed_precision": precision.mode,
        "group_by_length": training.group_by_length,
        "compile": training.compile,
        "weight_average": outcome.weight_average,
    }


def _publish_final_model(run_dir: Path) -> Path:
    """Copy the best checkpoint to final_model/ in one rename, so it is whole or absent."""
    layout = RunLayout(run_dir)
    final = layout.final_model
    staging = final.with_name(f".{final.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(layout.best_model, staging)
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    return final


def _calibrate(best_eval, test_eval, final_model: Path) -> dict:
    from .inference.calibration import calibration_report, fit_and_save_calibration

    calibration = fit_and_save_calibration(best_eval.logits, best_eval.labels, final_model)
    if test_eval is None:
        return calibration
    test_report = calibration_report(test_eval.logits, test_eval.labels,
                                     calibration["temperature"])
    return {**calibration, "test": test_report}


def _say(world: World, text: str) -> None:
    if world.is_main:
        print(text, flush=True)


def _train_and_finish(session: RunSession, splits: DataSplits, model, tokenizer,
                      resume_state: dict | None = None,
                      evaluation_hook: EvaluationHook | None = None) -> dict:
    """Train, evaluate the best model on test, publish final_model/ and write results.json.

    Every process trains and evaluates; only the main one writes files and trackers. A run
    whose splits hold no test sentences (a tuning trial) is scored on validation only.
    """
    config, world, run_dir = session.config, session.world, session.run_dir
    started = time.perf_counter()
    precision = resolve_precision(config.training.mixed_precision, world.device)
    _say(world, f"Training on {world.size} x {world.device.type}, mixed precision "
                f"{precision.mode} ({precision.reason}), global batch "
                f"{global_batch_size(config.training, world.size)}.")
    with session.recording():
        distilled = prepare_distillation(config, splits, run_dir, world, precision,
                                         stop=session.stop)
        if distilled is not None:
            splits, session.results["distillation"] = distilled.splits, distilled.summary
        trainer = ClassifierTrainer(model, tokenizer, splits, config, run_dir, session.trackers,
                                    world, precision, resume_state, evaluation_hook,
                                    distilled.teacher_targets() if distilled else None)
        outcome = trainer.train(session.stop)
        world.barrier()  # the main process has written checkpoints/best
        test_eval = _evaluate_test(config, splits, run_dir, world, precision)
        if world.is_main:
            _finish(session, splits, outcome, test_eval, precision, started)
    return session.results


def _evaluate_test(config: ExperimentConfig, splits: DataSplits, run_dir: Path, world: World,
                   precision: Precision):
    """The best checkpoint on the test split; None when the splits hold no test sentences."""
    if not len(splits.test):
        return None
    best_model, best_tokenizer = load_saved_model(RunLayout(run_dir).best_model)
    best_model.to(world.device)
    return evaluate(best_model, best_tokenizer, splits.test, "test", splits.label_names,
                    config.data.max_length, config.training.eval_batch_size, world.device,
                    precision=precision, world=world)


def _finish(session: RunSession, splits: DataSplits, outcome: TrainingOutcome, test_eval,
            precision: Precision, started: float) -> None:
    """The main process publishes final_model/, predictions, calibration and results.json."""
    run_dir, trackers, results = session.run_dir, session.trackers, session.results
    best_eval = outcome.best_evaluation
    if best_eval is None:  # the trainer evaluates at least once, at the end of training
        raise RuntimeError("training finished without a validation evaluation")
    final_model = _publish_final_model(run_dir)
    # Inference checks each input's language against these (inference reads no results.json).
    write_training_languages(final_model, results["data"]["languages"])
    write_predictions(RunLayout(run_dir).eval_predictions, best_eval)
    # Inference speed is measured on test, or on validation where a run has no test split.
    scored, scored_eval = ((splits.test, test_eval) if test_eval is not None
                           else (splits.validation, best_eval))
    if test_eval is not None:
        trackers.log_metrics({"epoch": outcome.epochs_completed,
                              **test_eval.prefixed_scalars()}, outcome.state.global_step)
        trackers.log_evaluation(test_eval, outcome.state.global_step)
        write_predictions(RunLayout(run_dir).test_predictions, test_eval)
        results["test"] = test_eval.metrics
    session.complete(
        training=_training_section(outcome, session.config, session.world, precision,
                                   len(splits.train)),
        eval=best_eval.metrics,
        calibration=_calibrate(best_eval, test_eval, final_model),
        timing={
            "total_seconds": time.perf_counter() - started,
            "train_seconds": outcome.state.train_seconds,
            "eval_seconds": outcome.state.eval_seconds,
            "checkpoint_seconds": outcome.state.checkpoint_seconds,
            "train_samples_per_second": outcome.train_samples_per_second,
            "eval_samples_per_second": len(scored.texts) / max(scored_eval.seconds, 1e-9),
        },
        final_model=final_model.name)


def run_experiment(config: ExperimentConfig, output_dir: str | Path | None = None,
                   run_id: str | None = None, splits: DataSplits | None = None,
                   evaluation_hook: EvaluationHook | None = None,
                   results_extra: dict | None = None, stage: str = FINETUNING) -> Path:
    """Train and evaluate one config into a new run directory; returns its path.

    Under ``torchrun --nproc_per_node N`` every process calls this; they train one model
    data-parallel and the main process writes the one run directory. ``splits`` replaces the
    config's data (a fold, a tuning trial's data without test sentences); ``evaluation_hook``
    sees every validation evaluation; ``results_extra`` is merged into results.json; ``stage``
    is results.json's ``stage`` (``retrain`` writes a retraining run).

    >>> config = ExperimentConfig.from_yaml("experiments/configs/quickstart.yaml")  # doctest: +SKIP
    >>> run_dir = run_experiment(config)  # doctest: +SKIP
    """
    world = start_world(config.training.device)
    set_seed(config.seed)
    splits = splits or prepare_splits(config.data, config.seed)
    check_student(config)
    check_teachers(config, [splits])  # before a run directory exists
    set_seed(config.seed)  # model initialisation must not depend on how data loading drew
    built = ModelFactory.create(config.model, splits.label_names,
                                training_texts=splits.train.texts)
    with RunSession.create(config, world, output_dir, run_id, stage) as session:
        _say(world, f"Run directory: {session.run_dir}\n{format_model_info(built.info)}")
        session.begin(model=built.info, data=_data_section(splits), **(results_extra or {}))
        _train_and_finish(session, splits, built.model, built.tokenizer,
                          evaluation_hook=evaluation_hook)
    _say(world, format_run_summary(session.results))
    return session.run_dir


def resume_run(run_dir: str | Path) -> Path:
    """Continue an interrupted run from its newest step checkpoint, in the same directory.

    Without any checkpoint the run starts over in that directory. A run trained by N processes
    resumes under the same launcher with N processes. A cross-validation run keeps its completed
    folds, resumes the interrupted one and trains the folds it had not reached. A pre-training
    run (results.json ``stage: pretraining``) resumes as pre-training.
    """
    run_dir = Path(run_dir)
    layout = RunLayout(run_dir)
    if not layout.config.is_file():
        raise UserError(f"{run_dir} is not a run directory (no config.yaml); give the path of a "
                        f"run under experiments/runs/")
    config = load_yaml_config(layout.config)
    if read_results_or_empty(run_dir).get("stage") == PRETRAINING:
        from .pretraining.run import format_pretraining_summary, resume_pretraining

        world = start_world(config.training.device)
        resume_pretraining(config, run_dir)
        _say(world, format_pretraining_summary(read_results_or_empty(run_dir), run_dir))
        return run_dir
    if _is_cross_validation_parent(run_dir):
        return _resume_cross_validation(config, run_dir)
    if run_dir.parent.name == "folds" and _is_cross_validation_parent(run_dir.parent.parent):
        raise UserError(f"{run_dir} is one fold of the cross-validation run "
                        f"{run_dir.parent.parent}; resume the whole run: "
                        f"{resume_command(run_dir.parent.parent)}")
    return _resume_single_run(config, run_dir)


def _is_cross_validation_parent(run_dir: Path) -> bool:
    return bool(read_results_or_empty(run_dir).get("data", {}).get("cv_folds"))


def _resume_single_run(config: ExperimentConfig, run_dir: Path,
                       splits: DataSplits | None = None) -> Path:
    layout = RunLayout(run_dir)
    world = start_world(config.training.device)
    # Entering the session is refused while the run's process lives.
    with RunSession.reopen(config, world, run_dir, FINETUNING) as session:
        set_seed(config.seed)
        splits = splits or prepare_splits(config.data, config.seed)
        checkpoint = latest_valid_checkpoint(layout.checkpoints)  # warns about damaged ones
        if checkpoint:
            model, tokenizer, state = load_checkpoint(checkpoint)
            check_resume_world(state, world, config.training.batch_size, run_dir)
            _say(world, f"Resuming {run_dir.name} from {checkpoint.name} "
                        f"(step {state['global_step']}).")
            model_info = {**session.earlier_results().get("model", {}), **describe_model(model)}
        else:
            _say(world, f"No checkpoint in {layout.checkpoints}: training {run_dir.name} "
                        f"from the start.")
            set_seed(config.seed)
            built = ModelFactory.create(config.model, splits.label_names,
                                        training_texts=splits.train.texts)
            model, tokenizer, state, model_info = built.model, built.tokenizer, None, built.info
        session.results["metadata"]["resumed_from_step"] = state["global_step"] if state else 0
        session.rewind_metrics(state["global_step"] if state else None)
        session.begin(model=model_info, data=_data_section(splits))
        _train_and_finish(session, splits, model, tokenizer, state)
    _say(world, format_run_summary(session.results))
    return run_dir


def run_cross_validation(config: ExperimentConfig, output_dir: str | Path | None = None,
                         run_id: str | None = None) -> Path:
    """Stratified k-fold CV: each fold is a full run under ``<parent>/folds/fold-k``."""
    world = start_world(config.training.device)
    folds = prepare_cv_folds(config.data, config.seed)
    check_student(config)
    check_teachers(config, folds)  # every fold's, before the first fold trains
    # The parent trains nothing itself: each fold's own session handles signals.
    session = RunSession.create(config, world, output_dir, run_id, FINETUNING)
    session.handles_signals = False
    return _train_folds(session, folds)


def _resume_cross_validation(config: ExperimentConfig, parent: Path) -> Path:
    world = start_world(config.training.device)
    session = RunSession.reopen(config, world, parent, FINETUNING, handles_signals=False)
    session.results["metadata"] = session.earlier_results().get("metadata",
                                                                session.results["metadata"])
    return _train_folds(session, prepare_cv_folds(config.data, config.seed))


def _train_folds(session: RunSession, folds: list[DataSplits]) -> Path:
    """Every fold of the session's run in turn; a completed fold is kept, a started one resumed."""
    from .experiments import aggregate_cross_validation

    config, world, layout = session.config, session.world, session.layout
    with session:  # the folds lock their own directories
        session.begin(track=False, data={"cv_folds": len(folds),
                                         "label_names": folds[0].label_names,
                                         "source": folds[0].source, "dataset": folds[0].dataset})
        fold_results = []
        with session.recording():
            for number, fold_splits in enumerate(folds, start=1):
                fold_dir = layout.fold(number).root
                earlier = read_results_or_empty(fold_dir)
                if earlier.get("status") == "completed":
                    _say(world, f"\n=== {config.experiment_name}: fold {number}/{len(folds)} "
                                f"completed earlier, kept ===")
                elif fold_dir.is_dir():
                    _say(world, f"\n=== {config.experiment_name}: fold {number}/{len(folds)}, "
                                f"resumed ===")
                    _resume_single_run(config, fold_dir, fold_splits)
                else:
                    _say(world, f"\n=== {config.experiment_name}: fold {number}/{len(folds)} ===")
                    run_experiment(config, layout.folds, run_id=fold_dir.name,
                                   splits=fold_splits)
                fold_results.append(read_results_or_empty(fold_dir))
        summary = aggregate_cross_validation(fold_results)
        means = {split: {key.split("/", 1)[1]: value for key, value in summary["mean"].items()
                         if key.startswith(f"{split}/")} for split in ("eval", "test")}
        session.complete(cross_validation=summary, model=fold_results[0].get("model", {}),
                         **means)
    _say(world, format_run_summary(session.results))
    return session.run_dir


def check_student(config: ExperimentConfig) -> None:
    """Refuse, before any teacher pass or run directory, options the model cannot train with."""
    check_hidden_state_options(
        config, ModelFactory.builds_registered_class(config.model.architecture))


def describe_plan(config: ExperimentConfig) -> str:
    """What a run of ``config`` would do: resolved YAML, data sizes and step counts."""
    lines = ["Resolved config:", config_to_yaml(config).rstrip(), "", "Plan:"]
    if config.data.cv_folds:
        taught = prepare_cv_folds(config.data, config.seed)
        lines.append(f"  cross-validation: {len(taught)} stratified folds of {taught[0].source}")
    else:
        taught = [prepare_splits(config.data, config.seed)]
        lines.append(f"  data: {taught[0].dataset} from {taught[0].source}")
    sizes = taught[0]
    for name in ("train", "validation", "test"):
        split = getattr(sizes, name)
        counts = ", ".join(f"{label} {count}" for label, count in
                           split.label_counts(sizes.label_names).items())
        lines.append(f"  {name:<10} {len(split):>6} sentences ({counts})")
    languages = training_languages(sizes.train.texts)
    lines.append("  languages: " + ", ".join(f"{code} {share:.1%}" for code, share in
                                             languages["shares"].items())
                 + f" of the training sentences; a model of them reads "
                 f"{', '.join(languages['languages']) or 'no language'}")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    training = config.training
    trained = len(sizes.train)
    check_student(config)
    if training.distillation.teacher:
        check_teachers(config, taught)
        unlabelled, _, augmented, _ = teacher_labelled_sentences(config, sizes)
        trained += len(unlabelled) + len(augmented)
        teachers = " + ".join(teacher_references(config))
        embedding_weight = training.distillation.embedding_weight
        matched = (f"; the student also matches its sentence embeddings (weight "
                   f"{embedding_weight:g})" if embedding_weight else "")
        lines.append(f"  distillation: from {teachers}, which also labels "
                     f"{len(unlabelled)} unlabelled sentence(s) and {len(augmented)} perturbed "
                     f"copies of training sentences: {trained} training sentences in all"
                     f"{matched}")
    steps = planned_steps(trained, training, world_size)
    lines.append(f"  model: {config.model.architecture} ({config.model.model_name}"
                 f"{'' if config.model.pretrained else ', randomly initialised'})")
    lines.append(f"  training: {steps} optimiser steps over {training.epochs} epoch(s) on "
                 f"{world_size} x {pick_device(training.device)}, global batch "
                 f"{global_batch_size(training, world_size)}, "
                 f"{training.lr_schedule} schedule, mixed precision {training.mixed_precision}")
    lines.append(f"  output: {Path(config.output_dir) / (config.experiment_name + '_<id>')}")
    return "\n".join(lines)
