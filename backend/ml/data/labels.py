"""Class names and their ids: the order here is the order of the model's outputs."""

from __future__ import annotations

NO_AGREEMENT = "No agreement"

# Id 0, 1, 2. Non-biased and Biased keep ids 0 and 1 in the binary task, so a binary and a
# three-class model agree on what "label 1" means.
LABEL_NAMES = ["Non-biased", "Biased", NO_AGREEMENT]


def label_names_for(filter_no_agreement: bool) -> list[str]:
    """The class names, in id order, for the task the data config asks for.

    >>> label_names_for(True)
    ['Non-biased', 'Biased']
    """
    names = [name for name in LABEL_NAMES if not (filter_no_agreement and name == NO_AGREEMENT)]
    return names


def canonical_label(value: str) -> str | None:
    """``value`` spelled as in LABEL_NAMES (case and surrounding spaces ignored), or None."""
    wanted = " ".join(str(value).split()).casefold()
    for name in LABEL_NAMES:
        if name.casefold() == wanted:
            return name
    return None
