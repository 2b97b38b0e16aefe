"""A pre-training run: corpus, masked language model and a run directory with an encoder.

It runs the lifecycle every run shares (:class:`~backend.ml.training.session.RunSession`: the
directory, lock, signals, results.json, trackers) and the fine-tuning trainer with the
masked-language-model objective, so it resumes (``run_experiment.py resume RUN_DIR``), writes a
checkpoint when a signal stops it, and trains data-parallel under ``torchrun``.

>>> from backend.ml.config import load_yaml_config
>>> config = load_yaml_config("experiments/configs/babe_minilm_dapt.yaml")
>>> run_dir = run_pretraining(config)  # doctest: +SKIP
>>> # then fine-tune with model.model_name: <run_dir>/encoder
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from transformers import set_seed

from ..config import ExperimentConfig
from ..models import describe_model
from ..run_directory import PRETRAINING
from ..training.checkpoints import MODEL_DIRECTORY, latest_valid_checkpoint, load_training_state
from ..training.distributed import start_world
from ..training.precision import resolve_precision
from ..training.session import RunSession
from ..training.steps import global_batch_size
from ..training.trainer import Trainer, TrainingOutcome, check_resume_world
from .corpus import Corpus, collect_corpus
from .model import ENCODER_DIR, MaskedLanguageModel, build_masked_lm, load_masked_lm, save_encoder
from .objective import MaskedLanguageModelObjective

logger = logging.getLogger(__name__)


def _model_section(config: ExperimentConfig, built: MaskedLanguageModel) -> dict:
    return {"architecture": config.model.architecture, "model_name": config.model.model_name,
            "pretrained": config.model.pretrained, "source": built.source,
            "class": type(built.model).__name__, "new_weights": built.new_weights,
            **describe_model(built.model)}


def _finished_sections(session: RunSession, trainer: Trainer, outcome: TrainingOutcome,
                       after: dict, started: float) -> dict:
    """What a completed pre-training run adds to results.json."""
    config, state = session.config, outcome.state
    return {
        "pretraining": {"mlm_probability": config.pretraining.mlm_probability,
                        "total_steps": state.global_step, "planned_steps": trainer.total_steps,
                        "epochs_completed": round(outcome.epochs_completed, 4),
                        "final_train_loss": state.final_train_loss,
                        "mixed_precision": trainer.precision.mode,
                        "world_size": session.world.size,
                        "global_batch_size": global_batch_size(config.training,
                                                               session.world.size)},
        "heldout": {"before": session.results["heldout"]["before"], "after": after},
        "timing": {"total_seconds": time.perf_counter() - started,
                   "train_seconds": state.train_seconds, "eval_seconds": state.eval_seconds,
                   "checkpoint_seconds": state.checkpoint_seconds,
                   "train_samples_per_second": outcome.train_samples_per_second},
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


def _train_and_finish(session: RunSession, built: MaskedLanguageModel, corpus: Corpus,
                      resume_state: dict | None) -> None:
    """Train (from the start, or on from ``resume_state``), then write the encoder and the
    held-out loss before and after."""
    config, world = session.config, session.world
    started = time.perf_counter()
    precision = resolve_precision(config.training.mixed_precision, world.device)
    logger.info("Pre-training %s on %d sentences (%d held out) on %d x %s, mixed precision %s "
                "(%s).", config.model.model_name, len(corpus.train), len(corpus.holdout),
                world.size, world.device.type, precision.mode, precision.reason)
    with session.recording():
        objective = MaskedLanguageModelObjective(built, corpus.train, corpus.holdout, config,
                                                 precision)
        trainer = Trainer(objective, config, session.run_dir, session.trackers, world,
                          precision, resume_state)
        if resume_state is None:  # a resumed run has its starting loss in results.json
            before = objective.evaluate(world)
            session.trackers.log_metrics(before.prefixed_scalars(), 0)
            session.record(heldout={"before": before.record()})
        outcome = trainer.train(session.stop)
        after = objective.evaluate(world).record()
        if world.is_main:
            save_encoder(built, session.run_dir)
        session.complete(**_finished_sections(session, trainer, outcome, after, started))


def run_pretraining(config: ExperimentConfig, output_dir: str | Path | None = None,
                    run_id: str | None = None) -> Path:
    """Masked-language-model training of ``config.model`` on the corpus of ``config``, into a
    new run directory whose ``encoder/`` a fine-tuning config can start from.

    Under ``torchrun --nproc_per_node N`` every process calls this and they train one model
    data-parallel, as fine-tuning does.
    """
    world = start_world(config.training.device)
    set_seed(config.seed)
    corpus = collect_corpus(config)
    set_seed(config.seed)  # model initialisation must not depend on how the corpus was read
    built = build_masked_lm(config.model, corpus.train)
    with RunSession.create(config, world, output_dir, run_id, PRETRAINING) as session:
        logger.info("Run directory: %s", session.run_dir)
        session.begin(model=_model_section(config, built), data=corpus.summary())
        _train_and_finish(session, built, corpus, None)
    return session.run_dir


def resume_pretraining(config: ExperimentConfig, run_dir: Path) -> Path:
    """Continue an interrupted pre-training run from its newest step checkpoint (from the start
    without one), in the same directory and with the same number of processes.

    >>> resume_pretraining(config, Path("experiments/encoders/babe_dapt"))  # doctest: +SKIP
    """
    world = start_world(config.training.device)
    with RunSession.reopen(config, world, run_dir, PRETRAINING) as session:
        earlier = session.earlier_results()
        set_seed(config.seed)
        corpus = collect_corpus(config)
        checkpoint = latest_valid_checkpoint(session.layout.checkpoints)
        state = None
        if checkpoint and "before" in earlier.get("heldout", {}):
            state = load_training_state(checkpoint)
            check_resume_world(state, world, config.training.batch_size, run_dir)
            model = earlier.get("model", {})
            built = load_masked_lm(checkpoint / MODEL_DIRECTORY, model.get("source"),
                                   model.get("new_weights", []))
            logger.info("Resuming %s from %s (step %d).", run_dir.name, checkpoint.name,
                        state["global_step"])
        else:
            set_seed(config.seed)
            built = build_masked_lm(config.model, corpus.train)
        session.results["metadata"]["resumed_from_step"] = state["global_step"] if state else 0
        session.rewind_metrics(state["global_step"] if state else None)
        session.begin(model=_model_section(config, built), data=corpus.summary(),
                      **({"heldout": earlier["heldout"]} if state else {}))
        _train_and_finish(session, built, corpus, state)
    return run_dir
