"""The datasets calm knows are the files of configs/dataset: each names its class in `_target_`.

`read_dataset` builds the class a `dataset` config names (through `calm.config.builder.build`, as
every configurable object is built) and reads its clip table; `dataset_classes` lists the
datasets for `python -m calm.data ls`, importing each class only when asked, so `ls` stays quick
and only the `hf` dataset ever imports the `datasets` library.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from calm.config.builder import build, group_targets, target_class
from calm.data.dataset import Dataset, LoadedDataset
from calm.data.table import ClipTable

log = logging.getLogger(__name__)

__all__ = [
    "LoadedDataset",
    "build_dataset",
    "dataset_classes",
    "dataset_names",
    "load_dataset",
    "read_dataset",
    "warn_missing",
]


def dataset_names() -> list[str]:
    """The `name` of every file in configs/dataset (what `dataset=NAME` and `dataset.name` accept)."""
    return list(group_targets("dataset"))


def dataset_classes() -> Iterator[tuple[str, type[Dataset]]]:
    """(name, class) of every file in configs/dataset, each class imported as it is reached."""
    for name, target in group_targets("dataset").items():
        yield name, target_class({"_target_": target, "name": name}, "dataset", Dataset)


def build_dataset(cfg: Mapping[str, Any]) -> Dataset:
    """The dataset object a `dataset` config describes; its name must be a configs/dataset file's."""
    return build(cfg, "dataset", base=Dataset, named=True)


def read_dataset(cfg: Mapping[str, Any], data_dir: str | Path) -> LoadedDataset:
    """Read a dataset's clip table and missing-clip report (metadata only; no audio decoded)."""
    return build_dataset(cfg).load(Path(data_dir))


def warn_missing(cfg: Mapping[str, Any], loaded: LoadedDataset) -> None:
    """One warning counting the clips listed in the metadata but absent on disk (left out of the table)."""
    if loaded.missing:
        shown = ", ".join(loaded.missing[:3])
        log.warning(
            "%s: %d clips listed in the metadata are missing on disk and were left out (%s%s); "
            "`python -m calm.data validate %s %s` lists them all",
            cfg.get("name"),
            len(loaded.missing),
            shown,
            ", ..." if len(loaded.missing) > 3 else "",
            cfg.get("name"),
            cfg.get("root") or "ROOT",
        )


def load_dataset(cfg: Mapping[str, Any], data_dir: str | Path) -> ClipTable:
    """The clip table; clips listed but missing on disk are left out with a warning that counts them."""
    loaded = read_dataset(cfg, data_dir)
    warn_missing(cfg, loaded)
    return loaded.table
