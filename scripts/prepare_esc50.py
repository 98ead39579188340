"""Download the official ESC-50 archive, verify it and unpack it, so `dataset=esc50` can read it.

    python scripts/prepare_esc50.py                      # into data/ESC-50-master
    python scripts/prepare_esc50.py --dest /big/disk     # elsewhere: then dataset.root=/big/disk
    python scripts/prepare_esc50.py --archive master.zip # a copy downloaded by hand (offline machines)

The archive must be a sound zip holding 2,000 wavs under ESC-50-master/audio/ and
ESC-50-master/meta/esc50.csv with the official header; `--sha256` also pins its checksum.
"""

from __future__ import annotations

import argparse
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

from calm.data.download import download, unpack_zip
from calm.data.esc50 import CLIPS, ESC50_URL, FOLDER, HEADER
from calm.errors import CalmError, DataError
from calm.storage.file_digests import sha256_file

META = f"{FOLDER}/meta/esc50.csv"


def verify_archive(archive: Path, sha256: str | None = None) -> None:
    """Zip integrity (every member's CRC), the 2,000 wavs and the metadata header; DataError otherwise."""
    if sha256 and sha256_file(archive) != sha256:
        raise DataError(f"checksum mismatch for {archive}: expected {sha256}", "download the archive again")
    try:
        with zipfile.ZipFile(archive) as zf:
            corrupt = zf.testzip()
            names = zf.namelist()
            header = zf.read(META).decode("utf-8").splitlines()[0] if META in names else None
    except zipfile.BadZipFile as err:
        raise DataError(f"{archive} is not a valid zip archive", "delete it and download it again") from err
    if corrupt is not None:
        raise DataError(f"{archive} is corrupt: {corrupt} fails its CRC check", "delete it and download it again")
    wavs = [n for n in names if n.startswith(f"{FOLDER}/audio/") and n.endswith(".wav")]
    if len(wavs) != CLIPS:
        raise DataError(
            f"{archive} holds {len(wavs)} wav files under {FOLDER}/audio/, expected {CLIPS}",
            f"download the official archive ({ESC50_URL}) again",
        )
    if header is None:
        raise DataError(f"{archive} has no {META}", f"download the official archive ({ESC50_URL}) again")
    if tuple(c.strip() for c in header.split(",")) != HEADER:
        raise DataError(
            f"{archive}: {META} line 1 is {header!r}, expected {','.join(HEADER)!r}",
            f"download the official archive ({ESC50_URL}) again",
        )


def is_prepared(target: Path) -> bool:
    audio = target / "audio"
    return (target / "meta" / "esc50.csv").is_file() and audio.is_dir() and len(list(audio.glob("*.wav"))) == CLIPS


def prepare(dest: Path, url: str, sha256: str | None, archive: Path | None, force: bool) -> Path:
    """The unpacked `ESC-50-master` folder under `dest` (left as is when already complete, unless forced)."""
    target = dest / FOLDER
    if is_prepared(target) and not force:
        print(f"ESC-50 is already in {target}")
        return target
    downloaded = archive is None
    if downloaded:
        archive = dest / f"{FOLDER}.zip"
        try:
            download(url, archive, sha256)
        except DataError as err:
            raise DataError(
                err.problem,
                f"download {url} by hand and run `python scripts/prepare_esc50.py --archive PATH --dest {dest}`, "
                f"or unzip it yourself so that {target / 'meta' / 'esc50.csv'} exists",
            ) from err
    verify_archive(archive, None if downloaded else sha256)
    unpack_zip(archive, dest)
    if downloaded:
        archive.unlink()
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=Path("data"), help="folder to unpack into (default: data/)")
    parser.add_argument("--url", default=ESC50_URL, help="archive URL (default: the dataset's GitHub archive)")
    parser.add_argument("--sha256", help="expected SHA-256 of the archive")
    parser.add_argument("--archive", type=Path, help="use this already downloaded archive instead of downloading")
    parser.add_argument("--force", action="store_true", help="unpack again even if the folder looks complete")
    args = parser.parse_args(argv)
    try:
        target = prepare(args.dest, args.url, args.sha256, args.archive, args.force)
    except CalmError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"ESC-50 ready in {target}\n  python run.py dataset=esc50 dataset.root={target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
