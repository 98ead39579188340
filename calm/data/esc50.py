"""ESC-50 as its authors ship it: `ESC-50-master/audio/*.wav` + `meta/esc50.csv`, 5 folds of 400 clips.

The test fold (default 1) is the query pool and the other folds are the support pool, so a
support clip never comes from the test fold.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from calm.data.dataset import Dataset, LoadedDataset
from calm.data.listed import FolderFiles, ListedClips
from calm.data.roots import require_folder, resolve_under
from calm.data.table import QUERY_SPLIT, SUPPORT_SPLIT, ClipTable
from calm.data.validate import FirstSeen, csv_rows, parse_int, require_file
from calm.errors import ConfigError, DataError

ESC50_URL = "https://github.com/karoldvl/ESC-50/archive/master.zip"
FOLDER = "ESC-50-master"
HEADER = ("filename", "fold", "target", "category", "esc10", "src_file", "take")
CLIPS = 2000
HOW_TO_GET = (
    f"run `python scripts/prepare_esc50.py` (downloads {ESC50_URL} and unpacks it into data/), "
    f"or unzip that archive yourself and set dataset.root=/path/to/{FOLDER} (or the folder holding it)"
)


@dataclass(frozen=True)
class Esc50(Dataset):
    """`dataset=esc50`: `root` (or `data_dir`'s copy), one fold as the query pool, the others as support."""

    description = "ESC-50: 50 environmental sound classes x 40 clips, 5 folds; test fold 1, support from the others"
    layout = "ESC-50-master/audio/*.wav + ESC-50-master/meta/esc50.csv"
    source = "https://github.com/karoldvl/ESC-50 (python scripts/prepare_esc50.py)"

    name: str
    root: str | None
    test_fold: int
    esc10: bool

    def load(self, data_dir: Path) -> LoadedDataset:
        table, missing = load_esc50(resolve_root(self.root, data_dir), int(self.test_fold), bool(self.esc10))
        return LoadedDataset(table, tuple(missing))


def resolve_root(root: str | Path | None, data_dir: str | Path) -> Path:
    """The `ESC-50-master` folder: `root` itself or its `ESC-50-master` child; unset: `data_dir`'s copy.

    `data_dir` is where `scripts/prepare_esc50.py` unpacks by default; nothing is downloaded here.
    """
    if root is None:
        candidate = Path(data_dir) / FOLDER
        if not candidate.is_dir():
            raise DataError(f"ESC-50 not found: dataset.root is not set and {candidate} does not exist", HOW_TO_GET)
        return candidate
    root = require_folder(Path(root).expanduser(), "ESC-50 root", HOW_TO_GET)
    return root / FOLDER if (root / FOLDER).is_dir() else root


def load_esc50(base: Path, test_fold: int = 1, esc10: bool = False) -> tuple[ClipTable, list[str]]:
    """The clip table and the wav paths listed in the metadata but absent (those are left out).

    Labels follow the `target` ids (class names are the categories); `esc10=True` keeps the
    ESC-10 subset. The fold, take and source file stay in each clip's meta.
    """
    meta = require_file(base / "meta" / "esc50.csv", "ESC-50 metadata", HOW_TO_GET)
    audio = base / "audio"
    if not audio.is_dir():
        raise DataError(f"ESC-50 audio folder {audio} does not exist", HOW_TO_GET)
    _, rows = csv_rows(meta, [HEADER], "use the meta/esc50.csv shipped in the official archive")
    categories: dict[int, str] = {}
    seen = FirstSeen()
    kept = []
    for line, (filename, fold, target, category, is_esc10, src_file, take) in rows:
        target_id = parse_int(meta, line, target, "target")
        if categories.setdefault(target_id, category) != category:
            raise DataError(
                f"{meta} line {line}: target {target_id} is {category!r} here but {categories[target_id]!r} earlier",
                "use the meta/esc50.csv shipped in the official archive",
            )
        seen.add(Path(filename).stem, meta, line)
        if esc10 and is_esc10 != "True":
            continue
        path = resolve_under(base, Path("audio") / filename, f"{meta} line {line}")
        kept.append((path, parse_int(meta, line, fold, "fold"), target_id, category, is_esc10, src_file, take))
    folds = sorted({row[1] for row in kept})
    if test_fold not in folds:
        raise ConfigError(f"dataset.test_fold={test_fold} is not a fold of {meta}", f"choose one of {folds}")
    targets = sorted({row[2] for row in kept})
    label_of = {t: i for i, t in enumerate(targets)}
    present, listed = FolderFiles(audio), ListedClips()
    for path, fold, target_id, category, is_esc10, src_file, take in kept:
        listed.add(
            path if present.has(path) else None,
            path,
            id=path.stem,
            label=label_of[target_id],
            split=QUERY_SPLIT if fold == test_fold else SUPPORT_SPLIT,
            meta={"fold": str(fold), "category": category, "esc10": is_esc10, "src_file": src_file, "take": take},
        )
    names = tuple(categories[t] for t in targets)
    return ClipTable("esc50", tuple(listed.clips), names, source=str(base)), listed.missing
