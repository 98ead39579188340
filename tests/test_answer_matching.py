import pytest

from calm.baselines.answer_matching import match_answer, match_option_letter, normalise

CLASSES = ["dog", "rain", "siren", "clock_tick", "crying_baby", "door_wood_knock"]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("dog", 0),  # exact
        ("Clock tick.", 3),  # normalised: case, underscore, punctuation
        ("B. rain", 1),  # option letter in front
        ("It sounds like a crying baby.", 4),  # one class contained in a sentence
        ("door wood knok", 5),  # fuzzy
        ("a cat meowing", None),  # nothing
        ("dog or rain", None),  # two classes: ambiguous, unmatched
    ],
)
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


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("B", 1),  # a bare letter
        ("The answer is C. dog", 2),  # the first stand-alone capital that is an offered letter
        ("b) rain", 1),  # a small letter only as the answer's first character, before ")"
        ("(d)", 3),
        ("none", None),  # no stand-alone letter
        ("A and B", 0),  # the first one found
        ("it is a dog", None),  # a small "a" inside the answer is the article, not option A
        ("I think D", 3),  # "I" is not offered when there are 4 options (A-D)
        ("E", None),  # not offered
        ("CD", None),  # letters touching each other are a word
    ],
)
def test_option_letters_name_options(answer: str, expected: int | None) -> None:
    assert match_option_letter(answer, 4) == expected


def test_more_options_offer_more_letters() -> None:
    assert match_option_letter("E", 5) == 4 and match_option_letter("I think so", 9) == 8
