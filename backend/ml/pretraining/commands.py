"""``python run_experiment.py pretrain CONFIG.yaml``: domain-adaptive pre-training from the CLI."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError

EPILOG = """examples:
  python run_experiment.py pretrain experiments/configs/babe_minilm_dapt.yaml --dry-run
  python run_experiment.py pretrain experiments/configs/babe_minilm_dapt.yaml \\
      --run-id babe_minilm_dapt
  # stopped (SIGTERM, Ctrl-C)? it wrote a checkpoint; continue it (same launcher):
  python run_experiment.py resume experiments/encoders/babe_minilm_dapt
  # under torchrun, data-parallel like fine-tuning:
  torchrun --nproc_per_node 2 run_experiment.py pretrain \
      experiments/configs/babe_minilm_dapt.yaml
  # then fine-tune from experiments/encoders/babe_minilm_dapt/encoder:
  python run_experiment.py experiments/configs/babe_minilm_dapt_finetune.yaml
"""


def add_pretrain_subcommand(sub) -> None:
    """Add ``pretrain`` to ``sub`` (``add_subparsers()``'s)."""
    parser = sub.add_parser(
        "pretrain", help="domain-adaptive pre-training of an encoder (masked language model)",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Masked-language-model training of the configured encoder on unlabelled "
        "sentences (the configured data without labels, plus pretraining.text_files); writes "
        "RUN/encoder/ for a fine-tuning config's model.model_name. See docs/pretraining.md.")
    parser.set_defaults(handler=pretrain)
    parser.add_argument("config", metavar="CONFIG.yaml", help="the pre-training config")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override a config field, e.g. --set training.max_steps=200")
    parser.add_argument("--output-dir", type=Path, metavar="DIR",
                        help="where the run directory goes (default: the config's output_dir)")
    parser.add_argument("--run-id", metavar="ID",
                        help="use exactly this run directory name instead of <name>_<random id>")
    parser.add_argument("--dry-run", action="store_true",
                        help="validate, count the sentences and steps; train nothing")


def _checked_config(path: str, overrides: list[str]):
    from ..config import load_yaml_config

    config = load_yaml_config(path, overrides)
    problems = []
    if config.sweep:
        problems.append("sweep: pretrain runs one config; remove the sweep section")
    if config.data.cv_folds:
        problems.append("data.cv_folds: pretrain reads every sentence and makes no folds; set it "
                        "to 0")
    if problems:
        raise ConfigError(path, problems)
    return config


def _describe_plan(config) -> str:
    from ..config import config_to_yaml
    from ..training.steps import planned_steps
    from .corpus import collect_corpus

    corpus = collect_corpus(config)
    lines = ["Resolved config:", config_to_yaml(config).rstrip(), "", "Plan:"]
    lines += [f"  read {source['sentences']:>6} sentences from {source['source']}"
              for source in corpus.sources]
    counts = corpus.counts
    lines.append(f"  kept   {len(corpus.train) + len(corpus.holdout):>6} distinct sentences "
                 f"({counts['duplicates_removed']} duplicates, {counts['excluded']} excluded): "
                 f"{len(corpus.train)} to train on, {len(corpus.holdout)} held out")
    lines.append(f"  {planned_steps(len(corpus.train), config.training)} optimiser steps of "
                 f"{config.training.batch_size} sentences, masking "
                 f"{config.pretraining.mlm_probability:.0%} of the tokens")
    return "\n".join(lines)


def pretrain(args) -> int:
    """Run ``pretrain`` with its parsed arguments; UserErrors reach the CLI's handler."""
    config = _checked_config(args.config, args.set)
    if args.dry_run:
        print(_describe_plan(config))
        print("\nConfig is valid; nothing was trained (--dry-run).")
        return 0
    from ..run_directory import read_results
    from ..training.distributed import is_main_process
    from .run import format_pretraining_summary, run_pretraining

    # A signal writes a checkpoint and reaches the CLI as TrainingInterrupted: it prints the
    # resume command (run_experiment.py resume RUN_DIR) and exits with 128 + the signal.
    run_dir = run_pretraining(config, args.output_dir, run_id=args.run_id)
    if is_main_process():  # under torchrun, the others would repeat it
        print(format_pretraining_summary(read_results(run_dir), run_dir))
    return 0
