"""Text preprocessing modes, applied to every sentence before tokenisation.

- ``none``: the sentence exactly as in the file.
- ``lowercase``: ``str.lower()``, nothing else (for uncased checkpoints this is what the
  tokenizer does anyway; for cased ones it removes case as a cue).
- ``clean``: curly quotes and apostrophes become straight ones, URLs become ``[URL]``,
  runs of whitespace (tabs, newlines, non-breaking spaces) become one space, and the ends
  are stripped. Case is kept.
"""

from __future__ import annotations

import re
import unicodedata

PREPROCESSING_MODES = ("none", "lowercase", "clean")

# BABE mixes typographic and straight quotes (often within one outlet), so the same word
# would otherwise reach the tokenizer in two spellings.
_QUOTES = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "\u00b4": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
})
_URL = re.compile(r"(?:\bhttps?://|\bwww\.)[^\s<>\"']+", re.IGNORECASE)
_URL_TRAILING = ".,;:!?)]}"  # sentence punctuation after a URL is not part of it
_WHITESPACE = re.compile(r"\s+")


def _replace_url(match: re.Match) -> str:
    url = match.group(0)
    kept = url.rstrip(_URL_TRAILING)
    return "[URL]" + url[len(kept):]


def clean_text(text: str) -> str:
    """The ``clean`` mode.

    >>> clean_text("  They called it \u201cfake\u201d \u2013 see https://example.org/a.  ")
    'They called it "fake" \u2013 see [URL].'
    """
    text = text.translate(_QUOTES)
    text = _URL.sub(_replace_url, text)
    return _WHITESPACE.sub(" ", text).strip()


def preprocess_text(text: str, mode: str) -> str:
    """Apply preprocessing ``mode`` (none, lowercase or clean) to one sentence.

    >>> preprocess_text("The  Senate\u2019s vote", "clean")
    "The Senate's vote"
    """
    if mode == "none":
        return text
    if mode == "lowercase":
        return text.lower()
    if mode == "clean":
        return clean_text(text)
    raise ValueError(f"unknown preprocessing mode {mode!r}; use one of "
                     f"{', '.join(PREPROCESSING_MODES)}")


def sentence_key(text: str) -> str:
    """What makes two sentences the same sentence when one split must not hold another's:
    compatibility forms folded (NFKC), curly quotes straightened, case folded, whitespace runs
    collapsed. A test sentence that reappears in training data with other quotes, case or
    spacing is still found.

    >>> print(sentence_key("  The Senate\u2019s  \u201cPlan\u201d "))
    the senate's "plan"
    """
    folded = unicodedata.normalize("NFKC", text).translate(_QUOTES).casefold()
    return _WHITESPACE.sub(" ", folded).strip()
