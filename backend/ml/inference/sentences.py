"""Rule-based sentence splitting for news text: no model, no download.

A boundary is sentence-final punctuation (``.``, ``!``, ``?``, ``…``), optionally followed by
closing quotes or brackets, then whitespace, then something that can start a sentence (a capital
letter, a digit, or an opening quote / bracket before one). A blank line is always a boundary.
A full stop does not end a sentence after a known abbreviation (``Mr.``, ``Gen.``, ``Inc.``,
``Jan.``), an initial (``J. K. Rowling``) or a dotted acronym (``U.S.``, ``e.g.``): splitting a
sentence in two loses context the classifier needs, whereas a rare missed boundary only makes one
input a little longer.
"""

from __future__ import annotations

import re

# Lower-cased, without the full stop. Titles and company suffixes rarely end a news sentence.
ABBREVIATIONS = frozenset("""
mr mrs ms mx dr prof sr jr st mt ft rev hon pres gov sen rep gen col lt maj capt cpt sgt cmdr adm
supt insp det messrs mme mlle
inc corp ltd co llc plc bros dept univ assn est
jan feb mar apr jun jul aug sep sept oct nov dec
mon tue tues wed thu thur thurs fri sat sun
vs v etc al approx ca cf fig figs vol vols ch sec pp ed eds
ave blvd rd hwy
""".split())
# Ambiguous with ordinary words ("He said no."): an abbreviation only when a number follows.
NUMBER_ABBREVIATIONS = frozenset({"no", "nos", "art", "para", "op", "p"})

# Final punctuation, closing quotes / brackets, whitespace, then (looking ahead) a capital or
# digit, possibly behind opening quotes / brackets.
_TERMINAL = re.compile(
    r"""(?P<punct>[.!?…]+)(?P<close>["'”’»)\]]*)(?P<space>\s+)"""
    r"""(?=(?P<next>["'“‘«(\[]*[A-Z0-9À-Ý]))""")
_BLANK_LINE = re.compile(r"\n[ \t\r\f\v]*\n\s*")
_WORD_BEFORE = re.compile(r"([\w.'’-]*)$")
_ACRONYM = re.compile(r"^(?:[A-Za-z]\.)+[A-Za-z]?$")  # U.S, e.g, a.m, Ph.D without its last stop


def _is_abbreviation(text: str, dot: int, next_char: str) -> bool:
    """Whether the full stop at ``text[dot]`` belongs to the word before it."""
    before = _WORD_BEFORE.search(text, 0, dot)
    word = before.group(1) if before else ""  # never None: the pattern matches an empty word
    if not word:
        return False
    bare = word.rstrip(".")
    lowered = bare.lower().lstrip("'’(\"“")
    if lowered in ABBREVIATIONS:
        return True
    if lowered in NUMBER_ABBREVIATIONS and next_char.isdigit():
        return True
    if len(bare) == 1 and bare.isalpha() and bare.isupper():  # an initial: "J. K. Rowling"
        return True
    return bool(_ACRONYM.match(bare + ".") or _ACRONYM.match(bare)) and "." in bare


def _boundaries_in(text: str, start: int, end: int) -> list[int]:
    """Offsets (in ``text``) where a new sentence begins inside ``text[start:end]``."""
    cuts = []
    for match in _TERMINAL.finditer(text, start, end):
        punct = match.group("punct")
        if punct == "." and _is_abbreviation(text, match.start("punct"), match.group("next")[-1]):
            continue
        cuts.append(match.end("space"))
    return cuts


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` character offsets of each sentence, whitespace trimmed, in order.

    >>> text = "Mr. Smith went to Washington. He arrived at 5 p.m. on Monday."
    >>> [text[a:b] for a, b in sentence_spans(text)]
    ['Mr. Smith went to Washington.', 'He arrived at 5 p.m. on Monday.']
    """
    if not isinstance(text, str):
        raise TypeError(f"expected a string, got {type(text).__name__}")
    spans = []
    paragraph_start = 0
    paragraph_ends = [(m.start(), m.end()) for m in _BLANK_LINE.finditer(text)]
    paragraph_ends.append((len(text), len(text)))
    for paragraph_end, next_start in paragraph_ends:
        starts = [paragraph_start] + _boundaries_in(text, paragraph_start, paragraph_end)
        ends = starts[1:] + [paragraph_end]
        for start, end in zip(starts, ends):
            piece = text[start:end]
            stripped = piece.strip()
            if stripped:
                offset = start + (len(piece) - len(piece.lstrip()))
                spans.append((offset, offset + len(stripped)))
        paragraph_start = next_start
    return spans


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text``; an empty or blank text has none.

    >>> split_sentences('He said "It is over." Then the U.S. team left.')
    ['He said "It is over."', 'Then the U.S. team left.']
    """
    return [text[start:end] for start, end in sentence_spans(text)]
