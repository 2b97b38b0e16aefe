"""Published BABE results (``published_babe.yaml``) and which runs they can be read against.

>>> [row.model for row in published_results()][:2]
['BERT-base', 'DistilBERT']
>>> published_protocol()["cv_folds"]
5
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import yaml

from .rundir import RunInfo

PUBLISHED_FILE = Path(__file__).with_name("published_babe.yaml")
BINARY_LABELS = ["Non-biased", "Biased"]
PUBLISHED_DATA_FILE = "final_labels_SG2"  # the file the papers used (3,674 sentences)


@dataclass(frozen=True)
class PublishedResult:
    """One row of a paper's results table; metrics are test metrics averaged over folds."""

    model: str
    metrics: dict  # {"accuracy": 0.789, "f1_weighted": 0.789}; a missing figure is absent
    source: str  # short citation, e.g. "Spinde et al. 2021"
    reference: str  # the full citation

    def metric(self, name: str) -> float | None:
        """``test/f1_weighted`` or ``f1_weighted`` -> the published figure, None if not given."""
        split, _, key = name.partition("/")
        if key and split != "test":
            return None
        return self.metrics.get(key or split)


@functools.cache
def _published_data() -> dict:
    return yaml.safe_load(PUBLISHED_FILE.read_text(encoding="utf-8"))


def published_protocol() -> dict:
    """The protocol every published row follows (dataset, subset, folds, seed, metric)."""
    return dict(_published_data()["protocol"])


def published_results() -> list[PublishedResult]:
    """The published rows, in the order of ``published_babe.yaml``."""
    data = _published_data()
    rows = []
    for entry in data["results"]:
        source = data["sources"][entry["source"]]
        metrics = {key: float(value) for key, value in entry.items()
                   if key not in ("model", "source") and value is not None}
        rows.append(PublishedResult(entry["model"], metrics, source["short"],
                                    source["reference"]))
    return rows


def is_binary_babe(run: RunInfo) -> bool:
    """Whether ``run`` classifies BABE sentences with "No agreement" dropped (Non-biased/Biased)."""
    data, results_data = _data_section(run.config), _data_section(run.results)
    dataset = data.get("dataset") or results_data.get("dataset")
    if dataset != "babe":
        return False
    if "filter_no_agreement" in data:
        return bool(data["filter_no_agreement"])
    return run.label_names == BINARY_LABELS


def protocol_differences(run: RunInfo) -> list[str]:
    """How ``run`` departs from the published protocol, e.g. ``["single split, not 5-fold CV"]``.

    An empty list means its fold-mean test metrics read directly against the published rows.
    """
    if not is_binary_babe(run):
        return ["not binary BABE"]
    protocol = published_protocol()
    data = _data_section(run.config)
    differences = []
    subset = data.get("subset", protocol["subset"])
    source = _data_section(run.results).get("source") or data.get("path") or ""
    if subset != protocol["subset"]:
        differences.append(f"subset {subset}, not {protocol['subset']}")
    elif Path(str(source)).suffix and Path(str(source)).stem != PUBLISHED_DATA_FILE:
        # e.g. final_labels_SG2_dev.csv, a part of the published SG2
        differences.append(f"data file {Path(str(source)).name}, not the published "
                           f"{PUBLISHED_DATA_FILE}")
    if data.get("validation_path") or data.get("test_path"):
        differences.append("fixed split files")
    folds = data.get("cv_folds") or 0
    if not folds:
        differences.append(f"single split, not {protocol['cv_folds']}-fold CV")
    elif folds != protocol["cv_folds"]:
        differences.append(f"{folds}-fold CV, not {protocol['cv_folds']}-fold")
    # The published seed draws the folds; a run's own seed may differ when data.split_seed
    # keeps the published folds.
    seed = run.split_seed
    if seed is not None and seed != protocol["seed"]:
        named = "seed" if run.fixed_split_seed is None else "data.split_seed"
        differences.append(f"{named} {seed}, not {protocol['seed']}")
    if data.get("max_samples"):
        differences.append(f"data.max_samples {data['max_samples']}")
    return differences


def _data_section(document: dict) -> dict:
    """The ``data`` section of a config or results dict; {} when absent or damaged."""
    section = document.get("data")
    return section if isinstance(section, dict) else {}
