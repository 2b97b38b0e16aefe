"""experiments/configs/babe_paper_protocol.yaml reproduces the protocol of the published rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from backend.ml.config import ExperimentConfig
from backend.ml.data.splits import prepare_cv_folds
from backend.ml.experiments import RunInfo
from backend.ml.experiments.published import protocol_differences, published_protocol
from support.cli import REPO_ROOT

CONFIG = REPO_ROOT / "experiments" / "configs" / "babe_paper_protocol.yaml"


def test_paper_protocol_config_is_the_published_protocol_on_offline_minilm():
    config = ExperimentConfig.from_yaml(CONFIG)
    assert config.validate() == []
    assert CONFIG.read_text().startswith(
        "# python run_experiment.py experiments/configs/babe_paper_protocol.yaml\n")
    protocol = published_protocol()
    assert (config.data.dataset, config.data.subset, config.data.filter_no_agreement,
            config.data.cv_folds, config.seed) == (
        protocol["dataset"], protocol["subset"], protocol["filter_no_agreement"],
        protocol["cv_folds"], protocol["seed"])
    assert config.model.num_labels == 2 and config.model.model_name == "minilm"
    assert config.training.early_stopping_metric == "f1_weighted"


def _run_of(config: ExperimentConfig, source: str) -> RunInfo:
    return RunInfo(run_id="babe_paper_protocol_abc123", path=Path("unused"), status="completed",
                   config=config.to_dict(), results={"data": {"dataset": "babe",
                                                              "source": source}})


def test_a_run_of_the_config_reads_against_the_published_rows():
    config = ExperimentConfig.from_yaml(CONFIG)
    assert protocol_differences(_run_of(config, "/data/babe/final_labels_SG2.csv")) == []
    # the development copy holds 2,974 of SG2's 3,674 sentences: the report says so
    assert protocol_differences(_run_of(config, "/data/babe/final_labels_SG2_dev.csv")) == [
        "data file final_labels_SG2_dev.csv, not the published final_labels_SG2"]
    config.data.cv_folds, config.seed = 0, 7
    assert protocol_differences(_run_of(config, "/data/babe/final_labels_SG2.csv")) == [
        "single split, not 5-fold CV", "seed 7, not 42"]
    # Another training seed on the published folds still follows the protocol.
    config.data.cv_folds, config.data.split_seed = 5, 42
    assert protocol_differences(_run_of(config, "/data/babe/final_labels_SG2.csv")) == []
    config.data.split_seed = 3
    assert protocol_differences(_run_of(config, "/data/babe/final_labels_SG2.csv")) == [
        "data.split_seed 3, not 42"]


def test_paper_protocol_folds_are_sklearn_stratified_kfold(babe_dir):
    config = ExperimentConfig.from_yaml(CONFIG)
    config.data.path = str(babe_dir)
    folds = prepare_cv_folds(config.data, config.seed)
    assert folds[0].label_names == ["Non-biased", "Biased"]

    frame = pd.read_csv(babe_dir / "final_labels_SG2_dev.csv", sep=";", encoding="utf-8-sig")
    frame = frame[frame["label_bias"] != "No agreement"].reset_index(drop=True)
    splitter = StratifiedKFold(n_splits=5, shuffle=True, random_state=42)
    expected = [set(frame["text"].iloc[test]) for _, test in
                splitter.split(np.zeros(len(frame)), frame["label_bias"] == "Biased")]
    assert [set(fold.test.texts) for fold in folds] == expected
    # data.split_seed keeps these folds whatever the run's own seed.
    config.data.split_seed = 42
    refolded = prepare_cv_folds(config.data, seed=1)
    assert [set(fold.test.texts) for fold in refolded] == expected
    assert [fold.validation.texts for fold in refolded] == [fold.validation.texts
                                                           for fold in folds]
