"""The text each clip is paired with (DESIGN.md section 5)."""

from __future__ import annotations

from dataclasses import dataclass

from calm.data.table import Clip, ClipTable


@dataclass(frozen=True)
class Prompt:
    """`clean`: one fixed question for every clip, no options (the default)."""

    name: str = "clean"
    question: str = "What sound is this?"
    instruction: str = "Answer with the class name."

    def text_for(self, clip: Clip, table: ClipTable) -> str:
        return f"{self.question} {self.instruction}".strip()

    def key_fields(self) -> dict:
        """What about the prompt changes the features (goes into the cache key)."""
        return {"name": self.name, "question": self.question, "instruction": self.instruction}
