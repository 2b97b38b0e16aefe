"""Which model version answers an input: a deterministic split of traffic by article id.

The same id always goes to the same version (a reader sees one model's labels on one article),
and about ``candidate_share`` of all ids go to the candidate. A sentence sent without an id is
keyed by a hash of its text, so it too is routed the same way every time.

>>> split = TrafficSplit(candidate_share=0.5)
>>> split.version_for(item_key("a-17", None)) == split.version_for(item_key("a-17", None))
True
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

PRODUCTION = "production"
CANDIDATE = "candidate"


def text_hash(text: str) -> str:
    """A short stable digest of a text: joins predictions and feedback without storing the text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def item_key(identifier, text: str | None) -> str:
    """``id:<id>`` for an article with an id, else ``text:<hash of the text>``.

    >>> item_key(17, "ignored"), item_key(None, "A sentence.")
    ('id:17', 'text:92cc199c38785d89')
    """
    if identifier is not None and str(identifier) != "":
        return f"id:{identifier}"
    return f"text:{text_hash(text or '')}"


def _bucket(key: str) -> float:
    """A uniform number in [0, 1) fixed by ``key``."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2 ** 64


@dataclass(frozen=True)
class TrafficSplit:
    """Routes keys to production or candidate; share 0 sends everything to production."""

    candidate_share: float = 0.0

    def __post_init__(self):
        if not 0.0 <= self.candidate_share <= 1.0:
            raise ValueError(f"candidate share must be between 0 and 1, got {self.candidate_share}")

    def version_for(self, key: str) -> str:
        return CANDIDATE if _bucket(key) < self.candidate_share else PRODUCTION
