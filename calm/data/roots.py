"""Where a dataset's files may come from: its root folder, and nothing outside it unless the user asks.

Metadata files name clips: ASVspoof's protocol lines, ESC-50's `filename` column, VGGSound's and
AudioSet's YouTube ids, a folder dataset's CSV. A line such as `S1 ../../../../outside/LA_T_0 - A01
spoof` used to load a file outside the dataset (the presence check compared file names only), and a
mistyped CSV path revealed, through its decode error, whether some other file exists. Every such
path now goes through `resolve_under`, which normalises it as written (`..` and absolute paths) and
refuses one that leaves the root. Symlinks inside a dataset folder are the user's own arrangement (a
clips folder on another disk) and are followed there.

A folder dataset has no metadata: its directory tree is the class list, so a symlink is a class. A
root-level link to `.` used to become a class holding a copy of every other class's files.
`FolderWalk` follows no link that loops back into a folder it is inside, and none that leaves the
root unless `allow_outside_root` is set; a folder CSV's rows go through the same rule
(`FolderWalk.real_file`), so a row cannot reach outside the root, or name one file twice, by a link.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

from calm.errors import DataError

log = logging.getLogger(__name__)

__all__ = ["FolderWalk", "require_folder", "resolve_under"]

STAY_INSIDE = (
    "fix that line: paths in a dataset's metadata are relative to the dataset root and may not "
    "leave it (no absolute path, no `..` above the root); keep the dataset's official layout"
)


def require_folder(path: Path, what: str, how_to_get: str) -> Path:
    """`path` if it is a folder; a file there, or nothing, is a DataError saying which."""
    if path.is_file():
        raise DataError(f"{what} {path} is a file, not a folder", how_to_get)
    if not path.is_dir():
        raise DataError(f"{what} {path} does not exist", how_to_get)
    return path


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def resolve_under(root: Path, relative: str | Path, where: str, fix: str = STAY_INSIDE) -> Path:
    """`root / relative` with `.` and `..` resolved as written; a DataError naming `where` (a file and
    line) when the result is not under `root` (an absolute `relative` counts from the file system's
    root, so it passes only when it lies under `root`)."""
    joined = os.path.normpath(os.path.join(root, os.path.expanduser(relative)))
    if not _inside(os.path.abspath(joined), os.path.abspath(root)):
        raise DataError(f"{where}: the path {str(relative)!r} leads to {joined}, outside the dataset root {root}", fix)
    return Path(joined)


class FolderWalk:
    """The files under a folder dataset's root, following only symlinks that stay in the root (or
    leave it, with `allow_outside`) and never one that loops back into a folder it is inside."""

    def __init__(self, root: Path, allow_outside: bool, fix: str) -> None:
        self.root = root
        self.real_root = os.path.realpath(root)
        self.allow_outside = allow_outside
        self.fix = fix
        self.looped: list[str] = []

    def folders(self) -> Iterator[Path]:
        """The root's sub-folders (class folders; hidden ones skipped), sorted by name."""
        for path, _, is_dir in self._entries(self.root, self.real_root, (self.real_root,)):
            if is_dir and not path.name.startswith("."):
                yield path

    def files(self, folder: Path) -> Iterator[Path]:
        """Every file under `folder`, depth first in name order."""
        real = os.path.realpath(folder)
        yield from self._files(folder, real, (self.real_root, real))

    def warn_loops(self, name: str) -> None:
        """One warning naming the links that were not followed, so leaving them out is never silent."""
        if self.looped:
            shown = ", ".join(self.looped[:5]) + (f" and {len(self.looped) - 5} more" if len(self.looped) > 5 else "")
            log.warning(
                "%s: %d symlink(s) under %s point back into a folder that holds them (the walk loops) "
                "and were not followed: %s",
                name,
                len(self.looped),
                self.root,
                shown,
            )

    def _files(self, folder: Path, real: str, chain: tuple[str, ...]) -> Iterator[Path]:
        for path, target, is_dir in self._entries(folder, real, chain):
            if is_dir:
                yield from self._files(path, target, (*chain, target))
            elif os.path.isfile(target):
                yield path

    def real_file(self, path: Path, where: str) -> str:
        """The real path of a file a metadata line names (`path`, normalised as written), its links followed
        by the walk's rule: one that loops back into a folder holding it, or leaves the root (unless
        `allow_outside`), is a DataError naming `where`. A path already outside the root is the caller's
        opt-in and is only resolved."""
        relative = os.path.relpath(path, self.root)
        if relative == os.curdir or relative.startswith(os.pardir):
            return os.path.realpath(path)
        real = self.real_root
        for part in Path(relative).parts:
            step = os.path.join(real, part)
            if not os.path.islink(step):
                real = step
                continue
            target = os.path.realpath(step)
            if not os.path.exists(target):
                return target  # a broken link holds no file: the caller reports it missing
            if self._follows(Path(step), target, real, (real,), where):
                real = target
        return real

    def _follows(self, link: Path, target: str, real_parent: str, chain: tuple[str, ...], where: str = "") -> bool:
        """The rule for a symlink `link` (in the folder whose real path is `real_parent`, below the real
        folders `chain`) to the existing `target`: False for a folder link that loops back into a folder
        holding it (recorded for `warn_loops`, or a DataError naming `where` when a metadata line goes
        through it); a DataError for a link out of the root unless `allow_outside`; True otherwise."""
        is_dir = os.path.isdir(target)
        if is_dir and (target in chain or _inside(real_parent, target)):
            if where:
                raise DataError(
                    f"{where}: the symlink {link} points back into a folder that holds it ({target}), "
                    "so its files are reachable under endless paths",
                    "list the file by its real path, or remove the link",
                )
            self.looped.append(str(link))
            return False
        if not self.allow_outside and not _inside(target, self.real_root):
            raise DataError(
                f"{where + ': ' if where else ''}the symlink {link} leads to {target}, "
                f"{'a folder' if is_dir else 'a file'} outside the dataset root {self.root}",
                self.fix,
            )
        return True

    def _entries(self, folder: Path, real: str, chain: tuple[str, ...]) -> Iterator[tuple[Path, str, bool]]:
        """(path, real path, is a folder) of each entry of `folder` that may be followed."""
        with os.scandir(folder) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
        for entry in entries:
            path = Path(folder) / entry.name
            if not entry.is_symlink():
                yield path, os.path.join(real, entry.name), entry.is_dir()
                continue
            target = os.path.realpath(entry.path)
            if not os.path.exists(target):
                continue  # a broken link holds no file
            if self._follows(path, target, real, chain):
                yield path, target, os.path.isdir(target)
