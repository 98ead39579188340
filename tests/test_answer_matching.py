import pytest

from calm.baselines.answer_matching import match_answer, normalise

CLASSES = ["dog", "rain", "siren", "clock_tick", "crying_baby", "door_wood_knock"]


@pytest.mark.parametrize(("answer", "expected"), [
    ("dog", 0),                                   # exact
    ("Clock tick.", 3),                           # normalised: case, underscore, punctuation
    ("B. rain", 1),                               # option letter in front
    ("It sounds like a crying baby.", 4),         # one class contained in a sentence
    ("door wood knok", 5),                        # fuzzy
    ("a cat meowing", None),                      # nothing
    ("dog or rain", None),                        # two classes: ambiguous, unmatched
])
def test_answers_map_to_classes(answer: str, expected: int | None) -> None:
    assert match_answer(answer, CLASSES) == expected


def test_the_longer_name_wins_when_it_contains_the_shorter() -> None:
    assert match_answer("a wood door knock", ["knock", "wood door knock"]) == 1


def test_normalise() -> None:
    assert normalise("  (C) Door_Wood-Knock!! ") == "door wood knock"


def test_spoofing_answers() -> None:
    assert match_answer("The audio is spoofed", ["bonafide", "spoof"]) == 1
    assert match_answer("it is bonafide, not spoofed", ["bonafide", "spoof"]) is None
    assert match_answer("spoof", ["bonafide", "spoof"]) == 1
    assert match_answer("Bonafide.", ["bonafide", "spoof"]) == 0
