"""What every results row of a job must say about its support sets, measured on the drawn episodes:
unequal per-class counts (protocol=paper's support_draw=all or at_most), and support or val rows whose
audio file is a test clip's (the authors' manifests, dataset=manifest, list some clips in both). The pipeline adds
these fields to every row
and these lines to the notes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from calm.data.manifest_overlap import LeakShare, leak_shares
from calm.data.table import QUERY_SPLIT, RELIABILITY_SPLIT, SUPPORT_SPLIT, ClipTable
from calm.protocols.episodes import Episode


def support_marks(
    episodes: list[Episode], shots: int, count_causes: Sequence[str] = ()
) -> tuple[dict[str, Any], list[str]]:
    """(fields for every results row, notes for results.json); both empty for equal ``shots``-per-class
    support sets, so clean results are unchanged. ``count_causes``: the job's
    settings that can make per-class counts differ from ``shots``, named in the note."""
    fields: dict[str, Any] = {}
    notes: list[str] = []
    counts = np.concatenate([episode.support_counts for episode in episodes]) if episodes else np.zeros(0)
    if counts.size and (counts != shots).any():
        low, high = int(counts.min()), int(counts.max())
        fields.update(support_per_class_min=low, support_per_class_max=high)
        because = f" ({', '.join(count_causes)})" if count_causes else ""
        notes.append(f"support sets hold {low} to {high} clips per class{because}, not shots={shots}")
    return fields, notes


def shared_file_marks(table: ClipTable, episodes: list[Episode]) -> tuple[dict[str, Any], list[str]]:
    """(fields for every results row, notes) when rows of the support sets drawn, or of the val split,
    are the same audio file as a test row (the authors' manifests list some clips in both):
    ``leaks_test_clips``, ``support_test_clip_share`` (share of drawn support rows, a row drawn twice
    counting twice) and ``val_test_clip_share``. Both empty when no audio file is shared."""
    test_files = {c.audio_path for c in table.clips if c.split == QUERY_SPLIT}
    drawn = [table.clips[int(i)].audio_path for episode in episodes for i in episode.support]
    shares = {
        SUPPORT_SPLIT: LeakShare(
            SUPPORT_SPLIT,
            len(drawn),
            sum(f in test_files for f in drawn),
            len(set(drawn)),
            len(set(drawn) & test_files),
        )
    }
    if RELIABILITY_SPLIT in (val := leak_shares(table, (RELIABILITY_SPLIT,))):
        shares[RELIABILITY_SPLIT] = val[RELIABILITY_SPLIT]
    leaking = {split: share for split, share in shares.items() if share.leaking_rows}
    if not leaking:
        return {}, []
    fields: dict[str, Any] = {"leaks_test_clips": True}
    fields.update(
        {
            f"{'support' if split == SUPPORT_SPLIT else split}_test_clip_share": share.row_share
            for split, share in shares.items()
        }
    )
    notes = [
        f"the same audio file as a test clip: {share.note()}; these numbers are not a clean few-shot measurement"
        for share in leaking.values()
    ]
    return fields, notes
