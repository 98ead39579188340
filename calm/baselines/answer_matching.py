"""Map a generated answer to a class name, for the zero-shot baseline.

Exact match first, then a normalised match (case, punctuation, underscores, an option letter such
as "B." in front), then a fuzzy one (a single class name contained in the answer, or difflib
similarity ≥ `cutoff`); simple inflections count ("spoofed" names "spoof"), and number words
match digits both ways ("Seven." names class "7": Whisper transcribes spoken digits). An answer that matches nothing, or several classes equally, is unmatched:
the caller counts it as wrong and reports it.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

OPTION_PREFIX = re.compile(r"^\s*(?:\(?[A-Da-d][.):]\s+)")
NON_WORD = re.compile(r"[^0-9a-z]+")
INFLECTION = "(?:s|es|ed|d|ing)?"  # "spoofed" names "spoof", "dogs" names "dog"
NUMBER_WORDS = {word: str(value) for value, word in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}


def normalise(text: str) -> str:
    """Lower case, option letter and punctuation dropped, words separated by single spaces."""
    text = OPTION_PREFIX.sub("", text.strip())
    return NON_WORD.sub(" ", text.lower().replace("_", " ")).strip()


def numbers_as_digits(text: str) -> str:
    """Number words of a normalised text as digits ("seven" -> "7"), applied to answers and class names alike."""
    return " ".join(NUMBER_WORDS.get(word, word) for word in text.split())


def match_answer(answer: str, class_names: Sequence[str], cutoff: float = 0.8) -> int | None:
    """The class index the answer names, or None when it names none (or several) of them."""
    if answer in class_names:
        return list(class_names).index(answer)
    wanted = numbers_as_digits(normalise(answer))
    names = [numbers_as_digits(normalise(name)) for name in class_names]
    if wanted in names and names.count(wanted) == 1:
        return names.index(wanted)
    contained = [i for i, name in enumerate(names) if name and re.search(rf"\b{re.escape(name)}{INFLECTION}\b", wanted)]
    if len(contained) == 1:
        return contained[0]
    if len(contained) > 1:
        longest = max(contained, key=lambda i: len(names[i]))
        others = [i for i in contained if i != longest and names[i] not in names[longest]]
        return None if others else longest
    close = difflib.get_close_matches(wanted, names, n=2, cutoff=cutoff)
    if len(close) == 1 or (len(close) == 2 and close[0] != close[1] and
                           difflib.SequenceMatcher(None, wanted, close[0]).ratio()
                           > difflib.SequenceMatcher(None, wanted, close[1]).ratio()):
        return names.index(close[0])
    return None
