"""ASVspoof 2019 LA as shipped: CM protocol files `SPEAKER UTT - ATTACK KEY` + `ASVspoof2019_LA_{part}/flac/UTT.flac`.

Two classes, bonafide and spoof. The support pool comes from one partition (train by default)
and the query pool from another (eval by default; dev is the usual choice for quick runs).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from calm.data.dataset import Dataset, LoadedDataset
from calm.data.listed import FolderFiles, ListedClips
from calm.data.roots import resolve_under
from calm.data.table import QUERY_SPLIT, SUPPORT_SPLIT, ClipTable
from calm.data.validate import FirstSeen, check_fields, require_file, require_root
from calm.errors import ConfigError, DataError

ASVSPOOF_URL = "https://datashare.ed.ac.uk/handle/10283/3336"
PROTOCOLS = "ASVspoof2019_LA_cm_protocols"
PARTITIONS = {"train": "train.trn", "dev": "dev.trl", "eval": "eval.trl"}
CLASSES = ("bonafide", "spoof")
LAYOUT = "SPEAKER UTT - ATTACK KEY"
HOW_TO_GET = (
    f"download LA.zip from {ASVSPOOF_URL} (ASVspoof 2019, license ODC-By), unzip it and set "
    "dataset.root=/path/to/the folder holding LA/ (or LA/ itself)"
)


@dataclass(frozen=True)
class Asvspoof2019La(Dataset):
    """`dataset=asvspoof2019_la`: `root` is LA/ or the folder holding it; one partition per pool."""

    description = "ASVspoof 2019 LA: bonafide vs spoof speech; support from train, queries from eval (or dev)"
    layout = (
        "LA/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.{train.trn,dev.trl,eval.trl}.txt + "
        "LA/ASVspoof2019_LA_{train,dev,eval}/flac/UTT.flac"
    )
    source = ASVSPOOF_URL

    name: str
    root: str | None
    support_split: str
    query_split: str

    def load(self, data_dir: Path) -> LoadedDataset:
        root = require_root(self.root, "ASVspoof 2019 LA", HOW_TO_GET)
        table, missing = load_asvspoof2019_la(resolve_la(root), self.support_split, self.query_split)
        return LoadedDataset(table, tuple(missing))


def resolve_la(root: Path) -> Path:
    """The `LA` folder: `root` itself when it holds the protocols, else `root/LA`."""
    return root if (root / PROTOCOLS).is_dir() else root / "LA"


def protocol_file(la: Path, partition: str) -> Path:
    return la / PROTOCOLS / f"ASVspoof2019.LA.cm.{PARTITIONS[partition]}.txt"


def load_asvspoof2019_la(
    la: Path, support_split: str = "train", query_split: str = "eval"
) -> tuple[ClipTable, list[str]]:
    """The clip table (label 0 bonafide, 1 spoof) and the flac paths listed but absent."""
    for key, partition in (("support_split", support_split), ("query_split", query_split)):
        if partition not in PARTITIONS:
            raise ConfigError(f"dataset.{key}={partition!r}", f"choose one of {sorted(PARTITIONS)}")
    if support_split == query_split:
        raise ConfigError(
            f"dataset.support_split and dataset.query_split are both {support_split!r}",
            "draw support and queries from different partitions (e.g. train and eval)",
        )
    seen = FirstSeen()
    listed = ListedClips()
    for partition, split in ((support_split, SUPPORT_SPLIT), (query_split, QUERY_SPLIT)):
        protocol = require_file(protocol_file(la, partition), "ASVspoof 2019 LA protocol file", HOW_TO_GET)
        flac = la / f"ASVspoof2019_LA_{partition}" / "flac"
        if not flac.is_dir():
            raise DataError(f"ASVspoof 2019 LA audio folder {flac} does not exist", HOW_TO_GET)
        present = FolderFiles(flac)
        for line, (speaker, utt, attack, key) in _protocol_lines(protocol):
            seen.add(utt, protocol, line)
            path = resolve_under(la, flac.relative_to(la) / f"{utt}.flac", f"{protocol} line {line}")
            listed.add(
                path if present.has(path) else None,
                path,
                id=utt,
                label=CLASSES.index(key),
                split=split,
                meta={"speaker": speaker, "attack": attack, "partition": partition},
            )
    return ClipTable("asvspoof2019_la", tuple(listed.clips), CLASSES, source=str(la)), listed.missing


def _protocol_lines(protocol: Path) -> list[tuple[int, tuple[str, str, str, str]]]:
    """(line number, (speaker, utterance, attack, key)); a malformed line or unknown key names the line."""
    rows = []
    with open(protocol, encoding="utf-8") as handle:
        for line, text in enumerate(handle, start=1):
            fields = text.split()
            if not fields:
                continue
            check_fields(protocol, line, fields, 5, LAYOUT)
            speaker, utt, _, attack, key = fields
            if key not in CLASSES:
                raise DataError(
                    f"{protocol} line {line}: key is {key!r}, expected bonafide or spoof",
                    f"fix that line; each line is {LAYOUT}",
                )
            rows.append((line, (speaker, utt, attack, key)))
    return rows
