"""``BiasClassifier``: calibrated sentence- and article-level bias predictions on CPU.

>>> classifier = BiasClassifier()  # doctest: +SKIP
>>> classifier.load_model("experiments/runs/quickstart_minilm_3f9a1c/final_model")  # doctest: +SKIP
>>> classifier.predict_with_confidence(
...     ["The senator's reckless scheme will ruin us."])  # doctest: +SKIP
[{'id': None, 'status': 'ok', 'label': 'Biased', 'confidence': 0.83, ...}]

Speed on CPU comes from what is not computed: every text is tokenised once, windows are sorted
by length so that a batch is padded only to its own longest member, and the forward pass runs
under ``torch.inference_mode`` (or in ONNX Runtime for an exported model).
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from backend.ml.errors import UserError
from backend.ml.metrics import BIASED, softmax

from ..languages import (
    DEFAULT_LANGUAGE_POLICY,
    UNDETERMINED,
    Detection,
    check_language_policy,
    detect_language,
    is_supported,
    language_shares,
    read_training_languages,
)
from ..run_directory import DEFAULT_RUNS_DIR
from .calibration import load_calibration
from .loading import (
    LoadedModel,
    ModelLoadError,
    configure_threads,
    cross_validation_models,
    load_for_inference,
    resolve_model_path,
)
from .sentences import sentence_spans

logger = logging.getLogger(__name__)

NO_PREDICTION = "no_prediction"
ABSTAINED = "abstained"
PRECISIONS = ("auto", "bf16", "fp32")
# In bf16 a model's first PROBE_TEXTS texts are also classified in fp32 (their fp32 result is
# kept), which measures how far bf16 moves this model's probabilities; every later sentence
# whose two likeliest classes are closer than four times that (RECHECK_FLOOR at least) is
# classified again in fp32, so bf16 cannot change a label (docs/inference.md has the figures).
PROBE_TEXTS = 64
RECHECK_FLOOR = 0.02
# Under ``auto``, a model that would send more than this share of its probe texts to the fp32
# recheck (an unconfident model) runs in fp32 alone: bf16 plus rechecks would be slower.
MAX_RECHECK_SHARE = 0.25
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def no_prediction(identifier, error: str) -> dict:
    """The entry of an input that cannot be classified: same keys as a prediction, all None."""
    return {"id": identifier, "status": NO_PREDICTION, "error": error, "label": None,
            "confidence": None, "probabilities": None}


def abstained(identifier, detection: Detection, languages: list[str]) -> dict:
    """The entry of an input the model was not trained to read: no label, and why."""
    return {"id": identifier, "status": ABSTAINED,
            "reason": f"the input is in a language the model was not trained on "
                      f"({detection.code}, detector confidence {detection.confidence:.2f}; "
                      f"trained on {', '.join(languages)})",
            "label": None, "confidence": None, "probabilities": None, **detection.fields(),
            "supported_language": False}


def _top_two_margin(probabilities: np.ndarray) -> np.ndarray:
    """Per row, how far the likeliest class is ahead of the next one."""
    ordered = np.sort(probabilities, axis=1)
    return ordered[:, -1] - ordered[:, -2]


class InputError(UserError):
    """An input cannot be classified (raised only where no per-item entry can say so)."""


@dataclass
class _Member:
    """One model of what the classifier predicts with, and the temperature its logits take."""

    loaded: LoadedModel
    calibration: dict

    @property
    def temperature(self) -> float:
        return float(self.calibration["temperature"])


def _member_calibration(model_dir: Path) -> dict:
    try:
        calibration = load_calibration(model_dir)
    except ValueError as error:
        raise ModelLoadError(str(error)) from None
    if calibration is None:
        return {"method": "none", "temperature": 1.0,
                "note": f"no calibration.json in {model_dir}: confidences are the model's raw "
                        "softmax (temperature 1.0)"}
    return calibration


@dataclass
class _Segment:
    """One sentence (or the title) of one input."""

    item: int
    text: str
    start: int | None
    end: int | None
    part: str  # "title" or "text"
    language: Detection | None = None  # detected for inputs of more than one sentence
    row: int | None = None  # its row among the classified texts; None when it abstained


def _calibration_of(members: list[_Member]) -> tuple[dict, float | None]:
    """The calibration record and temperature of one model, or of an ensemble of fold models
    (whose temperature is None: each member has its own)."""
    if len(members) == 1:
        return members[0].calibration, members[0].temperature
    calibrated = all(member.calibration.get("method") == "temperature_scaling"
                     for member in members)
    return {"method": "temperature_scaling" if calibrated else "none",
            "ensemble_size": len(members),
            "note": "mean of the fold models' probabilities, each model calibrated with its own "
                    "temperature",
            "members": [{"model": str(member.loaded.path), **member.calibration}
                        for member in members]}, None


class BiasClassifier:
    """Sentence and article bias labels (Non-biased / Biased / No agreement), calibrated.

    ``batch_size`` counts token windows per forward pass; ``max_length`` caps the tokens per window
    (default: what the model takes); ``num_threads`` overrides the CPU thread choice (see
    :func:`~backend.ml.inference.loading.configure_threads`); ``top_k`` is how many of the most
    biased sentences an article summary lists; ``language_policy`` (``warn``, ``abstain`` or
    ``off``, see :data:`~backend.ml.languages.LANGUAGE_POLICIES`) what happens to an input in a
    language the model was not trained on. ``precision``: ``auto`` runs a PyTorch model in bf16
    where the CPU computes bf16 natively (unless its first texts show it too unconfident for bf16
    to pay) and in fp32 elsewhere; ``bf16`` always; ``fp32`` never.
    In bf16, every sentence whose two likeliest classes are within :attr:`recheck_margin` of
    each other is classified again in fp32, so labels are fp32's.
    """

    def __init__(self, batch_size: int = 32, max_length: int | None = None,
                 num_threads: int | None = None, top_k: int = 3, trust_remote_code: bool = False,
                 language_policy: str = DEFAULT_LANGUAGE_POLICY, precision: str = "auto"):
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got "
                             f"{precision!r}")
        self.requested_precision = precision
        self.language_policy = check_language_policy(language_policy)
        self.language_record: dict | None = None
        self.batch_size = batch_size
        self.requested_max_length = max_length
        self.num_threads = num_threads
        self.top_k = top_k
        self.trust_remote_code = trust_remote_code
        self._members: list[_Member] = []
        self._bf16_probed, self._bf16_error, self._bf16_close = 0, 0.0, 0
        self.calibration: dict = {}
        self.temperature: float | None = 1.0

    # ------------------------------------------------------------------ loading

    def load_model(self, model_path: str | os.PathLike,
                   registry_dir: str | os.PathLike | None = None) -> BiasClassifier:
        """Load a ``final_model/`` directory, a run directory, an export dir or an ``.onnx`` file.

        A bare run id is looked up under ``experiments/runs``; ``"production"`` or
        ``"candidate"`` is the run the model registry (``registry_dir``, default
        ``experiments/registry``) holds in that stage.

        Uses the temperature in ``calibration.json`` when the model has one; otherwise 1.0, and
        every result says ``"calibrated": false``.

        A cross-validation run (its id or parent directory, holding ``folds/fold-k/final_model``)
        loads as an ensemble: probabilities are the mean of the k fold models' probabilities,
        each calibrated with its own temperature (:attr:`temperature` is then None), and every
        result carries ``ensemble_size``.
        """
        if str(model_path) in ("production", "candidate") and not Path(model_path).exists():
            from ..model_registry import DEFAULT_REGISTRY_DIR, ModelRegistry

            registry = ModelRegistry(registry_dir or DEFAULT_REGISTRY_DIR)
            model_path = registry.run_dir(str(model_path))
        paths = (cross_validation_models(model_path, DEFAULT_RUNS_DIR)
                 or [resolve_model_path(model_path, DEFAULT_RUNS_DIR)])
        threads = configure_threads(self.num_threads)
        members = []
        for path in paths:
            loaded = load_for_inference(path, trust_remote_code=self.trust_remote_code,
                                        num_threads=threads)
            members.append(_Member(loaded, _member_calibration(
                path.parent if path.is_file() else path)))
        differing = [str(member.loaded.path) for member in members
                     if member.loaded.label_names != members[0].loaded.label_names]
        if differing:
            raise ModelLoadError(f"{model_path}: the fold models name different classes "
                                 f"({', '.join(differing)} differ from {members[0].loaded.path}); "
                                 "an ensemble needs the same classes in every model.")
        self._members = members
        self._bf16_probed, self._bf16_error, self._bf16_close = 0, 0.0, 0
        # Fold models train on folds of one data set: the first one's record speaks for all.
        self.language_record = read_training_languages(
            paths[0].parent if paths[0].is_file() else paths[0])
        if self.language_record is None and self.language_policy != "off":
            logger.warning("%s records no training languages (no languages.json: saved "
                           "before runs recorded them, or not by a run): inputs are not checked "
                           "against them", model_path)
        self.calibration, self.temperature = _calibration_of(members)
        return self

    @property
    def training_languages(self) -> list[str] | None:
        """The languages the model was trained on; None when its run did not record them."""
        return None if self.language_record is None else list(self.language_record["languages"])

    @property
    def is_calibrated(self) -> bool:
        return self.calibration.get("method") == "temperature_scaling"

    @property
    def ensemble_size(self) -> int:
        """How many models predict together: k for a k-fold cross-validation run, else 1."""
        return len(self._members)

    @property
    def label_names(self) -> list[str]:
        return list(self._model.label_names)

    @property
    def max_length(self) -> int:
        # The shortest limit of the models; before loading, _model says no model is loaded.
        model_limit = min([member.loaded.max_length for member in self._members]
                          or [self._model.max_length])
        if self.requested_max_length:
            return min(self.requested_max_length, model_limit)
        return model_limit

    @property
    def runtime(self) -> str:
        return self._model.runtime

    @property
    def precision(self) -> str:
        """``bf16`` (with the fp32 recheck of close calls) or ``fp32``: what predictions run in."""
        if any(member.loaded.bf16_logits is None for member in self._members):
            return "fp32"  # ONNX Runtime runs the export as it was written
        if self.requested_precision == "auto":
            from ..models.hardware import cpu_has_native_bf16

            unconfident = (self._bf16_probed >= PROBE_TEXTS
                           and self._bf16_close > MAX_RECHECK_SHARE * self._bf16_probed)
            return "bf16" if cpu_has_native_bf16() and not unconfident else "fp32"
        return self.requested_precision

    @property
    def recheck_margin(self) -> float:
        """In bf16: how close the two likeliest classes may be before fp32 decides."""
        return max(RECHECK_FLOOR, 4 * self._bf16_error)

    @property
    def _model(self) -> LoadedModel:
        """The (first) loaded model: label names, runtime and, for export, the network."""
        if not self._members:
            raise InputError("No model loaded: call classifier.load_model(path) first.")
        return self._members[0].loaded

    # ------------------------------------------------------------------ public predictions

    def predict(self, texts: Iterable[Any]) -> list[str | None]:
        """Plain labels, one per input; None for an input that has no prediction (empty, not text).

        >>> classifier.predict(["Officials released the figures on Tuesday."])  # doctest: +SKIP
        ['Non-biased']
        """
        return [result["label"] for result in self.predict_with_confidence(texts)]

    def predict_proba(self, sentences: list[str], show_progress: bool = False) -> np.ndarray:
        """Calibrated class probabilities, one row per text, each text taken as one sentence.

        No sentence splitting (what sentence-level evaluation needs); a text longer than
        ``max_length`` is still read whole, as the mean over its token windows. Columns follow
        :attr:`label_names`.
        """
        texts = list(sentences)
        bad = [index for index, text in enumerate(texts)
               if not isinstance(text, str) or not text.strip()]
        if bad:
            raise InputError(f"predict_proba needs non-empty strings; inputs {bad[:10]} are not")
        return self._segment_probabilities(texts, show_progress)[0]

    def predict_with_confidence(self, articles: Any, show_progress: bool = False
                                ) -> list[dict] | dict:
        """Label, confidence and class probabilities per input; sentences and summary for articles.

        ``articles`` is a list of strings or of dicts with ``text`` (optional ``title``, ``id``);
        a single string or dict (or None) gives a single result. An input with more than one
        sentence (the title counts as one) also gets ``sentences`` (each with its offsets in
        ``text``) and ``summary``; its label is the class with the highest mean sentence
        probability. Input that cannot be classified (None, empty, not text) gets
        ``status: "no_prediction"`` and an ``error``, never an exception that would lose the rest
        of the batch; undecodable characters (lone surrogates) are read as U+FFFD.

        Every classified input carries its ``language`` and ``language_confidence`` (each
        sentence of an article too, and the article its ``languages`` when they are mixed) and,
        unless the policy is ``off``, ``supported_language``: false for a language the model
        was not trained on (then ``abstain`` gives ``status: "abstained"`` and a ``reason``
        instead of a label; in an article, such a sentence gets no label and does not count
        in the article's), None when the language or the model's languages are unknown.
        """
        single = isinstance(articles, (str, dict, bytes)) or not isinstance(articles, Iterable)
        items = [articles] if single else list(articles)
        results: list[dict] = []
        segments: list[_Segment] = []  # the sentences to classify, of every input
        languages: dict[int, dict] = {}  # item -> its language fields
        classified: dict[int, list[_Segment]] = {}  # item -> all its segments
        unsupported: Counter[str] = Counter()
        for index, item in enumerate(items):
            parsed = self._parse(item, index)
            if isinstance(parsed, dict):  # a no-prediction entry
                results.append(parsed)
                continue
            identifier, item_segments = parsed
            detection = detect_language(" ".join(segment.text for segment in item_segments))
            languages[index] = self._language_fields(detection)
            if languages[index].get("supported_language") is False:
                unsupported[detection.code] += 1
            to_classify = self._to_classify(item_segments, detection)
            if not to_classify:
                surest = max(item_segments, key=lambda segment: (segment.language or detection
                                                                  ).confidence)
                results.append({**abstained(identifier, surest.language or detection,
                                            self.training_languages or []), **languages[index]})
                continue
            for segment in to_classify:
                segment.row = len(segments)
                segments.append(segment)
            results.append({"id": identifier})
            classified[index] = item_segments
        if unsupported:
            self._log_unsupported(unsupported, len(items))
        probabilities, windows = self._segment_probabilities([s.text for s in segments],
                                                             show_progress)
        for item, item_segments in classified.items():
            results[item].update(self._item_result(item_segments, probabilities, windows))
            results[item].update(languages[item])
        return results[0] if single else results

    def _to_classify(self, segments: list[_Segment], detection: Detection) -> list[_Segment]:
        """The segments the model reads: under ``abstain`` none of an input in a language it
        was not trained on, nor such sentences of an article. Detects each sentence's language
        when there are several."""
        if self._abstains(detection):
            return []
        if len(segments) > 1:
            for segment in segments:
                segment.language = detect_language(segment.text)
        return [segment for segment in segments
                if segment.language is None or not self._abstains(segment.language)]

    def _abstains(self, detection: Detection) -> bool:
        return (self.language_policy == "abstain"
                and is_supported(detection, self.training_languages) is False)

    def _language_fields(self, detection: Detection) -> dict:
        fields = detection.fields()
        if self.language_policy != "off":
            fields["supported_language"] = is_supported(detection, self.training_languages)
        return fields

    def _log_unsupported(self, unsupported: Counter[str], total: int) -> None:
        consequence = ("they get no label" if self.language_policy == "abstain"
                       else "their labels are unreliable")
        logger.warning("%d of %d input(s) are in a language the model was not trained on (%s; "
                       "trained on %s): %s", sum(unsupported.values()), total,
                       ", ".join(f"{code} {count}" for code, count in unsupported.most_common()),
                       ", ".join(self.training_languages or []), consequence)

    # ------------------------------------------------------------------ input handling

    def _parse(self, item: Any, index: int) -> tuple[Any, list[_Segment]] | dict:
        """(id, segments) of one input, or a no-prediction entry saying what is wrong with it."""
        identifier, title = None, None
        if isinstance(item, dict):
            identifier = item.get("id")
            text, title = item.get("text"), item.get("title")
            if text is None and not title:
                return no_prediction(identifier, "the dict has no 'text'")
            if text is not None and not isinstance(text, str):
                return no_prediction(identifier,
                                     f"'text' is {type(text).__name__}, expected a string")
            if title is not None and not isinstance(title, str):
                return no_prediction(identifier,
                                     f"'title' is {type(title).__name__}, expected a string")
        elif isinstance(item, str):
            text = item
        else:
            return no_prediction(None, f"{type(item).__name__} is not text "
                                       "(expected a string or a dict with 'text')")
        # Lone surrogates (from undecodable bytes) cannot reach the tokenizer; one character
        # for one keeps every sentence offset valid.
        text = _LONE_SURROGATE.sub("\ufffd", text) if text else text
        title = _LONE_SURROGATE.sub("\ufffd", title) if title else title
        segments = []
        if title and title.strip():
            segments.append(_Segment(index, title.strip(), None, None, "title"))
        body = text or ""
        for start, end in sentence_spans(body):
            segments.append(_Segment(index, body[start:end], start, end, "text"))
        if not segments:
            return no_prediction(identifier, "empty text")
        return identifier, segments

    # ------------------------------------------------------------------ the model

    def _windows(self, model: LoadedModel, texts: list[str]
                 ) -> tuple[list[list[int]], dict[str, list], np.ndarray]:
        """Tokenise once; a text longer than ``max_length`` becomes overlapping windows."""
        max_length = self.max_length
        tokenizer = model.tokenizer
        special = tokenizer.num_special_tokens_to_add(pair=False)
        # A quarter of each window repeats the end of the previous one, so that no phrase is
        # only ever seen cut in half at a window edge.
        stride = max(0, min(128, (max_length - special) // 4))
        encoding = tokenizer(texts, truncation=True, max_length=max_length, stride=stride,
                             return_overflowing_tokens=True, padding=False,
                             return_attention_mask=True)
        owners = np.asarray(encoding["overflow_to_sample_mapping"], dtype=int)
        names = {"input_ids", *model.input_names}
        missing = names - set(encoding.keys())
        if missing:
            raise ModelLoadError(f"the model takes {sorted(missing)}, which its tokenizer does "
                                 "not produce")
        features = {name: encoding[name] for name in names}
        return encoding["input_ids"], features, owners

    @staticmethod
    def _pad(model: LoadedModel, features: dict[str, list], rows: np.ndarray
             ) -> dict[str, np.ndarray]:
        """The chosen rows padded to the longest of them (dynamic padding) by the tokenizer."""
        chosen = {name: [values[row] for row in rows] for name, values in features.items()}
        padded = model.tokenizer.pad(chosen, padding="longest", return_tensors="np")
        return {name: np.asarray(padded[name], dtype=np.int64) for name in features}

    def _segment_probabilities(self, texts: list[str], show_progress: bool
                               ) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated class probabilities per text (mean over its windows, then over the models
        of an ensemble) and its window count."""
        num_classes = len(self._model.label_names)
        if not texts:
            return np.zeros((0, num_classes)), np.zeros(0, dtype=int)
        if self.precision != "bf16":
            return self._ensemble_probabilities(texts, show_progress, bf16=False)
        probabilities, windows = self._ensemble_probabilities(texts, show_progress, bf16=True)
        probed = min(len(texts), max(0, PROBE_TEXTS - self._bf16_probed))
        if probed:
            exact = self._ensemble_probabilities(texts[:probed], False, bf16=False)[0]
            self._bf16_error = max(self._bf16_error,
                                   float(np.abs(exact - probabilities[:probed]).max()))
            self._bf16_probed += probed
            self._bf16_close += int((_top_two_margin(exact) < self.recheck_margin).sum())
            probabilities[:probed] = exact
        close = probed + np.flatnonzero(_top_two_margin(probabilities[probed:])
                                        < self.recheck_margin)
        if close.size:
            probabilities[close] = self._ensemble_probabilities(
                [texts[index] for index in close], False, bf16=False)[0]
        return probabilities, windows

    def _ensemble_probabilities(self, texts: list[str], show_progress: bool, bf16: bool
                                ) -> tuple[np.ndarray, np.ndarray]:
        # Each model tokenises for itself: fold models trained from scratch have their own
        # vocabularies.
        outputs = [self._member_probabilities(member, texts, show_progress, bf16)
                   for member in self._members]
        probabilities = np.mean([member_probabilities for member_probabilities, _ in outputs],
                                axis=0)
        return probabilities, outputs[0][1]

    def _member_probabilities(self, member: _Member, texts: list[str], show_progress: bool,
                              bf16: bool) -> tuple[np.ndarray, np.ndarray]:
        num_classes = len(member.loaded.label_names)
        forward = member.loaded.bf16_logits if bf16 and member.loaded.bf16_logits else \
            member.loaded.logits
        input_ids, features, owners = self._windows(member.loaded, texts)
        lengths = np.fromiter((len(ids) for ids in input_ids), dtype=int, count=len(input_ids))
        # Longest first: a batch that does not fit in memory fails at once, not at the end.
        order = np.argsort(-lengths, kind="stable")
        logits = np.zeros((len(input_ids), num_classes), dtype=np.float32)
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        progress = None
        if show_progress:
            from tqdm.auto import tqdm

            progress = tqdm(total=len(texts), desc="Classifying", unit="sentence")
        for rows in batches:
            logits[rows] = forward(self._pad(member.loaded, features, rows))
            if progress is not None:
                progress.update(len(np.unique(owners[rows])))
        if progress is not None:
            progress.close()
        window_probabilities = softmax(logits, member.temperature)
        sums = np.zeros((len(texts), num_classes))
        np.add.at(sums, owners, window_probabilities)
        windows = np.bincount(owners, minlength=len(texts))
        return sums / windows[:, None], windows

    # ------------------------------------------------------------------ results

    def _scores(self, probabilities: np.ndarray) -> dict:
        names = self._model.label_names
        best = int(probabilities.argmax())
        return {"label": names[best], "confidence": float(probabilities[best]),
                "probabilities": {name: float(value) for name, value in zip(names, probabilities)}}

    def _biased_index(self) -> int | None:
        lowered = [name.lower() for name in self._model.label_names]
        return lowered.index(BIASED.lower()) if BIASED.lower() in lowered else None

    def _item_result(self, segments: list[_Segment], probabilities: np.ndarray,
                     windows: np.ndarray) -> dict:
        """One input's result from its segments; those with a row were classified, and the
        input's probabilities are their mean."""
        rows = [segment.row for segment in segments if segment.row is not None]
        result = {"status": "ok", **self._scores(probabilities[rows].mean(axis=0)),
                  "calibrated": self.is_calibrated, "num_sentences": len(segments)}
        if self.ensemble_size > 1:
            result["ensemble_size"] = self.ensemble_size
        if len(segments) == 1:
            if windows[rows[0]] > 1:
                result["windows"] = int(windows[rows[0]])
            return result
        if len(rows) < len(segments):
            result["abstained_sentences"] = len(segments) - len(rows)
        biased = self._biased_index()
        sentences = [self._sentence_entry(index, segment, probabilities, windows, biased)
                     for index, segment in enumerate(segments)]
        result["sentences"] = sentences
        result["summary"] = self._summary([entry for entry in sentences
                                           if entry["label"] is not None], biased)
        mix = language_shares(segment.language.code for segment in segments
                              if segment.language and segment.language.code != UNDETERMINED)
        if len(mix) > 1:
            result["languages"] = mix
        return result

    def _sentence_entry(self, index: int, segment: _Segment, probabilities: np.ndarray,
                        windows: np.ndarray, biased: int | None) -> dict:
        entry: dict[str, Any] = {"index": index, "part": segment.part, "text": segment.text,
                                 "start": segment.start, "end": segment.end}
        if segment.row is None:
            entry.update({"status": ABSTAINED, "label": None, "confidence": None,
                          "probabilities": None})
        else:
            row = probabilities[segment.row]
            entry.update(self._scores(row))
            if biased is not None:
                entry["biased_score"] = float(row[biased])
            if windows[segment.row] > 1:
                entry["windows"] = int(windows[segment.row])
        if segment.language is not None:
            entry.update(self._language_fields(segment.language))
        return entry

    def _summary(self, sentences: list[dict], biased: int | None) -> dict:
        counts = {name: 0 for name in self._model.label_names}
        for sentence in sentences:
            counts[sentence["label"]] += 1
        summary = {"num_sentences": len(sentences), "label_counts": counts}
        if biased is None:
            return summary
        biased_name = self._model.label_names[biased]
        scores = np.array([sentence["biased_score"] for sentence in sentences])
        ranked = sorted(sentences, key=lambda sentence: -sentence["biased_score"])[:self.top_k]
        summary.update({
            "biased_count": counts[biased_name],
            "biased_share": counts[biased_name] / len(sentences),
            "mean_biased_score": float(scores.mean()),
            "max_biased_score": float(scores.max()),
            "most_biased": [{"index": s["index"], "text": s["text"], "score": s["biased_score"],
                             "label": s["label"]} for s in ranked],
        })
        return summary
