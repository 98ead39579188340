"""Free Spoken Digit Dataset: `recordings/{digit}_{speaker}_{index}.wav`, official test split index 0-4."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from calm.config.assets import assets_dir
from calm.data.dataset import Dataset, LoadedDataset
from calm.data.download import download, unpack_zip
from calm.data.roots import require_folder
from calm.data.table import QUERY_SPLIT, SUPPORT_SPLIT, Clip, ClipTable
from calm.errors import DataError

FSDD_URL = "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/26eb9aa.zip"
FILENAME = re.compile(r"^(?P<digit>\d)_(?P<speaker>[A-Za-z]+)_(?P<index>\d+)\.wav$")
TEST_INDICES = range(5)


@dataclass(frozen=True)
class Fsdd(Dataset):
    """`dataset=fsdd`: the copy at `root`, else the assets copy, else `data_dir`'s (downloaded if asked)."""

    description = "Free Spoken Digit Dataset: 10 spoken digits, 8 kHz; test split = recording index 0-4"
    layout = "recordings/{digit}_{speaker}_{index}.wav"
    source = "https://github.com/Jakobovski/free-spoken-digit-dataset (dataset.download=true fetches it)"

    name: str
    root: str | None
    download: bool
    max_clips_per_class: int | None

    def load(self, data_dir: Path) -> LoadedDataset:
        root = resolve_root(self.root, data_dir, bool(self.download))
        return LoadedDataset(load_fsdd(root, self.max_clips_per_class))


def resolve_root(root: str | Path | None, data_dir: str | Path, download_missing: bool, url: str = FSDD_URL) -> Path:
    """The folder holding `recordings/`: the given root, else the assets copy, else a downloaded one."""
    if root is not None:
        return require_folder(
            Path(root).expanduser(),
            "FSDD root",
            "set dataset.root=/path/to/fsdd (the folder "
            "holding recordings/), or leave it unset to use the assets copy or dataset.download=true",
        )
    for candidate in (assets_dir() / "fsdd", Path(data_dir) / "fsdd"):
        if (candidate / "recordings").is_dir():
            return candidate
    if not download_missing:
        raise DataError(
            f"FSDD not found in {assets_dir() / 'fsdd'} or {Path(data_dir) / 'fsdd'}",
            "set dataset.root=/path/to/fsdd (the folder holding recordings/), or dataset.download=true",
        )
    return fetch_fsdd(Path(data_dir) / "fsdd", url)


def fetch_fsdd(dest: Path, url: str = FSDD_URL) -> Path:
    """Download the FSDD archive from its public home and keep only `recordings/` under `dest`."""
    archive = download(url, dest.parent / "fsdd.zip")
    unpacked = unpack_zip(archive, dest.parent / "fsdd-unpacked")
    found = sorted(unpacked.glob("*/recordings")) + sorted(unpacked.glob("recordings"))
    if not found:
        raise DataError(f"the archive from {url} has no recordings/ folder", "check FSDD_URL or set dataset.root")
    dest.mkdir(parents=True, exist_ok=True)
    shutil.move(str(found[0]), dest / "recordings")
    shutil.rmtree(unpacked)
    archive.unlink()
    return dest


def load_fsdd(root: str | Path, max_clips_per_class: int | None = None) -> ClipTable:
    """Read the clip table; `max_clips_per_class` keeps the lowest indices, round-robin over speakers."""
    recordings = Path(root).expanduser() / "recordings"
    if not recordings.is_dir():
        raise DataError(
            f"FSDD folder {recordings} does not exist",
            "set dataset.root to the folder that holds recordings/ (or dataset.download=true)",
        )
    rows = []
    for path in sorted(recordings.glob("*.wav")):
        match = FILENAME.match(path.name)
        if match is None:
            raise DataError(
                f"unexpected file name {path} in FSDD recordings/",
                "FSDD files are named {digit}_{speaker}_{index}.wav; remove or rename the file",
            )
        rows.append((int(match["digit"]), match["speaker"], int(match["index"]), path))
    if not rows:
        raise DataError(f"no .wav files in {recordings}", "download FSDD again or fix dataset.root")
    if max_clips_per_class is not None:
        rows = _balanced_subset(rows, max_clips_per_class)
    clips = tuple(
        Clip(
            id=path.stem,
            audio_path=path,
            label=digit,
            split=QUERY_SPLIT if index in TEST_INDICES else SUPPORT_SPLIT,
            meta={"speaker": speaker, "index": str(index)},
        )
        for digit, speaker, index, path in rows
    )
    return ClipTable("fsdd", clips, tuple(str(d) for d in range(10)), source=str(recordings))


def _balanced_subset(rows: list, per_class: int) -> list:
    """Per digit, the lowest recording indices first, alternating speakers, so test clips stay in."""
    kept = []
    for digit in sorted({r[0] for r in rows}):
        ordered = sorted((r for r in rows if r[0] == digit), key=lambda r: (r[2], r[1]))
        kept.extend(ordered[:per_class])
    return sorted(kept, key=lambda r: r[3].name)
