"""`prompt=manifest`: each row's own question from its manifest entry, verbatim, as the authors asked it.

The reference code sent `"{question} Answer with the class name."` as the user turn of the backbone's
chat template (audio first), so `layout` and `instruction` default to that; the backbone applies its
chat template as for every prompt. The text differs per row (each entry has its own option order),
so the cache keys each row by its own text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from calm.data.manifest import options_of, question_text
from calm.data.table import Clip, ClipTable
from calm.errors import ConfigError

__all__ = ["ManifestPrompt"]

_TEMPLATE_TAG = "calm.prompt.manifest.v1"


@dataclass(frozen=True)
class ManifestPrompt:
    """The entry's question placed by `layout` (`{question}` and `{instruction}`)."""

    name: str = "manifest"
    layout: str = "{question} {instruction}"
    instruction: str = "Answer with the class name."
    per_label_questions: ClassVar[bool] = False  # the manifests already hold one question per label

    def __post_init__(self) -> None:
        if "{question}" not in self.layout:
            raise ConfigError(
                f"prompt.layout={self.layout!r} does not place {{question}}",
                "set prompt.layout to e.g. '{question} {instruction}' (the authors' text)",
            )
        try:
            self.layout.format(question="", instruction="")
        except (KeyError, IndexError, ValueError) as err:
            raise ConfigError(
                f"prompt.layout={self.layout!r} is not a valid template ({err})",
                "use only {question} and {instruction}; write literal braces as {{ and }}",
            ) from err

    def text_for(self, clip: Clip, table: ClipTable, label: int | None = None) -> str:
        """The row's question in `layout`; `label` is accepted for a uniform call and ignored."""
        return self.layout.format(question=question_text(clip), instruction=self.instruction).strip()

    def option_names(self, clip: Clip, table: ClipTable, label: int | None = None) -> list[str]:
        """The entry's options, in letter order, as its manifest lists them."""
        return options_of(clip)

    def option_ids(self, clip: Clip, table: ClipTable, label: int | None = None) -> list[int]:
        """The entry's options as class ids, in letter order (an option that names no class of the table
        is left out; an entry without options, as ASVspoof's, offers every class). What multiple-choice
        pseudo-labelling (method=pseudo_label, the replay's `regenerate`) matches answers to."""
        names = options_of(clip)
        if not names:
            return list(range(len(table.class_names)))
        index = {name: k for k, name in enumerate(table.class_names)}
        return [index[name] for name in names if name in index]

    def key_fields(self) -> dict[str, Any]:
        """What changes the text besides the row's own question (which keys each row by its digest)."""
        return {"name": self.name, "template": _TEMPLATE_TAG, "layout": self.layout, "instruction": self.instruction}
