"""Map a generated answer to a class name (the zero-shot baseline and pseudo-labelling), or to an
offered option by its letter (`match_option_letter`, the authors' multiple-choice scoring).

Exact match first, then a normalised match (case, punctuation, underscores, an option letter such
as "B." in front), then a fuzzy one (a single class name contained in the answer, or difflib
similarity ≥ `cutoff`); simple inflections count ("spoofed" names "spoof"), and number words
match digits both ways ("Seven." names class "7": Whisper transcribes spoken digits). An answer that matches nothing,
or several classes equally, is unmatched:
the caller counts it as wrong and reports it.

Option letters (`match_option_letter`): the first letter in the answer that stands alone (no letter or
digit touching it) and is one of the offered letters, upper case anywhere ("The answer is C. dog" -> C,
"A and B" -> A), lower case only as the answer's first character, optionally after "(", followed by
".", ")", ":" or nothing else ("b) rain" -> B). Lower case elsewhere is never a letter, so the article
in "it is a dog" names no option; neither does "I" when only A-D are offered. The authors' scripts read
the first character (A-D) of the answer; this rule gives the same letter for every answer that starts
with one, and also finds a letter after a lead-in such as "The answer is".
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

STANDALONE_CAPITAL = re.compile(r"(?<![A-Za-z0-9])([A-Z])(?![A-Za-z0-9])")
LEADING_SMALL_LETTER = re.compile(r"^\s*\(?([a-z])(?:[.):]|\s*$)")
OPTION_PREFIX = re.compile(r"^\s*(?:\(?[A-Da-d][.):]\s+)")
NON_WORD = re.compile(r"[^0-9a-z]+")
INFLECTION = "(?:s|es|ed|d|ing)?"  # "spoofed" names "spoof", "dogs" names "dog"
NUMBER_WORDS = {
    word: str(value)
    for value, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen twenty".split()
    )
}


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
    if len(close) == 1 or (
        len(close) == 2
        and close[0] != close[1]
        and difflib.SequenceMatcher(None, wanted, close[0]).ratio()
        > difflib.SequenceMatcher(None, wanted, close[1]).ratio()
    ):
        return names.index(close[0])
    return None


def match_option_letter(answer: str, options: int) -> int | None:
    """The position (0 for A) of the option the answer's first offered letter names, or None (module doc)."""
    offered = {chr(ord("A") + i) for i in range(options)}
    leading = LEADING_SMALL_LETTER.match(answer)
    if leading and leading.group(1).upper() in offered:
        return ord(leading.group(1).upper()) - ord("A")
    for found in STANDALONE_CAPITAL.finditer(answer):
        if found.group(1) in offered:
            return ord(found.group(1)) - ord("A")
    return None
