"""Composition root: turns an ExperimentConfig into data, model, trackers and a trained run.

>>> from backend.ml.config import load_yaml_config
>>> run_dir = run_experiment(load_yaml_config("experiments/configs/quickstart.yaml"))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import torch
from transformers import set_seed

from .config import ExperimentConfig, config_to_yaml, load_yaml_config
from .data import DataSplits, prepare_cv_folds, prepare_splits
from .errors import UserError
from .fileio import atomic_write_text, read_jsonl
from .model_factory import ModelFactory
from .models import describe_model, load_saved_model
from .run_lock import RunLock
from .tracking import build_trackers
from .training.checkpoints import latest_valid_checkpoint, load_checkpoint
from .training.evaluation import evaluate
from .training.loop import TrainingOutcome, pick_device, train
from .training.run_directory import (create_run_directory, run_metadata, utc_now,
                                     write_predictions, write_results)
from .training.summary import format_model_info, format_run_summary

SCHEMA_VERSION = 1


def _new_results(config: ExperimentConfig, run_dir: Path, device: torch.device) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "experiment_id": run_dir.name,
        "experiment_name": config.experiment_name,
        "description": config.description,
        "tags": list(config.tags),
        "status": "running",
        "error": None,
        "metadata": run_metadata(str(device)),
    }


def _training_section(outcome: TrainingOutcome, metric: str, total_steps_planned: int) -> dict:
    best = outcome.best_evaluation
    return {
        "total_steps": outcome.global_step,
        "planned_steps": total_steps_planned,
        "epochs_completed": round(outcome.epochs_completed, 4),
        "stopped_early": outcome.stopped_early,
        "best_step": outcome.best_step,
        "best_epoch": round(outcome.best_epoch, 4),
        "best_metric": f"eval/{metric}",
        "best_value": best.metrics[metric] if best else None,
        "final_train_loss": outcome.final_train_loss,
    }


def _planned_steps(config: ExperimentConfig, train_size: int) -> int:
    training = config.training
    steps_per_epoch = math.ceil(math.ceil(train_size / training.batch_size)
                                / training.gradient_accumulation_steps)
    total = steps_per_epoch * training.epochs
    return min(total, training.max_steps) if training.max_steps else total


def _publish_final_model(run_dir: Path) -> Path:
    """Copy the best checkpoint to final_model/ in one rename, so it is whole or absent."""
    final = run_dir / "final_model"
    staging = run_dir / ".final_model.partial"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(run_dir / "checkpoints" / "best", staging)
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    return final


def _calibrate(best_eval, test_eval, final_model: Path) -> dict:
    from .inference.calibration import calibration_report, fit_and_save_calibration

    calibration = fit_and_save_calibration(best_eval.logits, best_eval.labels, final_model)
    test_report = calibration_report(test_eval.logits, test_eval.labels,
                                     calibration["temperature"])
    return {**calibration, "test": test_report}


def _train_and_finish(config: ExperimentConfig, splits: DataSplits, run_dir: Path, results: dict,
                      model, tokenizer, device: torch.device,
                      resume_state: dict | None = None) -> dict:
    """Train, evaluate the best model on test, publish final_model/ and write results.json."""
    started = time.perf_counter()
    trackers = build_trackers(config, run_dir)
    trackers.log_config(config.to_dict(), {key: results[key] for key in
                                           ("experiment_id", "metadata", "model", "data")})
    status = "failed"
    try:
        outcome = train(model, tokenizer, splits, config, run_dir, trackers, device, resume_state)
        best_model, best_tokenizer = load_saved_model(run_dir / "checkpoints" / "best")
        best_model.to(device)
        test_eval = evaluate(best_model, best_tokenizer, splits.test, "test", splits.label_names,
                             config.data.max_length, config.training.eval_batch_size, device)
        trackers.log_metrics({"epoch": outcome.epochs_completed, **test_eval.prefixed_scalars()},
                             outcome.global_step)
        trackers.log_evaluation(test_eval, outcome.global_step)
        best_eval = outcome.best_evaluation
        final_model = _publish_final_model(run_dir)
        write_predictions(run_dir / "predictions" / "test_predictions.csv", test_eval)
        write_predictions(run_dir / "predictions" / "eval_predictions.csv", best_eval)
        results.update({
            "status": "completed",
            "training": _training_section(outcome, config.training.early_stopping_metric,
                                          _planned_steps(config, len(splits.train))),
            "eval": best_eval.metrics,
            "test": test_eval.metrics,
            "calibration": _calibrate(best_eval, test_eval, final_model),
            "timing": {
                "total_seconds": time.perf_counter() - started,
                "train_seconds": outcome.train_seconds,
                "train_samples_per_second": outcome.train_samples_per_second,
                "eval_samples_per_second": len(splits.test) / max(test_eval.seconds, 1e-9),
            },
            "final_model": "final_model",
        })
        results["metadata"]["finished_at"] = utc_now()
        write_results(run_dir, results)
        trackers.log_summary(results, run_dir)
        status = "completed"
        return results
    except KeyboardInterrupt:
        status = "interrupted"
        _record_failure(run_dir, results, "interrupted", "stopped by the user (Ctrl-C)")
        raise
    except Exception as error:
        _record_failure(run_dir, results, "failed", f"{type(error).__name__}: {error}")
        raise
    finally:
        trackers.close(status)


def _record_failure(run_dir: Path, results: dict, status: str, message: str) -> None:
    results.update(status=status, error=message)
    results["metadata"]["finished_at"] = utc_now()
    write_results(run_dir, results)


def run_experiment(config: ExperimentConfig, output_dir: str | Path | None = None,
                   run_id: str | None = None, splits: DataSplits | None = None) -> Path:
    """Train and evaluate one config into a new run directory; returns its path.

    >>> run_dir = run_experiment(ExperimentConfig.from_yaml("experiments/configs/quickstart.yaml"))  # doctest: +SKIP
    """
    set_seed(config.seed)
    splits = splits or prepare_splits(config.data, config.seed)
    device = pick_device(config.training.device)
    set_seed(config.seed)  # model initialisation must not depend on how data loading drew
    built = ModelFactory.create(config.model, splits.label_names,
                                training_texts=splits.train.texts)
    run_dir = create_run_directory(output_dir or config.output_dir, config.experiment_name, run_id)
    with RunLock(run_dir, action="train"):  # held until results.json is final
        print(f"Run directory: {run_dir}")
        print(format_model_info(built.info))
        config.save_yaml(run_dir / "config.yaml")
        results = _new_results(config, run_dir, device)
        results.update(model=built.info, data=splits.summary())
        write_results(run_dir, results)
        _train_and_finish(config, splits, run_dir, results, built.model, built.tokenizer, device)
    print(format_run_summary(results))
    return run_dir


def _truncate_metrics_after(metrics_file: Path, step: int) -> None:
    # Points logged after the checkpoint are logged again by the resumed run.
    if metrics_file.is_file():
        kept = [record for record in read_jsonl(metrics_file) if record.get("step", 0) <= step]
        atomic_write_text(metrics_file, "".join(json.dumps(record) + "\n" for record in kept))


def resume_run(run_dir: str | Path) -> Path:
    """Continue an interrupted run from its newest step checkpoint, in the same directory.

    Without any checkpoint the run starts over in that directory.
    """
    run_dir = Path(run_dir)
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        raise UserError(f"{run_dir} is not a run directory (no config.yaml); give the path of a "
                        f"run under experiments/runs/")
    with RunLock(run_dir, action="resume"):  # refused while the run's process lives
        config = load_yaml_config(config_file)
        set_seed(config.seed)
        splits = prepare_splits(config.data, config.seed)
        device = pick_device(config.training.device)
        results = _new_results(config, run_dir, device)
        checkpoint = latest_valid_checkpoint(run_dir / "checkpoints")  # warns about damaged ones
        if checkpoint:
            model, tokenizer, state = load_checkpoint(checkpoint)
            print(f"Resuming {run_dir.name} from {checkpoint.name} "
                  f"(step {state['global_step']}).")
            _truncate_metrics_after(run_dir / "metrics.jsonl", state["global_step"])
            model_info = {**_read_results(run_dir).get("model", {}), **describe_model(model)}
        else:
            print(f"No checkpoint in {run_dir / 'checkpoints'}: training {run_dir.name} from "
                  f"the start.")
            (run_dir / "metrics.jsonl").unlink(missing_ok=True)
            set_seed(config.seed)
            built = ModelFactory.create(config.model, splits.label_names,
                                        training_texts=splits.train.texts)
            model, tokenizer, state, model_info = built.model, built.tokenizer, None, built.info
        results.update(model=model_info, data=splits.summary())
        results["metadata"]["resumed_from_step"] = state["global_step"] if state else 0
        write_results(run_dir, results)
        _train_and_finish(config, splits, run_dir, results, model, tokenizer, device, state)
    print(format_run_summary(results))
    return run_dir


def _read_results(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def run_cross_validation(config: ExperimentConfig, output_dir: str | Path | None = None,
                         run_id: str | None = None) -> Path:
    """Stratified k-fold CV: each fold is a full run under ``<parent>/folds/fold-k``."""
    from .experiments import aggregate_cross_validation

    folds = prepare_cv_folds(config.data, config.seed)
    parent = create_run_directory(output_dir or config.output_dir, config.experiment_name, run_id)
    with RunLock(parent, action="train"):  # the folds lock their own directories
        config.save_yaml(parent / "config.yaml")
        device = pick_device(config.training.device)
        results = _new_results(config, parent, device)
        results["data"] = {"cv_folds": len(folds), "label_names": folds[0].label_names,
                           "source": folds[0].source, "dataset": folds[0].dataset}
        write_results(parent, results)
        fold_results = []
        try:
            for number, fold_splits in enumerate(folds, start=1):
                print(f"\n=== {config.experiment_name}: fold {number}/{len(folds)} ===")
                fold_dir = run_experiment(config, parent / "folds", run_id=f"fold-{number}",
                                          splits=fold_splits)
                fold_results.append(_read_results(fold_dir))
        except KeyboardInterrupt:
            _record_failure(parent, results, "interrupted", "stopped by the user (Ctrl-C)")
            raise
        except Exception as error:
            _record_failure(parent, results, "failed", f"{type(error).__name__}: {error}")
            raise
        summary = aggregate_cross_validation(fold_results)
        results.update(status="completed", cross_validation=summary,
                       model=fold_results[0].get("model", {}))
        for split in ("eval", "test"):
            results[split] = {key.split("/", 1)[1]: value for key, value in summary["mean"].items()
                              if key.startswith(f"{split}/")}
        results["metadata"]["finished_at"] = utc_now()
        write_results(parent, results)
    print(format_run_summary(results))
    return parent


def describe_plan(config: ExperimentConfig) -> str:
    """What a run of ``config`` would do: resolved YAML, data sizes and step counts."""
    lines = ["Resolved config:", config_to_yaml(config).rstrip(), "", "Plan:"]
    if config.data.cv_folds:
        folds = prepare_cv_folds(config.data, config.seed)
        lines.append(f"  cross-validation: {len(folds)} stratified folds of {folds[0].source}")
        sizes = folds[0]
    else:
        sizes = prepare_splits(config.data, config.seed)
        lines.append(f"  data: {sizes.dataset} from {sizes.source}")
    for name in ("train", "validation", "test"):
        split = getattr(sizes, name)
        counts = ", ".join(f"{label} {count}" for label, count in
                           split.label_counts(sizes.label_names).items())
        lines.append(f"  {name:<10} {len(split):>6} sentences ({counts})")
    steps = _planned_steps(config, len(sizes.train))
    lines.append(f"  model: {config.model.architecture} ({config.model.model_name}"
                 f"{'' if config.model.pretrained else ', randomly initialised'})")
    lines.append(f"  training: {steps} optimiser steps over {config.training.epochs} epoch(s), "
                 f"device {pick_device(config.training.device)}")
    lines.append(f"  output: {Path(config.output_dir) / (config.experiment_name + '_<id>')}")
    return "\n".join(lines)
