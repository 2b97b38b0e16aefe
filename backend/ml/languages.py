"""The language of a text, the languages a model was trained on, and what to do with the others.

Detection is py3langid (a naive Bayes model over byte n-grams that ships in the package, about
0.25 ms a sentence on one CPU core, no network): right on all 120 short de/fr/it/en news
sentences of the test set; its best guess is English for 2,971 of BABE's 2,974 sentences, and
the three misses come with confidences below :data:`MIN_CONFIDENCE`, so they read as
undetermined (``und``), never as another language. Codes are ISO 639-1 where a language has
one (ISO 639-3 otherwise, e.g. ``ace``).

A run records its training split's languages (:func:`training_languages`) in ``results.json``
and in ``final_model/languages.json``; a language is a training language when at least
:data:`MIN_TRAINING_SHARE` of the training sentences are confidently detected in it. An input
confidently detected in another language is unsupported: :data:`LANGUAGE_POLICIES` say what
then happens to its prediction.

>>> detect_language("Der Bundesrat hat das Budget genehmigt.").code  # doctest: +SKIP
'de'
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from .errors import UserError
from .fileio import atomic_write_json

LANGUAGES_FILE = "languages.json"  # in final_model/, beside calibration.json
UNDETERMINED = "und"  # ISO 639-2's code for "cannot tell"
# Below this the detector's guess is noise (BABE's misses: 0.05-0.10; the test set's lowest
# right answer: 0.69), so the text counts as undetermined and is never flagged.
MIN_CONFIDENCE = 0.5
# Share of confidently detected training sentences that makes a language a training language:
# a handful of quoted foreign phrases in an English corpus does not.
MIN_TRAINING_SHARE = 0.01
LANGUAGE_POLICIES = {
    "warn": "predict, flag the input (supported_language: false) and log a warning",
    "abstain": "give no label to the input (or to such a sentence of an article); its "
               "reason says which language it is",
    "off": "report the language, never flag or abstain",
}
DEFAULT_LANGUAGE_POLICY = "warn"
# Name parts of encoders pretrained on many languages (XLM-RoBERTa, multilingual BERT and
# MiniLM, mDeBERTa, LaBSE); English ones (MiniLM-L6, BERT, RoBERTa) read German as noise.
MULTILINGUAL_NAME_PARTS = ("xlm-roberta", "multilingual", "mdeberta", "labse")
# A vocabulary this large covers many languages; English ones hold 30-50k tokens.
MULTILINGUAL_MIN_VOCABULARY = 100_000


@dataclass(frozen=True)
class Detection:
    """A text's language (ISO 639-1, or ``und``) and the detector's confidence in it."""

    code: str
    confidence: float

    def fields(self) -> dict:
        """The keys every prediction carries."""
        return {"language": self.code, "language_confidence": round(self.confidence, 4)}


@lru_cache(maxsize=1)
def _identifier():
    # Imported and loaded (about 0.8 s) on first use: the CLI's parser must stay light.
    from py3langid import langid

    return langid.LanguageIdentifier.from_model_file(langid.MODEL_FILE, norm_probs=True)


def load_detector() -> None:
    """Load the detector now (about 0.8 s) rather than at the first text, e.g. before a server
    answers its first request."""
    _identifier()


def detector_name() -> str:
    return f"py3langid {metadata.version('py3langid')}"


def detect_language(text: str) -> Detection:
    """The language of ``text``; ``und`` when it has no letters or the detector is unsure."""
    if not any(character.isalpha() for character in text):
        return Detection(UNDETERMINED, 0.0)
    code, confidence = _identifier().classify(text)
    if confidence < MIN_CONFIDENCE:
        return Detection(UNDETERMINED, float(confidence))
    return Detection(str(code), float(confidence))


def language_shares(codes: Iterable[str]) -> dict[str, float]:
    """Share of each language code, largest first."""
    counts = Counter(codes)
    total = sum(counts.values())
    return {code: round(count / total, 4) for code, count in counts.most_common()} if total else {}


def training_languages(texts: list[str]) -> dict:
    """What a run records about its training sentences' languages.

    >>> training_languages(["The vote was delayed.", "Die Abstimmung wurde verschoben."]
    ...                    )["languages"]  # doctest: +SKIP
    ['de', 'en']
    """
    codes = [detect_language(text).code for text in texts]
    shares = language_shares(codes)
    determined = sum(1 for code in codes if code != UNDETERMINED)
    languages = sorted(code for code, count in Counter(codes).items()
                       if code != UNDETERMINED and determined
                       and count / determined >= MIN_TRAINING_SHARE)
    return {"languages": languages, "shares": shares, "sentences": len(texts),
            "detector": detector_name(), "min_confidence": MIN_CONFIDENCE,
            "min_training_share": MIN_TRAINING_SHARE}


def write_training_languages(model_dir: Path, record: dict) -> None:
    atomic_write_json(Path(model_dir) / LANGUAGES_FILE, record)


def read_training_languages(model_dir: Path) -> dict | None:
    """The record of ``model_dir``'s training languages; None for a model saved before runs
    recorded them (its languages are unknown, so no input is flagged)."""
    path = Path(model_dir) / LANGUAGES_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: unreadable ({error}).") from None
    if not isinstance(record, dict) or not isinstance(record.get("languages"), list):
        raise UserError(f"{path}: expected an object with a 'languages' list.")
    return record


def is_supported(detection: Detection, languages: list[str] | None) -> bool | None:
    """Whether the model was trained on the input's language; None when either is unknown."""
    if languages is None or detection.code == UNDETERMINED:
        return None
    return detection.code in languages


def check_language_policy(policy: str, field: str = "language_policy") -> str:
    if policy not in LANGUAGE_POLICIES:
        raise UserError(f"{field}: {policy!r} is not a language policy; choose "
                        f"{', '.join(LANGUAGE_POLICIES)}")
    return policy


def parse_language_codes(value: str, field: str) -> list[str]:
    """``"de,fr"`` → ``["de", "fr"]``, each checked against the detector's languages."""
    codes = [code.strip().lower() for code in value.split(",") if code.strip()]
    known = set(_identifier().labels)
    unknown = [code for code in codes if code not in known]
    if not codes or unknown:
        raise UserError(f"{field}: {', '.join(unknown) or repr(value)} "
                        f"{'is not a language code' if unknown else 'names no language'}; give "
                        "ISO 639-1 codes separated by commas, e.g. de,fr,it")
    return sorted(set(codes))


def is_multilingual_encoder(model_name: str) -> bool:
    """Whether ``model_name`` (a hub id or a local model directory) was pretrained on many
    languages, so that a model fine-tuned from it can learn from non-English sentences.

    >>> is_multilingual_encoder("xlm-roberta-base"), is_multilingual_encoder("minilm")
    (True, False)
    """
    if any(part in model_name.lower() for part in MULTILINGUAL_NAME_PARTS):
        return True
    config_file = Path(model_name) / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and (
        config.get("model_type") == "xlm-roberta"
        or int(config.get("vocab_size") or 0) >= MULTILINGUAL_MIN_VOCABULARY)


def add_language_policy_argument(parser) -> None:
    """``--language-policy`` of the commands that predict (``predict``, ``serve``)."""
    parser.add_argument("--language-policy", choices=tuple(LANGUAGE_POLICIES),
                        default=DEFAULT_LANGUAGE_POLICY,
                        help="an input in a language the model was not trained on: " + "; ".join(
                            f"{name}: {meaning}" for name, meaning in LANGUAGE_POLICIES.items())
                        + f" (default {DEFAULT_LANGUAGE_POLICY})")
