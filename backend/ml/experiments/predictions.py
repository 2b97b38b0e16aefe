"""Test predictions of a run as label-id arrays, aligned across runs, and metrics per data slice."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import UserError
from .rundir import RunInfo
from .statistics import compute_metrics

if TYPE_CHECKING:
    import pandas as pd  # imported when predictions are read, not with the manager

SLICE_COLUMNS = ("type", "outlet", "topic")


@dataclass
class Predictions:
    """One run's test predictions: texts, class ids and the sentence metadata (a DataFrame)."""

    run_id: str
    label_names: list[str]
    frame: pd.DataFrame  # columns index, text, true_id, predicted_id, ...

    @property
    def labels(self) -> np.ndarray:
        return self.frame["true_id"].to_numpy(dtype=int)

    @property
    def predictions(self) -> np.ndarray:
        return self.frame["predicted_id"].to_numpy(dtype=int)

    def __len__(self) -> int:
        return len(self.frame)


def load_predictions(run: RunInfo) -> tuple[Predictions | None, str | None]:
    """(predictions, None), or (None, why not). A CV parent pools its folds' test predictions.

    In k-fold cross-validation each sentence is in exactly one test fold, so the pooled
    out-of-fold predictions cover the whole dataset once.
    """
    import pandas as pd

    path = run.paths["test_predictions"]
    if path.is_file():
        try:
            frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
        except (OSError, ValueError, UnicodeDecodeError) as error:
            return None, f"{path.name} cannot be read: {error}"
    elif run.folds:
        parts = []
        for fold in run.folds:
            fold_predictions, reason = load_predictions(fold)
            if fold_predictions is None:
                return None, f"{fold.run_id}: {reason}"
            parts.append(fold_predictions.frame.assign(fold=fold.path.name))
        label_names = run.label_names or (parts and _labels_from_frame(parts[0]))
        frame = pd.concat(parts, ignore_index=True)
        return Predictions(run.run_id, list(label_names), frame), None
    else:
        return None, "no predictions/test_predictions.csv"
    missing = {"text", "true_label", "predicted_label"} - set(frame.columns)
    if missing:
        return None, f"{path.name} lacks the column(s) {', '.join(sorted(missing))}"
    label_names = run.label_names or _labels_from_frame(frame)
    known = set(label_names)
    unknown = (set(frame["true_label"].astype(str)) | set(frame["predicted_label"].astype(str))
               ) - known
    if unknown:
        return None, f"{path.name} has labels {sorted(unknown)} not in {label_names}"
    index_of = {name: position for position, name in enumerate(label_names)}
    frame = frame.copy()
    frame["text"] = frame["text"].fillna("").astype(str)
    if "index" not in frame.columns:
        frame["index"] = np.arange(len(frame))
    frame["true_id"] = frame["true_label"].astype(str).map(index_of)
    frame["predicted_id"] = frame["predicted_label"].astype(str).map(index_of)
    return Predictions(run.run_id, list(label_names), frame), None


def _labels_from_frame(frame) -> list[str]:
    return sorted(set(frame["true_label"].astype(str))
                  | set(frame["predicted_label"].astype(str)))


def align(first: Predictions, second: Predictions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, predictions of first, predictions of second) over the same test sentences.

    Sentences are matched on their text (repeated texts in order of their index). Raises
    UserError when the two runs were not evaluated on the same sentences.
    """
    if first.label_names != second.label_names:
        raise UserError(f"{first.run_id} and {second.run_id} use different label sets "
                        f"({first.label_names} vs {second.label_names}); a paired test needs "
                        f"the same task")
    keyed = []
    for item in (first, second):
        frame = item.frame.sort_values(["text", "index"], kind="stable").copy()
        frame["occurrence"] = frame.groupby("text").cumcount()
        keyed.append(frame.set_index(["text", "occurrence"]))
    left, right = keyed
    only_left = len(left.index.difference(right.index))
    only_right = len(right.index.difference(left.index))
    if only_left or only_right:
        raise UserError(
            f"{first.run_id} and {second.run_id} were not evaluated on the same test sentences "
            f"({only_left} only in the first, {only_right} only in the second); a paired test "
            f"needs the same test split (same data, split seed and split settings)")
    right = right.loc[left.index]
    if not np.array_equal(left["true_id"].to_numpy(), right["true_id"].to_numpy()):
        raise UserError(f"{first.run_id} and {second.run_id} have the same test sentences with "
                        f"different gold labels (different preprocessing or data version)")
    return (left["true_id"].to_numpy(dtype=int), left["predicted_id"].to_numpy(dtype=int),
            right["predicted_id"].to_numpy(dtype=int))


def slice_metrics(predictions: Predictions, columns=SLICE_COLUMNS, min_size: int = 1) -> dict:
    """F1 / accuracy per value of each metadata column: ``{"type": {"left": {...}, ...}, ...}``.

    Sentences without a value (e.g. SG2 rows with an empty ``type``) are left out of that
    column's slices. Macro F1 within a slice averages the classes present in it, so a slice
    without "No agreement" sentences is not penalised for them.
    """
    frame = predictions.frame
    result = {}
    for column in columns:
        if column not in frame.columns:
            continue
        values = frame[column]
        present = values.notna() & (values.astype(str).str.strip() != "")
        if not present.any():
            continue
        slices = {}
        for value, group in frame[present].groupby(values[present].astype(str).str.strip()):
            if len(group) < min_size:
                continue
            labels = group["true_id"].to_numpy(dtype=int)
            predicted = group["predicted_id"].to_numpy(dtype=int)
            present_ids = sorted(set(labels.tolist()) | set(predicted.tolist()))
            names = predictions.label_names
            scores = compute_metrics(labels, predicted, names,
                                     ["accuracy"] + [f"f1_{_slug(names[i])}" for i in present_ids])
            f1_values = [scores[f"f1_{_slug(names[i])}"] for i in present_ids]
            slices[value] = {"n": int(len(group)), "accuracy": scores["accuracy"],
                             "f1_macro": float(np.mean(f1_values)) if f1_values else 0.0,
                             "f1_biased": scores.get("f1_biased", _biased_f1(labels, predicted,
                                                                             names))}
        result[column] = slices
    return result


def _slug(name: str) -> str:
    from ..metrics import label_slug
    return label_slug(name)


def _biased_f1(labels, predicted, names) -> float:
    if "Biased" not in names:
        return 0.0
    return compute_metrics(labels, predicted, names, ["f1_biased"])["f1_biased"]
