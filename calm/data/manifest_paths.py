"""Where a manifest's foreign absolute path (a file on the authors' cluster) lies under the user's root.

The rule, tried in order for each path:

1. Anchor: the first of `anchors` (e.g. `ESC-50-master/audio_16k/`) found in the path; the part
   after it, joined to the root, is the file if it exists (`.../ESC-50-master/audio_16k/1-1-A-0.wav`
   with root `~/ESC-50-master/audio_16k` gives `~/ESC-50-master/audio_16k/1-1-A-0.wav`). That part may
   not climb out of the root (`..`).
2. Basename: the one file under the root with the same name; else the one file with the same stem
   and the first of `extensions` (the caller's, in order of preference) that any file has
   (`x.flac` in the manifest, `x.wav` on disk; audio and video files of one clip share a stem, so
   audio and video are looked up with their own lists). Two or more such files are an error naming
   them: guessing would pair a question with another clip's audio.
3. Otherwise the file is missing.

The root is walked once, lazily (only when some path is not found by its anchor); symlinks inside
it are followed, never one that loops.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from calm.data.roots import FolderWalk, resolve_under
from calm.errors import DataError

__all__ = ["PathMapper"]

AMBIGUOUS_FIX = (
    "add the folder part that tells them apart to dataset.anchors (the text just before it in the "
    "manifest's paths, e.g. 'audio_16k/'), or point dataset.root at the one folder that holds the clips"
)


class PathMapper:
    """Maps foreign absolute paths onto files under `root` by the rule in the module docstring."""

    def __init__(self, root: Path, anchors: Sequence[str] = ()) -> None:
        self.root = Path(root)
        self.anchors = tuple(str(a) for a in anchors if str(a))
        self._by_name: dict[str, list[Path]] | None = None
        self._by_stem: dict[str, list[Path]] | None = None
        self._found: dict[tuple[str, tuple[str, ...]], Path | None] = {}

    def locate(self, foreign: str, extensions: Sequence[str] = ()) -> Path | None:
        """The file under the root for `foreign` (same stem, one of `extensions`, when no file has its
        name), or None when there is none; DataError when ambiguous."""
        wanted = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
        if (foreign, wanted) not in self._found:
            self._found[foreign, wanted] = self._locate(foreign, wanted)
        return self._found[foreign, wanted]

    def _locate(self, foreign: str, extensions: tuple[str, ...]) -> Path | None:
        posix = foreign.replace("\\", "/")
        for anchor in self.anchors:
            at = posix.find(anchor)
            if at >= 0:
                path = resolve_under(self.root, posix[at + len(anchor) :].lstrip("/"), f"the manifest path {foreign!r}")
                if path.is_file():
                    return path
                break
        name = posix.rsplit("/", 1)[-1]
        by_name, by_stem = self._index()
        candidates = by_name.get(name, [])
        same_stem = by_stem.get(os.path.splitext(name)[0], [])
        for extension in extensions if not candidates else ():
            candidates = [p for p in same_stem if p.suffix.lower() == extension]
            if candidates:
                break
        if len(candidates) > 1:
            shown = ", ".join(str(p) for p in candidates[:5])
            raise DataError(
                f"the manifest path {foreign!r} matches {len(candidates)} files under {self.root} by its name: {shown}",
                AMBIGUOUS_FIX,
            )
        return candidates[0] if candidates else None

    def _index(self) -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
        """Files under the root by name and by stem (built on first use)."""
        if self._by_name is None or self._by_stem is None:
            self._by_name, self._by_stem = {}, {}
            walk = FolderWalk(self.root, True, "")
            for path in walk.files(self.root):
                self._by_name.setdefault(path.name, []).append(path)
                self._by_stem.setdefault(path.stem, []).append(path)
            walk.warn_loops(f"manifest root {self.root}")
        return self._by_name, self._by_stem
