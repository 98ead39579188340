"""The row index of a cache folder (``index.tsv``): which row holds which clip, what it was computed from,
and how.

A row depends on more than the folder's key: on the bytes of the clip's audio (and video) file and,
for a backbone that reads the prompt, on the exact prompt text rendered for that clip (a `paper`
prompt draws its options from the dataset's class list, which no key holds). Each index line
therefore records those inputs, and a row whose inputs differ from the ones wanted now is stale.

Each line also records facts about how the row was computed that are read, never matched: the number
of clips in its forward pass (batch composition moves fp16 rows by up to one float16 step, so a row is
not recomputed for it) and its clip's duration (a clip beyond the model's window was truncated, and a
job under `on_long_clip=error` must refuse its cached row as it refuses the clip).

Line format 3 (current): ``<clip_id>\\t<row>\\t<audio>\\t<prompt>\\t<batch>\\t<seconds>\\n``, where ``<row>`` is
the line's position (0, 1, ...), ``<audio>`` the digest of the clip's media files, ``<prompt>`` the
digest of its prompt text or ``-`` where the backbone reads no prompt text, ``<batch>`` the clips in
the forward pass and ``<seconds>`` the clip's duration (``-\\t-`` where not recorded). Lines with
``-\\t-`` inputs (rows written without them) and format 1's ``<clip_id>\\t<row>\\n`` lines are rows of unknown
provenance:
they are served to callers that do not say which inputs they want, and recomputed by extraction.
Format 2's lines (``<clip_id>\\t<row>\\t<audio>\\t<prompt>``) have inputs but no facts. A clip id may
appear on several lines: the newest line wins (a recomputed row is appended, never written in place).
"""

from __future__ import annotations

from dataclasses import dataclass

from calm.storage.digests import text_sha256

FORMAT_VERSION = 3
READABLE_FORMATS = (1, 2, 3)
REASONS = ("audio", "prompt", "unknown")  # why a cached row is recomputed, as counted in results.json
MISSING = "missing"
_NONE = "-"
_DIGEST_CHARS = 32  # 128 bits of SHA-256


def text_digest(text: str) -> str:
    """The digest stored for a rendered prompt text."""
    return text_sha256(text, _DIGEST_CHARS)


def media_digest(file_shas: list[str]) -> str:
    """The digest stored for a clip's media: its files' SHA-256s in order (one file: that SHA-256, cut)."""
    joined = file_shas[0] if len(file_shas) == 1 else text_sha256("\n".join(file_shas))
    return joined[:_DIGEST_CHARS]


@dataclass(frozen=True)
class RowInputs:
    """What one row is computed from: the digest of the clip's media files and of its prompt text
    (empty when the backbone does not read the prompt text)."""

    audio: str
    prompt: str = ""

    def __post_init__(self) -> None:
        for value in (self.audio, self.prompt):
            if any(c in value for c in "\t\n\r") or value == _NONE:
                raise ValueError(f"row input digest {value!r} may not be '-' or hold tabs or line breaks")
        if not self.audio:
            raise ValueError("a row's audio digest may not be empty")


@dataclass(frozen=True)
class RowFacts:
    """How one row was computed, recorded with it and never matched: the clips in its forward pass and
    its clip's duration in seconds (longer than the model's window: the row saw the clip truncated)."""

    batch_size: int
    seconds: float

    def __post_init__(self) -> None:
        if self.batch_size < 1 or not self.seconds >= 0:
            raise ValueError(f"row facts need a positive batch size and a duration, got {self}")


def format_line(clip_id: str, row: int, inputs: RowInputs | None, facts: RowFacts | None = None) -> str:
    """One format-3 index line (with its newline)."""
    fields = [_NONE, _NONE] if inputs is None else [inputs.audio, inputs.prompt or _NONE]
    fields += [_NONE, _NONE] if facts is None else [str(facts.batch_size), repr(float(facts.seconds))]
    return "\t".join([clip_id, str(row), *fields]) + "\n"


def parse_line(line: str, expected_row: int) -> tuple[str, RowInputs | None, RowFacts | None]:
    """The clip id, inputs and facts of an index line (format 1, 2 or 3); ValueError when it is not one."""
    parts = line.split("\t")
    if len(parts) not in (2, 4, 6) or not parts[0] or parts[1] != str(expected_row):
        raise ValueError(
            f"index line {expected_row + 1} is {line!r}, expected "
            f"'<clip_id>\\t{expected_row}\\t<audio>\\t<prompt>\\t<batch>\\t<seconds>'"
        )
    inputs = None
    if len(parts) > 2 and parts[2] != _NONE:
        inputs = RowInputs(parts[2], "" if parts[3] == _NONE else parts[3])
    facts = None
    if len(parts) == 6 and parts[4] != _NONE:
        facts = RowFacts(int(parts[4]), float(parts[5]))
    return parts[0], inputs, facts


def stale_reason(stored: RowInputs | None, wanted: RowInputs) -> str | None:
    """None when a stored row was computed from `wanted`, else why not: 'unknown' (no inputs stored),
    'audio' (the media changed; checked first) or 'prompt' (the prompt text changed)."""
    if stored is None:
        return "unknown"
    if stored.audio != wanted.audio:
        return "audio"
    if stored.prompt != wanted.prompt:
        return "prompt"
    return None
