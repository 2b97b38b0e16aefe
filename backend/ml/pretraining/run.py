"""A pre-training run: corpus, masked language model, trackers and a run directory with an encoder.

>>> from backend.ml.config import load_yaml_config
>>> config = load_yaml_config("experiments/configs/babe_minilm_dapt.yaml")
>>> run_dir = run_pretraining(config)  # doctest: +SKIP
>>> # then fine-tune with model.model_name: <run_dir>/encoder
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from transformers import set_seed

from ..config import ExperimentConfig
from ..models import describe_model, set_attention
from ..run_directory import (
    SCHEMA_VERSION,
    RunLayout,
    create_run_directory,
    run_metadata,
    write_results,
)
from ..tracking import build_trackers
from ..training.distributed import pick_device
from ..training.outcome import failures_recorded, record_outcome
from ..training.precision import resolve_attention, resolve_precision
from .corpus import collect_corpus
from .model import ENCODER_DIR, build_masked_lm, save_encoder
from .trainer import MaskedLanguageModelTrainer

logger = logging.getLogger(__name__)

STAGE = "pretraining"  # results.json "stage": what kind of run a directory holds


def _model_section(config: ExperimentConfig, built) -> dict:
    return {"architecture": config.model.architecture, "model_name": config.model.model_name,
            "pretrained": config.model.pretrained, "source": built.source,
            "class": type(built.model).__name__, "new_weights": built.new_weights,
            **describe_model(built.model)}


def _finished_sections(config: ExperimentConfig, trainer: MaskedLanguageModelTrainer, state,
                       before: dict, after: dict, started: float) -> dict:
    """What a completed pre-training run adds to results.json."""
    return {
        "pretraining": {"mlm_probability": config.pretraining.mlm_probability,
                        "total_steps": state.global_step, "planned_steps": trainer.total_steps,
                        "epochs_completed": round(state.epoch, 4),
                        "final_train_loss": state.last_train_loss,
                        "mixed_precision": trainer.precision.mode},
        "heldout": {"before": before, "after": after},
        "timing": {"total_seconds": time.perf_counter() - started,
                   "train_seconds": state.train_seconds, "eval_seconds": state.eval_seconds,
                   "train_samples_per_second": state.sentences_seen / max(
                       state.train_seconds, 1e-9)},
        "encoder": ENCODER_DIR,
    }


def format_pretraining_summary(results: dict, run_dir: Path) -> str:
    """What a finished pre-training run achieved, and how to fine-tune from its encoder."""
    before, after = results["heldout"]["before"], results["heldout"]["after"]
    timing = results["timing"]
    return (f"Pre-training finished: held-out MLM loss {before['mlm_loss']:.3f} -> "
            f"{after['mlm_loss']:.3f} (perplexity {before['perplexity']:.1f} -> "
            f"{after['perplexity']:.1f}), {results['pretraining']['total_steps']} steps in "
            f"{timing['train_seconds']:.0f} s ({timing['train_samples_per_second']:.1f} "
            f"sentences/s).\nEncoder: {run_dir / ENCODER_DIR}\nFine-tune from it with "
            f"--set model.model_name={run_dir / ENCODER_DIR}")


def run_pretraining(config: ExperimentConfig, output_dir: str | Path | None = None,
                    run_id: str | None = None) -> Path:
    """Masked-language-model training of ``config.model`` on the corpus of ``config``, into a
    new run directory whose ``encoder/`` a fine-tuning config can start from."""
    started = time.perf_counter()
    device = pick_device(config.training.device)
    set_seed(config.seed)
    corpus = collect_corpus(config)
    set_seed(config.seed)  # model initialisation must not depend on how the corpus was read
    built = build_masked_lm(config.model, corpus.train)
    set_attention(built.model, resolve_attention(config.model.attention, device))
    if config.training.compile:
        logger.warning("training.compile is not used by pretrain; the model runs uncompiled")
    run_dir = create_run_directory(output_dir or config.output_dir, config.experiment_name,
                                   run_id)
    results: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "stage": STAGE, "experiment_id": run_dir.name,
        "experiment_name": config.experiment_name, "description": config.description,
        "tags": list(config.tags), "status": "running", "error": None,
        "metadata": run_metadata(str(device)), "model": _model_section(config, built),
        "data": corpus.summary()}
    config.save_yaml(RunLayout(run_dir).config)
    write_results(run_dir, results)
    precision = resolve_precision(config.training.mixed_precision, device)
    logger.info("Run directory: %s\nPre-training %s on %d sentences (%d held out) on %s, "
                "mixed precision %s (%s).", run_dir, config.model.model_name, len(corpus.train),
                len(corpus.holdout), device.type, precision.mode, precision.reason)
    trackers = build_trackers(config, run_dir)
    trackers.log_config(config.to_dict(), {key: results[key] for key in
                                           ("experiment_id", "metadata", "model", "data")})
    try:
        with failures_recorded(run_dir, results):
            trainer = MaskedLanguageModelTrainer(built.model, built.tokenizer, corpus.train,
                                                 corpus.holdout, config, trackers, device,
                                                 precision)
            before = trainer.evaluate()
            trackers.log_metrics({"eval/loss": before["mlm_loss"],
                                  "eval/perplexity": before["perplexity"]}, 0)
            state = trainer.train()
            after = trainer.evaluate()
            save_encoder(built, run_dir)
            results.update(_finished_sections(config, trainer, state, before, after, started))
            record_outcome(run_dir, results, "completed")
            trackers.log_summary(results, run_dir)
    finally:
        trackers.close(results["status"] if results["status"] != "running" else "failed")
    return run_dir
