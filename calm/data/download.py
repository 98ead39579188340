"""Downloads of public datasets, with a progress bar, checksum and a clear error when offline."""

from __future__ import annotations

import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from calm.errors import DataError
from calm.storage.digests import chunks_sha256

CHUNK = 1 << 20


def download(url: str, dest: Path, sha256: str | None = None, timeout: float = 60.0) -> Path:
    """Fetch `url` to `dest` atomically (temp file, then rename); verify `sha256` when given."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with (
                tempfile.NamedTemporaryFile(dir=dest.parent, delete=False, suffix=".part") as tmp,
                Progress(
                    TextColumn(f"[bold]{dest.name}"),
                    BarColumn(),
                    DownloadColumn(),
                    TransferSpeedColumn(),
                    transient=True,
                ) as progress,
            ):
                task = progress.add_task("download", total=total)
                got = chunks_sha256(_copied(response, tmp, lambda n: progress.advance(task, n)))
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        raise DataError(
            f"could not download {url}: {err}",
            f"check the network, or fetch the file by hand and place it at {dest}",
        ) from err
    if sha256 and got != sha256:
        Path(tmp.name).unlink(missing_ok=True)
        raise DataError(
            f"checksum mismatch for {url}: got {got}, expected {sha256}",
            "retry the download; if it persists the archive changed upstream",
        )
    shutil.move(tmp.name, dest)
    return dest


def _copied(response: Any, out: IO[bytes], advance: Callable[[int], object]) -> Iterator[bytes]:
    """The response's chunks, each written to `out` (and counted) as it is read."""
    while chunk := response.read(CHUNK):
        out.write(chunk)
        advance(len(chunk))
        yield chunk


def unpack_zip(archive: Path, dest: Path) -> Path:
    """Unpack a zip archive into `dest`, refusing members that would escape it."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                target = (dest / member).resolve()
                if not target.is_relative_to(dest.resolve()):
                    raise DataError(f"archive {archive} has an unsafe member {member!r}", "download it again")
            zf.extractall(dest)
    except zipfile.BadZipFile as err:
        raise DataError(f"{archive} is not a valid zip archive", "delete it and download again") from err
    return dest
