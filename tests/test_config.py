"""Config sections, YAML round-trip, every validation rule, overrides and sweeps."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from backend.ml.config import apply_overrides, expand_sweep, load_yaml_config
from backend.ml.errors import ConfigError
from backend.ml.experiment_config import (
    CloudConfig,
    DataConfig,
    ExperimentConfig,
    LoggingConfig,
    ModelConfig,
    TrainingConfig,
)
from support.cli import REPO_ROOT
from support.configs import tiny_config, write_config

SHIPPED_CONFIGS = sorted((REPO_ROOT / "experiments" / "configs").glob("*.yaml"))


def problems_of(data: dict) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        ExperimentConfig.from_dict(data)
    return raised.value.problems


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=lambda path: path.name)
def test_every_shipped_config_loads_and_validates(path):
    config = ExperimentConfig.from_yaml(path)
    assert config.validate() == []
    first_line = path.read_text(encoding="utf-8").splitlines()[0]
    command = first_line.removeprefix("# python run_experiment.py ")
    for subcommand in ("pretrain ", "tune "):
        command = command.removeprefix(subcommand)
    assert command.startswith(f"experiments/configs/{path.name}")


def test_shipped_configs_include_the_documented_ones():
    names = {path.name for path in SHIPPED_CONFIGS}
    assert {"quickstart.yaml", "bert_baseline.yaml", "distilbert_fast.yaml",
            "roberta_strong.yaml"} <= names


def test_documented_python_example_works_as_written(tmp_path):
    config = ExperimentConfig(experiment_name="roberta_v1", description="RoBERTa run",
                              tags=["roberta"])
    config.model = ModelConfig(architecture="roberta", model_name="roberta-base", num_labels=3,
                               dropout=0.2, freeze_layers=2)
    config.training = TrainingConfig(batch_size=8, learning_rate=3e-5)
    assert config.validate() == []
    config.save_yaml(tmp_path / "roberta.yaml")
    reloaded = ExperimentConfig.from_yaml(tmp_path / "roberta.yaml")
    assert reloaded == config
    assert reloaded.model.architecture == "roberta" and reloaded.model.freeze_layers == 2


def test_issue_example_sections_are_accepted():
    data = yaml.safe_load("""
experiment_name: "bert_baseline_v1"
description: "BERT-base baseline for bias classification"
tags: ["baseline", "bert", "babe"]
model: {architecture: "bert", model_name: "bert-base-uncased", num_labels: 3, dropout: 0.1,
        freeze_layers: 0}
training: {batch_size: 16, learning_rate: 2.0e-5, epochs: 3, warmup_steps: 500,
           weight_decay: 0.01}
data: {dataset: "babe", train_split: 0.8, preprocessing: "none", max_length: 512,
       filter_no_agreement: false}
logging: {tensorboard: true, wandb: false, log_steps: 100, save_steps: 1000}
cloud: {platform: "gcp", machine_type: "n1-standard-4", gpu_type: "nvidia-tesla-v100",
        preemptible: true}
