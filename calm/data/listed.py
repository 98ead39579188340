"""A dataset listing's clips, split into those whose audio file is there and those absent: a loader keeps the
first and reports the second (`LoadedDataset.missing`), so a missing clip is never fatal."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from calm.data.table import Clip


class FolderFiles:
    """The file names in `folder`, read once: a listing of thousands of clips is checked without a stat per
    clip; a path outside `folder` (a listing may name one) is checked on disk."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.names = {entry.name for entry in os.scandir(folder)}

    def has(self, path: Path) -> bool:
        return path.name in self.names if path.parent == self.folder else path.is_file()


class ListedClips:
    """The clips found so far (`clips`) and the expected paths of those listed but not found (`missing`)."""

    def __init__(self) -> None:
        self.clips: list[Clip] = []
        self.missing: list[str] = []

    def add(self, found: Path | None, expected: Path, **fields: Any) -> None:
        """The clip whose audio is `found` (None: not there, so `expected` is reported missing), with the
        other Clip `fields`."""
        if found is None:
            self.missing.append(str(expected))
        else:
            self.clips.append(Clip(audio_path=found, **fields))
