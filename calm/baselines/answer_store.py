"""Generated answers per clip id in one JSON file under the cache folder, named by the digest of
everything shared by all clips that changes them (dataset, decoding, seed, and the backbone and prompt
as they key activation rows: `calm.extraction.row_inputs.model_key_fields`, weights by content), so a sweep over
shots or estimators answers each clip once and a change of any such input reads another file.

What differs per clip is stored with each answer: the digests of the inputs it was generated from (the
clip's audio content and, for a backbone that reads it, its rendered prompt text, which under the
multiple-choice prompt depends on the clip's label and the class list), computed as the activation cache
computes them (`calm.extraction.row_inputs`). A stored answer whose inputs differ from the clip's current
ones (or, in a store written before inputs were stored, that has none) counts as missing and is
generated again, and the store says how many and why."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from filelock import FileLock

from calm.backbones.base import Backbone
from calm.cache.index import REASONS, RowInputs, stale_reason
from calm.data.prompts import ClipPrompt
from calm.data.table import ClipTable
from calm.extraction.row_inputs import row_inputs
from calm.storage.atomic_write import write_json_atomic
from calm.storage.digests import canonical_json, digest
from calm.storage.file_digests import FileDigests

log = logging.getLogger(__name__)


class AnswerStore:
    """Answers per clip id, keyed by `key_fields` (stored with them, so a file says what made it), each
    with the digests of its clip's inputs. Audio digests are remembered in `digests` (default: the file
    digest store of the cache folder above `folder`)."""

    def __init__(
        self, folder: Path, key_fields: Mapping[str, Any], label: str, digests: FileDigests | None = None
    ) -> None:
        self.path = Path(folder) / f"{label}-{digest(key_fields)[:16]}.json"
        self.key_fields = json.loads(canonical_json(key_fields))  # as stored: plain JSON values
        self.digests = digests if digests is not None else FileDigests(Path(folder).parent)
        self.changed: dict[str, int] = dict.fromkeys(REASONS, 0)  # of the last `current`: answers regenerated, by why

    def _read(self) -> tuple[dict[str, Any], dict[str, Any]]:
        if not self.path.is_file():
            return {}, {}
        stored = json.loads(self.path.read_text())
        return dict(stored["answers"]), dict(stored.get("inputs") or {})

    def inputs(
        self, backbone: Backbone, table: ClipTable, prompt: ClipPrompt, clip_ids: Sequence[str]
    ) -> dict[str, RowInputs]:
        """Each clip's current inputs: its audio content digest and (when the backbone reads it) the
        digest of its rendered prompt text, as the activation cache keys its rows."""
        return row_inputs(backbone, table, prompt, self.digests, list(dict.fromkeys(clip_ids)))

    def current(self, inputs: Mapping[str, RowInputs]) -> dict[str, Any]:
        """The stored answers of the clips in `inputs` that were generated from exactly those inputs. The
        others (stored with other inputs, or with none by an older store) are left out, to be generated
        again; `changed` counts them by reason ('audio', 'prompt', 'unknown') and a log line says so."""
        answers, stored_inputs = self._read()
        fresh: dict[str, Any] = {}
        self.changed = dict.fromkeys(REASONS, 0)
        for clip_id, wanted in inputs.items():
            if clip_id not in answers:
                continue
            reason = stale_reason(_row_inputs(stored_inputs.get(clip_id)), wanted)
            if reason is None:
                fresh[clip_id] = answers[clip_id]
            else:
                self.changed[reason] += 1
        if any(self.changed.values()):
            log.info(
                "regenerating %d stored answers whose inputs changed: audio %d, prompt text %d, unknown %d "
                "(answers of an older store format) [%s]",
                sum(self.changed.values()),
                self.changed["audio"],
                self.changed["prompt"],
                self.changed["unknown"],
                self.path.name,
            )
        return fresh

    def add(self, answers: Mapping[str, Any], inputs: Mapping[str, RowInputs]) -> None:
        """Merge `answers`, each with the inputs it was generated from, into the file (atomically, under a
        lock: parallel jobs may share it)."""
        missing = sorted(set(answers) - set(inputs))
        if missing:
            raise ValueError(f"answers without their inputs: {missing[:5]}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.path) + ".lock"):
            stored, stored_inputs = self._read()
            merged = {**stored, **answers}
            merged_inputs = {**stored_inputs, **{cid: dataclasses.asdict(inputs[cid]) for cid in answers}}
            write_json_atomic(
                self.path,
                {"key": self.key_fields, "answers": merged, "inputs": merged_inputs},
                indent=1,
                sort_keys=True,
            )


def _row_inputs(stored: Any) -> RowInputs | None:
    """Stored inputs as `RowInputs`; None (counted 'unknown') for none or a malformed entry."""
    try:
        return RowInputs(**stored) if isinstance(stored, Mapping) else None
    except (TypeError, ValueError):
        return None