""")
    config = ExperimentConfig.from_dict(data)
    assert config.training.learning_rate == 2e-5
    assert config.cloud.gpu_type == "nvidia-tesla-v100"
    assert isinstance(config.logging, LoggingConfig) and isinstance(config.cloud, CloudConfig)
    assert isinstance(config.data, DataConfig) and config.data.max_length == 512


def test_defaults_are_valid_and_every_field_has_help():
    from dataclasses import fields, is_dataclass

    def walk(instance, prefix=""):
        for item in fields(instance):
            value = getattr(instance, item.name)
            assert item.metadata.get("help"), f"{prefix}{item.name} has no help text"
            if is_dataclass(value):
                walk(value, f"{prefix}{item.name}.")

    walk(ExperimentConfig())
    assert ExperimentConfig().validate() == []


def test_range_error_has_dotted_path_and_value():
    problems = ExperimentConfig(training=TrainingConfig(learning_rate=-1)).validate()
    assert problems == ["training.learning_rate: must be > 0, got -1"]


def test_all_problems_are_reported_at_once():
    problems = problems_of({"training": {"learning_rate": -1, "epochs": 0, "batch_size": "x"},
                            "data": {"train_split": 1.5}, "model": {"dropout": 1.0}})
    joined = "\n".join(problems)
    for expected in ("training.learning_rate: must be > 0", "training.epochs: must be >= 1",
                     "training.batch_size: must be an integer", "data.train_split: must be < 1",
                     "model.dropout: must be < 1"):
        assert expected in joined
    assert len(problems) >= 5


def test_unknown_key_suggests_the_closest_field():
    problems = problems_of({"trainig": {}, "training": {"learnig_rate": 1e-5}})
    assert any(p.startswith("trainig: unknown field (did you mean 'training'?)") for p in problems)
    assert any(p.startswith("training.learnig_rate: unknown field (did you mean "
                            "'learning_rate'?)") for p in problems)


def test_wrong_types_are_named():
    problems = problems_of({"logging": {"tensorboard": "yes"}, "tags": "baseline",
                            "model": {"num_labels": 2.5}})
    assert "logging.tensorboard: must be true or false, got 'yes'" in problems
    assert "tags: must be a list, got 'baseline'" in problems
    assert "model.num_labels: must be an integer, got 2.5" in problems


def test_choice_fields_list_their_choices():
    problems = problems_of({"data": {"preprocessing": "stem"}})
    assert problems == ["data.preprocessing: must be one of none, lowercase, clean, got 'stem'"]


def test_num_labels_must_match_filter_no_agreement():
    problems = problems_of({"data": {"filter_no_agreement": True}, "model": {"num_labels": 3}})
    assert len(problems) == 1
    assert problems[0].startswith("model.num_labels: must be 2 because data.filter_no_agreement "
                                  "is true")
    assert problems_of({"model": {"num_labels": 2}})[0].startswith("model.num_labels: must be 3")


def test_freeze_layers_cannot_exceed_the_model_depth():
    problems = problems_of({"model": {"model_name": "minilm", "freeze_layers": 7}})
    assert problems == ["model.freeze_layers: must be <= 6, the number of encoder layers of "
                        "minilm, got 7"]
    problems = problems_of({"model": {"model_name": "bert-base-uncased", "freeze_layers": 13}})
    assert "must be <= 12" in problems[0]
    problems = problems_of({"model": {"pretrained": False, "num_hidden_layers": 2,
                                      "freeze_layers": 3}})
    assert "must be <= 2" in problems[0]


def test_attention_heads_must_divide_hidden_size():
    problems = problems_of({"model": {"pretrained": False, "hidden_size": 30,
                                      "num_attention_heads": 4}})
    assert problems == ["model.num_attention_heads: must divide model.hidden_size (30), got 4"]


def test_splits_must_leave_a_test_set():
    problems = problems_of({"data": {"train_split": 0.8, "validation_split": 0.2}})
    assert problems[0].startswith("data.validation_split: data.train_split + "
                                  "data.validation_split must be < 1")


def test_single_cv_fold_is_rejected():
    assert problems_of({"data": {"cv_folds": 1}}) == [
        "data.cv_folds: must be 0 (no cross-validation) or at least 2, got 1"]


def test_missing_local_data_file_is_named(tmp_path):
    missing = tmp_path / "final_labels_SG2.csv"
    problems = problems_of({"data": {"path": str(missing)}})
    assert problems[0].startswith(f"data.path: {missing} does not exist")


def test_mixed_precision_on_cpu_is_rejected():
    problems = problems_of({"training": {"device": "cpu", "mixed_precision": "fp16"}})
    assert problems[0].startswith("training.mixed_precision: fp16 needs a GPU")


def test_experiment_name_must_be_usable_as_a_directory_name():
    problems = problems_of({"experiment_name": "my run/1"})
    assert problems[0].startswith("experiment_name: use letters, digits")


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("experiment_name: x\nmodel:\n  architecture: bert\n   dropout: 0.1\n")
    with pytest.raises(ConfigError) as raised:
        load_yaml_config(path)
    assert str(path) in str(raised.value)
    assert "line 4" in raised.value.problems[0]


def test_missing_and_empty_files_are_explained(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_yaml_config(tmp_path / "nope.yaml")
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(ConfigError, match="the file is empty"):
        load_yaml_config(tmp_path / "empty.yaml")


def test_learning_rate_written_without_a_dot_is_read_as_a_number(tmp_path):
    path = tmp_path / "lr.yaml"
    path.write_text("training:\n  learning_rate: 3e-5\n")
    assert load_yaml_config(path).training.learning_rate == pytest.approx(3e-5)


def test_overrides_change_fields_and_are_validated(tmp_path):
    path = write_config(tmp_path, tiny_config())
    config = load_yaml_config(path, ["training.epochs=5", "model.dropout=0.3",
                                     "tags=[a, b]"])
    assert (config.training.epochs, config.model.dropout, config.tags) == (5, 0.3, ["a", "b"])
    with pytest.raises(ConfigError, match="training.epochs: must be >= 1, got 0"):
        load_yaml_config(path, ["training.epochs=0"])
    with pytest.raises(ConfigError, match="expected section.field=value"):
        apply_overrides({}, ["training.epochs"])


def test_sweep_expands_into_named_runs():
    config = ExperimentConfig(experiment_name="grid",
                              sweep={"training.learning_rate": [1e-5, 3e-5],
                                     "model.dropout": [0.1, 0.2]})
    expanded = expand_sweep(config)
    assert len(expanded) == 4
    names = [item.experiment_name for item in expanded]
    assert len(set(names)) == 4 and all(name.startswith("grid__") for name in names)
    assert {(item.training.learning_rate, item.model.dropout) for item in expanded} == {
        (1e-5, 0.1), (1e-5, 0.2), (3e-5, 0.1), (3e-5, 0.2)}
    assert all(item.sweep == {} for item in expanded)


def test_sweep_of_unknown_field_or_empty_list_is_rejected():
    problems = problems_of({"sweep": {"training.learnig_rate": [1], "model.dropout": []}})
    assert any(p.startswith("sweep.training.learnig_rate: not a config field") for p in problems)
    assert any(p.startswith("sweep.model.dropout: must be a non-empty list") for p in problems)


def test_sweep_values_are_validated_per_point():
    config = ExperimentConfig(experiment_name="bad", sweep={"training.epochs": [1, 0]})
    with pytest.raises(ConfigError, match="training.epochs: must be >= 1, got 0"):
        expand_sweep(config)


def test_saved_yaml_is_complete_and_atomic(tmp_path):
    config = ExperimentConfig(experiment_name="saved")
    target = tmp_path / "nested" / "saved.yaml"
    config.save_yaml(target)
    data = yaml.safe_load(target.read_text())
    assert list(data)[:2] == ["experiment_name", "description"]
    assert set(data) >= {"model", "training", "data", "logging", "cloud"}
    assert [path.name for path in Path(target.parent).iterdir()] == ["saved.yaml"]


def test_config_reference_lists_every_field_with_default_and_help():
    from backend.ml.cli import config_reference

    reference = config_reference()
    assert "  training.learning_rate = 2e-05\n      Peak AdamW learning rate." in reference
    assert "  data.preprocessing = 'none'\n      none; lowercase; or clean" in reference
    for section in ("model:", "training:", "data:", "logging:", "cloud:"):
        assert f"\n{section}" in reference
