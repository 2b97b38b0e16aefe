"""The sentence splitter: boundaries a reader agrees with, abbreviations and quotes kept whole."""

import pytest

from backend.ml.inference.sentences import sentence_spans, split_sentences


@pytest.mark.parametrize("text, expected", [
    ("Mr. Smith went to Washington. He arrived at 5 p.m. on Monday.",
     ["Mr. Smith went to Washington.", "He arrived at 5 p.m. on Monday."]),
    ("The U.S. economy grew. Analysts, e.g. at the Fed, were surprised.",
     ["The U.S. economy grew.", "Analysts, e.g. at the Fed, were surprised."]),
    ('He said "It is over." Then the team left.',
     ['He said "It is over."', "Then the team left."]),
    ('"Is this right?" he asked. She left.', ['"Is this right?" he asked.', "She left."]),
    ('The vote ended. "We will fight," she said!',
     ["The vote ended.", '"We will fight," she said!']),
    ("J. K. Rowling spoke with Gov. Newsom and Apple Inc. Chief Tim Cook on Jan. 5.",
     ["J. K. Rowling spoke with Gov. Newsom and Apple Inc. Chief Tim Cook on Jan. 5."]),
    ("Turnout was 3.5 percent higher. Really? Yes!",
     ["Turnout was 3.5 percent higher.", "Really?", "Yes!"]),
    ("He said no. No. 10 denied it.", ["He said no.", "No. 10 denied it."]),
    ("Wait... Then it happened. (He later recanted.) Fine.",
     ["Wait...", "Then it happened.", "(He later recanted.)", "Fine."]),
    ("A headline without a full stop\n\nThe body starts here. It goes on.",
     ["A headline without a full stop", "The body starts here.", "It goes on."]),
    ("prices rose. inflation followed.", ["prices rose. inflation followed."]),  # no capital: one
])
def test_split_sentences(text, expected):
    assert split_sentences(text) == expected


@pytest.mark.parametrize("text", ["", "   ", "\n\n \t"])
def test_blank_text_has_no_sentence(text):
    assert split_sentences(text) == []


def test_spans_point_into_the_original_text():
    text = "  First one here.   Second, after spaces!\n\n  Third?  "
    spans = sentence_spans(text)
    assert [text[start:end] for start, end in spans] == ["First one here.", "Second, after spaces!",
                                                         "Third?"]


def test_non_text_is_a_type_error():
    with pytest.raises(TypeError, match="expected a string"):
        split_sentences(None)
