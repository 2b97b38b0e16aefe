"""Fine-tuning recipes: layer-wise LR decay, re-initialised top layers, label smoothing,
weight averaging and the biased-word multi-task loss, each through the real trainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

from backend.ml.config import ExperimentConfig, ModelConfig, TrainingConfig
from backend.ml.data import prepare_splits
from backend.ml.model_factory import ModelFactory
from backend.ml.models import embeddings_and_layers
from backend.ml.run import resume_run, run_experiment
from backend.ml.run_directory import read_results
from backend.ml.tracking import TrackerSet
from backend.ml.training.distributed import World
from backend.ml.training.optimization import build_optimizer
from backend.ml.training.precision import resolve_precision
from backend.ml.training.recipes import WeightAverage, layerwise_lr_scales
from backend.ml.training.trainer import ClassifierTrainer
from support.configs import tiny_config

LABELS = ["Non-biased", "Biased", "No agreement"]
TINY_MODEL = ModelConfig(model_name="tiny", pretrained=False, hidden_size=32, num_hidden_layers=3,
                         num_attention_heads=2, intermediate_size=64, vocab_size=300)
TEXTS = ["The senator spoke on Tuesday.", "A reckless scheme will ruin us all."] * 20


def learning_rate_of(optimizer, parameter) -> float:
    return next(group["lr"] for group in optimizer.param_groups
                if any(candidate is parameter for candidate in group["params"]))


def test_layerwise_decay_gives_each_layer_a_lower_rate_than_the_one_above():
    model = ModelFactory.create(TINY_MODEL, LABELS, TEXTS).model
    optimizer = build_optimizer(model, TrainingConfig(learning_rate=1.0), torch.device("cpu"),
                                layerwise_lr_scales(model, 0.5))
    embeddings, layers = embeddings_and_layers(model)
    rates = [learning_rate_of(optimizer, next(layer.parameters())) for layer in layers]
    assert rates == [0.25, 0.5, 1.0]  # bottom to top
    assert learning_rate_of(optimizer, next(embeddings[0].parameters())) == 0.125
    assert learning_rate_of(optimizer, model.classifier.weight) == 1.0
    # Weight decay still spares biases and LayerNorms inside each layer's group.
    top_bias = layers[-1].output.dense.bias
    assert next(group["weight_decay"] for group in optimizer.param_groups
                if any(candidate is top_bias for candidate in group["params"])) == 0.0


def test_reinit_layers_replaces_only_the_top_pretrained_layers():
    pretrained = ModelFactory.create(ModelConfig(model_name="minilm"), LABELS).model
    refreshed = ModelFactory.create(ModelConfig(model_name="minilm", reinit_layers=2), LABELS).model
    _, old_layers = embeddings_and_layers(pretrained)
    _, new_layers = embeddings_and_layers(refreshed)
    for index, (old, new) in enumerate(zip(old_layers, new_layers)):
        same = all(torch.equal(a, b) for a, b in zip(old.parameters(), new.parameters()))
        assert same == (index < 4), f"layer {index}"
    new_dense = new_layers[-1].intermediate.dense.weight
    assert abs(float(new_dense.detach().std()) - 0.02) < 0.005 and torch.all(
        new_layers[-1].output.dense.bias == 0)


def test_reinit_more_layers_than_the_model_has_is_a_config_error():
    config = ExperimentConfig.from_dict(tiny_config(model={"reinit_layers": 5}), validate=False)
    assert "model.reinit_layers: must be <= 2, the number of encoder layers of this model, " \
           "got 5" in config.validate()


def test_weight_average_averages_float_tensors_and_keeps_the_rest():
    model = torch.nn.Linear(2, 1)
    average = WeightAverage(size=2)
    for value in (1.0, 2.0, 4.0):
        torch.nn.init.constant_(model.weight, value)
        average.add(model)
    assert torch.equal(average.average()["weight"], torch.full((1, 2), 3.0))  # last two only


def test_label_smoothing_reaches_the_trainers_sentence_loss(tmp_path):
    config = ExperimentConfig.from_dict(tiny_config(training={"label_smoothing": 0.2}))
    splits = prepare_splits(config.data, config.seed)
    built = ModelFactory.create(config.model, splits.label_names, splits.train.texts)
    cpu = torch.device("cpu")
    trainer = ClassifierTrainer(built.model, built.tokenizer, splits, config, tmp_path,
                                TrackerSet([]), World(0, 1, cpu), resolve_precision("no", cpu))
    logits, labels = torch.tensor([[4.0, 0.0, -1.0]]), torch.tensor([0])
    log_probabilities = torch.log_softmax(logits, dim=-1)[0]
    # (1 - e) * cross-entropy + e * the mean over classes of -log p
    expected = 0.8 * -log_probabilities[0] + 0.2 * -log_probabilities.mean()
    smoothed = trainer.objective.loss_function(logits, labels)[0]
    assert float(smoothed) == pytest.approx(float(expected))


def test_averaged_weights_are_scored_and_used_only_when_better(tmp_path):
    config = ExperimentConfig.from_dict(tiny_config(
        training={"epochs": 4, "average_last_checkpoints": 3}, logging={"tensorboard": False}))
    results = read_results(run_experiment(config, tmp_path))
    average = results["training"]["weight_average"]
    assert average["checkpoints"] == 3
    history_best = max(point["eval/f1_macro"] for point in read_history(tmp_path))
    assert average["steps"] == [point["step"] for point in read_history(tmp_path)][-3:]
    if average["used"]:
        assert results["eval"]["f1_macro"] == average["eval/f1_macro"] > history_best
        assert results["training"]["best_step"] == average["steps"][-1]
    else:
        assert average["eval/f1_macro"] <= history_best == results["eval"]["f1_macro"]


def read_history(tmp_path):
    import json
    (run_dir,) = [path for path in tmp_path.iterdir() if path.is_dir()]
    return [record for record in map(json.loads, (run_dir / "metrics.jsonl").read_text()
                                     .splitlines()) if "eval/f1_macro" in record]


def train_multitask(tmp_path, save_steps: int, **model):
    """A tiny run with the biased-word loss; asserts the tagger learned and was not saved."""
    config = ExperimentConfig.from_dict(tiny_config(
        model=model, training={"epochs": 2, "biased_words_loss_weight": 1.0,
                               "learning_rate": 3e-3},
        data={"max_samples": 0}, logging={"tensorboard": False, "log_steps": 1,
                                          "save_steps": save_steps}))
    run_dir = run_experiment(config, tmp_path)
    tagging = [record["train/biased_words_loss"] for record in
               map(__import__("json").loads, (run_dir / "metrics.jsonl").read_text().splitlines())
               if "train/biased_words_loss" in record]
    assert len(tagging) > 10 and np.mean(tagging[-5:]) < np.mean(tagging[:5])
    saved = load_file(run_dir / "final_model" / "model.safetensors")
    assert not any("token_head" in name for name in saved)
    return run_dir, AutoModelForSequenceClassification.from_pretrained(run_dir / "final_model")


def test_biased_words_multitask_trains_the_tagger_and_saves_a_plain_classifier(tmp_path):
    run_dir, model = train_multitask(tmp_path, save_steps=10)
    assert model.config.num_labels == 3
    checkpoint = sorted((run_dir / "checkpoints").glob("step-*"))[0]
    assert "token_head" in torch.load(checkpoint / "training_state.pt", weights_only=False)


def test_biased_words_multitask_works_on_the_mean_pooling_head(tmp_path):
    _, model = train_multitask(tmp_path, save_steps=0, architecture="custom", pooling="mean")
    assert model.config.pooling == "mean" and model.config.num_labels == 3


def test_a_multitask_run_resumes_exactly(tmp_path):
    import shutil
    config = ExperimentConfig.from_dict(tiny_config(
        training={"epochs": 2, "biased_words_loss_weight": 0.5}, logging={"tensorboard": False}))
    run_dir = run_experiment(config, tmp_path)
    first = read_results(run_dir)
    for checkpoint in sorted((run_dir / "checkpoints").glob("step-*"))[1:]:
        shutil.rmtree(checkpoint)
    shutil.rmtree(run_dir / "final_model")
    resume_run(run_dir)
    after = read_results(run_dir)
    assert after["metadata"]["resumed_from_step"] == 8
    assert after["eval"] == first["eval"] and after["test"] == first["test"]


@pytest.mark.parametrize("field, value", [("layerwise_lr_decay", 0.0),
                                          ("label_smoothing", 1.0),
                                          ("biased_words_loss_weight", -1.0)])
def test_recipe_fields_are_bounded(field, value):
    problems = ExperimentConfig.from_dict(tiny_config(training={field: value}),
                                          validate=False).validate()
    assert any(problem.startswith(f"training.{field}: must be") for problem in problems)
