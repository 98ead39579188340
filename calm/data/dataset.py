"""What a dataset is to calm: an object built from `configs/dataset/<name>.yaml` whose `load` reads
the clip table from the dataset's own layout.

The YAML's `_target_` names a `Dataset` subclass and its other keys are the subclass's fields, so
every default lives in the YAML; `description`, `layout` and `source` are what
`python -m calm.data ls` prints. Loading reads metadata only: no audio is decoded, no model loaded.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from calm.data.table import ClipTable
from calm.storage.atomic_write import write_lines_atomic

__all__ = ["Dataset", "LoadedDataset"]


@dataclass(frozen=True)
class LoadedDataset:
    """A clip table and the clips its metadata lists but the disk lacks (left out of the table)."""

    table: ClipTable
    missing: tuple[str, ...] = ()

    def write_missing(self, path: Path) -> None:
        """List the missing clips in a text file, one per line, so leaving them out is never silent."""
        if self.missing:
            write_lines_atomic(path, self.missing)


class Dataset(ABC):
    """Base of the dataset classes; subclasses are frozen dataclasses whose fields are the YAML keys.

    `name` (a field of every subclass) names the dataset in episode seeds, cache ids and messages.
    `data_dir` (`paths.data_dir`) is where a dataset looks, or downloads, when `root` is unset.
    """

    description: ClassVar[str]
    layout: ClassVar[str]
    source: ClassVar[str]
    name: str

    @abstractmethod
    def load(self, data_dir: Path) -> LoadedDataset:
        """The clip table and the clips listed but missing on disk."""
